import type { Logger } from '../../libs/log/index.js';
import type { Clock } from '../../libs/runtime/clock.js';

export interface SweepDeps {
  /** Pending deliveries created before the cut-off, oldest first. */
  stalePending(before: Date, limit: number): Promise<string[]>;
  /** Batches still `sending` with no row written since the cut-off. */
  staleClaims(before: Date, limit: number): Promise<Array<{ batchId: string | null; leaderId: string | null; rows: number }>>;
  /** Makes sure a job will run for the delivery; returns false when one is already waiting or running. */
  ensureSendJob(deliveryId: string): Promise<boolean>;
  /** Enqueues a job for the leader of a stale batch, which then resends it under its key. */
  recoverBatch(leaderId: string, bucket: number): Promise<boolean>;
  /**
   * True while the email queue has a long backlog: every pending delivery then most likely has
   * a waiting job, and checking jobs one by one on a long wait list is costly (LPOS). The
   * pending pass waits until the backlog is short; stale batches are handled regardless.
   */
  queueBusy?(): Promise<boolean>;
  /**
   * True when Redis holds no jobs this sweep has seen, i.e. it came back without its data (or
   * this is the first sweep against it): every batch still `sending` then lost its job with it,
   * and is handed over at once instead of after `staleMs`. Once per loss (a marker key in Redis).
   */
  redisLostData?(): Promise<boolean>;
  clock: Clock;
  log: Logger;
  pendingAfterMs: number;
  staleMs: number;
  limit?: number;
}

/**
 * One pass of the email sweep, so nothing is lost between a commit and an enqueue:
 * pending deliveries older than a minute get an `email-send` job when none is waiting for
 * them, and batches stuck in `sending` (their job died or gave up) are handed to a new job
 * for their leader, which resends exactly the same rows under the same idempotency key.
 */
export async function sweepDeliveries(deps: SweepDeps): Promise<{ pending: number; enqueued: number; staleBatches: number; recovered: number }> {
  const now = deps.clock.now().getTime();
  const limit = deps.limit ?? 1000;
  const busy = (await deps.queueBusy?.()) ?? false;
  const pending = busy ? [] : await deps.stalePending(new Date(now - deps.pendingAfterMs), limit);
  let enqueued = 0;
  for (const id of pending) if (await deps.ensureSendJob(id)) enqueued++;
  // Redis came back without its data: the jobs of the batches being sent are gone (a job that
  // was running goes on in its process; a new one for its leader waits for its attempt lease or
  // finds the batch sent). Every batch still `sending` is handed over now, under its key, not
  // an hour later; the provider replays a request it had accepted.
  const lost = (await deps.redisLostData?.()) ?? false;
  const stale = await deps.staleClaims(new Date(lost ? now : now - deps.staleMs), lost ? 100_000 : 100);
  let recovered = 0;
  for (const b of stale) {
    if (b.leaderId && (await deps.recoverBatch(b.leaderId, lost ? now : Math.floor(now / deps.staleMs)))) recovered++;
  }
  // Said only when a batch had lost its job: the first sweep against a fresh Redis (a first start)
  // finds the marker missing too, and its batches' jobs alive (recoverBatch leaves those alone).
  if (lost && recovered) deps.log.warn({ batches: stale.length, recovered }, 'email sweep: Redis lost its data: batches being sent handed to new jobs');
  if (enqueued || stale.length) {
    deps.log.info({ pending: pending.length, enqueued, staleBatches: stale.length, recovered }, 'email sweep: enqueued forgotten deliveries');
  }
  return { pending: pending.length, enqueued, staleBatches: stale.length, recovered };
}
