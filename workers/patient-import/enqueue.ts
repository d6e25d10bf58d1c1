import { PermanentError } from '../../libs/errors/index.js';
import { catalog, describeZodError, jobIdFor, jobOptionsFor } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';

/**
 * Enqueues one `patient-import` job per ledger id (keyed by the id, so a row already queued
 * is not queued twice). New rows go in bulk (one Redis round trip per 500 jobs); for open
 * rows, a job that finished while its row is still open is run again.
 */
export async function enqueueImports(ctx: FleetContext, ids: number[], kind: 'new' | 'open'): Promise<void> {
  const queue = ctx.queues.queue('patient-import');
  if (kind === 'new') {
    const def = catalog['patient-import'];
    const opts = jobOptionsFor('patient-import', ctx.queues.backoffScale);
    for (let i = 0; i < ids.length; i += 500) {
      const jobs = ids.slice(i, i + 500).map((ledgerId) => {
        const parsed = def.schema.safeParse({ ledgerId });
        if (!parsed.success) throw new PermanentError('invalid_payload', `job patient-import: ${describeZodError(parsed.error)}`);
        return { name: 'patient-import', data: parsed.data, opts: { ...opts, jobId: jobIdFor('patient-import', parsed.data)! } };
      });
      await queue.addBulk(jobs);
    }
    return;
  }
  for (let i = 0; i < ids.length; i += 100) {
    await Promise.all(
      ids.slice(i, i + 100).map(async (ledgerId) => {
        const { jobId } = await ctx.queues.enqueue('patient-import', { ledgerId });
        const job = await queue.getJob(jobId);
        // A completed job for an open row (it finished just as an operator reopened the row): run it again.
        if (job && (await job.getState()) === 'completed') {
          await job.remove();
          await ctx.queues.enqueue('patient-import', { ledgerId });
        }
      }),
    );
  }
}
