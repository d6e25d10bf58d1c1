import path from 'node:path';
import * as repo from '../../libs/db/repositories/therapist-import.js';
import { PermanentError } from '../../libs/errors/index.js';
import { catalog, describeZodError, jobOptionsFor, therapistImportJobId } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import type { FileHint } from './process-therapist-file.js';

/**
 * The job's payload for a tracked file: its id, and what lets the worker read it before
 * claiming it. Not for a file outside the drop folder (a CLI import): its absolute path may
 * name a person (a home folder) and stays out of the queue.
 */
function payloadOf(file: repo.TherapistImportFileRow): { fileId: number; file?: FileHint } {
  if (!file.contentHash || path.isAbsolute(file.path)) return { fileId: file.id };
  return { fileId: file.id, file: { path: file.path, contentHash: file.contentHash, postcode: file.postcode } };
}

/**
 * Enqueues the import of a tracked file, keyed by its content hash. Urgent files get the
 * higher priority. A job that already finished while the row is still open (a crash between
 * the two) is retried. A job waiting already takes the row's priority: a waiting file moved to
 * urgent/ keeps its job id, and adding that id again does not change the job.
 */
export async function enqueueTherapistFile(ctx: FleetContext, file: repo.TherapistImportFileRow, opts: { fresh?: boolean } = {}): Promise<void> {
  const jobId = therapistImportJobId(file.contentHash ?? 'none', file.id);
  const priority = file.urgent ? 1 : 10;
  await ctx.queues.enqueue('therapist-import', payloadOf(file), { jobId, priority });
  if (opts.fresh) return; // a row registered just now: no earlier job can have finished
  const job = await ctx.queues.queue('therapist-import').getJob(jobId);
  if (!job) return;
  if (await job.isCompleted()) {
    const row = await repo.getFile(ctx.database.db, file.id);
    if (row && (row.status === 'queued' || row.status === 'importing')) await job.retry('completed');
  } else if (job.priority !== priority) {
    await job.changePriority({ priority });
  }
}

/**
 * Enqueues files registered just now (no earlier job can have finished) in bulk: one Redis
 * round trip per 500 jobs, same job ids, priorities, options and payload validation as
 * `enqueueTherapistFile`.
 */
export async function enqueueFreshTherapistFiles(ctx: FleetContext, files: repo.TherapistImportFileRow[]): Promise<void> {
  const def = catalog['therapist-import'];
  const opts = jobOptionsFor('therapist-import', ctx.queues.backoffScale);
  const queue = ctx.queues.queue(def.queue);
  for (let i = 0; i < files.length; i += 500) {
    const jobs = files.slice(i, i + 500).map((file) => {
      const parsed = def.schema.safeParse(payloadOf(file));
      if (!parsed.success) throw new PermanentError('invalid_payload', `job therapist-import: ${describeZodError(parsed.error)}`);
      return {
        name: 'therapist-import',
        data: parsed.data,
        opts: { ...opts, jobId: therapistImportJobId(file.contentHash ?? 'none', file.id), priority: file.urgent ? 1 : 10 },
      };
    });
    await queue.addBulk(jobs);
  }
}
