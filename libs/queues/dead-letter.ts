import type { Job } from 'bullmq';
import { z } from 'zod';
import { catalog, deadLetterQueueName, jobNames, queueNames, type JobName } from './catalog.js';
import { withLock } from './job-scheduler.js';
import { jobOptionsFor, type QueueSet } from './queue-set.js';

/** What a dead-letter entry records about the job that will not be retried. */
export const deadLetterSchema = z.object({
  originalQueue: z.string(),
  originalJobId: z.string(),
  name: z.string(),
  data: z.unknown(),
  reason: z.string(),
  code: z.string().nullable(),
  attemptsMade: z.number(),
  enqueuedAt: z.string().nullable(),
  failedAt: z.string(),
});
export type DeadLetter = z.infer<typeof deadLetterSchema>;

export interface DeadLetterView extends DeadLetter {
  id: string;
  deadLetterQueue: string;
}

export function deadLetterFromJob(job: Job, reason: string, code: string | null, attemptsMade: number): DeadLetter {
  return {
    originalQueue: job.queueName,
    originalJobId: job.id ?? 'unknown',
    name: job.name,
    data: job.data,
    reason,
    code,
    attemptsMade,
    enqueuedAt: job.timestamp ? new Date(job.timestamp).toISOString() : null,
    failedAt: new Date().toISOString(),
  };
}

/**
 * Adds the entry to the queue's dead-letter queue; idempotent per original job id. Under the
 * entry's lock: a requeue of the same entry puts the job back before it removes the old entry, and
 * a job that failed for good again in between (a worker takes it within milliseconds) would find
 * the old entry, add nothing, and be left without a dead letter once the requeue removed it.
 */
export function addDeadLetter(queues: QueueSet, entry: DeadLetter): Promise<string> {
  return withEntryLock(queues, entry.originalJobId.replaceAll(':', '.'), () => addDeadLetterUnlocked(queues, entry));
}

/** addDeadLetter for a caller that holds the entry's lock. */
async function addDeadLetterUnlocked(queues: QueueSet, entry: DeadLetter): Promise<string> {
  const dlq = queues.queue(deadLetterQueueName(entry.originalQueue));
  const job = await dlq.add(entry.name, entry, {
    jobId: entry.originalJobId.replaceAll(':', '.'),
    removeOnComplete: true,
    removeOnFail: true,
  });
  return job.id!;
}

function toView(job: Job, dlqName: string): DeadLetterView | null {
  const parsed = deadLetterSchema.safeParse(job.data);
  if (!parsed.success) return null;
  return { ...parsed.data, id: job.id!, deadLetterQueue: dlqName };
}

const DEAD_STATES = ['waiting', 'delayed', 'prioritized'] as const;
const PAGE = 1000;

/**
 * Dead letters, oldest first: every one (paged through), or with `limit` the oldest `limit`
 * of each queue. (A fixed page of 1000 used to be read newest first, so past 1000 the list,
 * requeue --all and the page's counts silently left the rest out.)
 */
export async function listDeadLetters(queues: QueueSet, opts: { queue?: string; limit?: number } = {}) {
  const names = opts.queue ? [opts.queue] : queueNames();
  const out: DeadLetterView[] = [];
  for (const name of names) {
    const dlqName = deadLetterQueueName(name);
    const dlq = queues.queue(dlqName);
    const want = opts.limit ?? Infinity;
    for (let start = 0; start < want; start += PAGE) {
      const end = Math.min(start + PAGE, want) - 1;
      const jobs = await dlq.getJobs([...DEAD_STATES], start, end, true);
      for (const job of jobs) {
        const view = job && toView(job, dlqName);
        if (view) out.push(view);
      }
      if (jobs.length < end - start + 1) break;
    }
  }
  return out.sort((a, b) => a.failedAt.localeCompare(b.failedAt));
}

/** How many dead letters wait in each queue's dead-letter queue (no entries read). */
export async function countDeadLetters(queues: QueueSet, queue?: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const name of queue ? [queue] : queueNames()) {
    const c = await queues.queue(deadLetterQueueName(name)).getJobCounts(...DEAD_STATES);
    out[name] = DEAD_STATES.reduce((sum, s) => sum + (c[s] ?? 0), 0);
  }
  return out;
}

export class DeadLetterNotFound extends Error {
  override name = 'DeadLetterNotFound';
}

export async function findDeadLetter(queues: QueueSet, id: string, queue?: string): Promise<{ job: Job; view: DeadLetterView }> {
  for (const name of queue ? [queue] : queueNames()) {
    const dlqName = deadLetterQueueName(name);
    const job = await queues.queue(dlqName).getJob(id);
    const view = job && toView(job, dlqName);
    if (job && view) return { job, view };
  }
  // Found under another queue than the one named (--queue email for a patient-import dead letter):
  // say where, instead of "no entry", which reads as handled already or never there.
  if (queue) {
    for (const other of queueNames().filter((n) => n !== queue)) {
      const job = await queues.queue(deadLetterQueueName(other)).getJob(id);
      if (job && toView(job, deadLetterQueueName(other))) {
        throw new DeadLetterNotFound(`no dead-letter entry with id ${id} in queue ${queue}: it is a dead letter of ${other}`);
      }
    }
  }
  throw new DeadLetterNotFound(`no dead-letter entry with id ${id}${queue ? ` in queue ${queue}` : ''}`);
}

function isJobName(name: string): name is JobName {
  return (jobNames as string[]).includes(name);
}

/**
 * Puts a dead-lettered job back on its original queue under its original job id (so the
 * idempotency key still holds), with a fresh set of attempts, and removes the entry.
 * `beforeRequeue` (the domain bookkeeping, e.g. the ledger row back to open) runs before the
 * job is back on the queue: an idle worker takes a job within milliseconds, and a job that
 * ran before its row was reopened would find it failed and finish without doing anything.
 */
export function requeueDeadLetter(
  queues: QueueSet,
  id: string,
  queue?: string,
  opts: { beforeRequeue?: (view: DeadLetterView) => Promise<void> } = {},
) {
  return withEntryLock(queues, id, () => requeueLocked(queues, id, queue, opts));
}

/**
 * One operator action per dead letter at a time: a second requeue or discard of the same entry
 * (two operators, a double click) waits for the first and then finds the entry gone, instead of
 * both reporting `requeued` (two audit rows, hooks twice, the new job possibly removed and run again).
 */
async function withEntryLock<T>(queues: QueueSet, id: string, fn: () => Promise<T>): Promise<T> {
  return withLock(await queues.redis(), `${queues.prefix}:dead-letter-lock:${id}`, 15_000, fn);
}

async function requeueLocked(queues: QueueSet, id: string, queue: string | undefined, opts: { beforeRequeue?: (view: DeadLetterView) => Promise<void> }) {
  const { job, view } = await findDeadLetter(queues, id, queue);
  if (!isJobName(view.name)) throw new Error(`dead-letter entry ${id} names unknown job ${view.name}`);
  const def = catalog[view.name];
  const data = def.schema.parse(view.data);
  const original = queues.queue(view.originalQueue);
  const existing = await original.getJob(view.originalJobId);
  if (existing) {
    const state = await existing.getState();
    if (state === 'failed' || state === 'completed') await existing.remove();
    else {
      await opts.beforeRequeue?.(view);
      await job.remove();
      return { view, state: 'already-queued' as const };
    }
  }
  await opts.beforeRequeue?.(view);
  await original.add(view.name, data, { ...jobOptionsFor(view.name, queues.backoffScale), jobId: view.originalJobId });
  await job.remove();
  return { view, state: 'requeued' as const };
}

/**
 * Removes a dead-letter entry for good, and the original job when it is still in its queue's
 * failed list: handled, it no longer counts as failed on Bull Board (which would show it in red
 * for its 30 days of retention). The audit row keeps the reason and the attempts.
 * `beforeDiscard` (the domain bookkeeping, e.g. the ledger row to `discarded`) runs first, under
 * the entry's lock: nothing sees the entry gone while its record still waits for an operator.
 */
export function discardDeadLetter(queues: QueueSet, id: string, queue?: string, opts: { beforeDiscard?: (view: DeadLetterView) => Promise<void> } = {}) {
  return withEntryLock(queues, id, async () => {
    const { job, view } = await findDeadLetter(queues, id, queue);
    await opts.beforeDiscard?.(view);
    const original = await queues.queue(view.originalQueue).getJob(view.originalJobId);
    if (original && (await original.getState()) === 'failed') await original.remove();
    await job.remove();
    return { view };
  });
}

const LIVE_STATES = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children']);

/** A job state in which the job will still run (waiting, running, or waiting for its next attempt). */
export function isLiveJobState(state: string): boolean {
  return LIVE_STATES.has(state);
}

/**
 * Adds `entry` back as a dead letter (Redis lost it, the record behind it still waits for an
 * operator) when there is none and its job is not waiting or running, and `stillWanted()` says
 * so. Asked under the entry's lock, so an operator's requeue or discard of the entry is either
 * over (the record no longer wants one) or not begun. Returns whether it was added.
 */
export function restoreDeadLetter(queues: QueueSet, entry: DeadLetter, stillWanted: () => Promise<boolean>): Promise<boolean> {
  const id = entry.originalJobId.replaceAll(':', '.');
  return withEntryLock(queues, id, async () => {
    if (await queues.queue(deadLetterQueueName(entry.originalQueue)).getJob(id)) return false;
    const job = await queues.queue(entry.originalQueue).getJob(entry.originalJobId);
    if (job && isLiveJobState(await job.getState())) return false;
    if (!(await stillWanted())) return false;
    await addDeadLetterUnlocked(queues, entry);
    return true;
  });
}

/**
 * Gives the records waiting for an operator their dead letters back where `queue` has none for
 * them (Redis restarted without its data): one listing of the dead letters, then
 * `restoreDeadLetter` for each record missing from it. A dead letter stands for the record whose
 * id `recordIdOf` reads from its payload (by the record, not the job id: ids of an earlier
 * release's jobs may differ). Returns how many were added.
 */
export async function restoreMissingDeadLetters(
  queues: QueueSet,
  queue: string,
  records: Array<{ entry: DeadLetter; stillWanted: () => Promise<boolean> }>,
  recordIdOf: (data: unknown) => unknown,
): Promise<number> {
  if (!records.length) return 0;
  const present = new Set<unknown>((await listDeadLetters(queues, { queue })).map((d) => recordIdOf(d.data)).filter((id) => id !== undefined));
  let restored = 0;
  for (const r of records) {
    if (present.has(recordIdOf(r.entry.data))) continue;
    if (await restoreDeadLetter(queues, r.entry, r.stillWanted)) restored++;
  }
  return restored;
}
