import { couldNotReachPostgres, postgresAddressOf } from '../db/connection-lost.js';
import type { FleetContext } from './context.js';
import { within } from './within.js';

/** How often a process with jobs waiting out an outage asks whether PostgreSQL is back. */
export const OUTAGE_CHECK_MS = 1_000;

/** How long a job run early is remembered (see resumeAfterOutage). */
const PROMOTED_MEMORY_MS = 3_600_000;

export interface OutageResume {
  /** A job attempt failed and will be retried (see BindOptions.onRetrying). */
  retrying(queue: string, jobId: string, err: unknown): void;
  /** Whether `err` says PostgreSQL (this context's DATABASE_URL) could not be reached (`couldNotReachPostgres`). */
  isOutage(err: unknown): boolean;
  stop(): void;
}

const perContext = new WeakMap<FleetContext, OutageResume>();

/**
 * Runs jobs that failed because PostgreSQL could not be reached as soon as it answers again,
 * instead of at the end of their retry delay: that delay grows while an outage lasts (up to 5 min
 * 20 s for imports and emails), so work resumed minutes after PostgreSQL was back. While such a
 * job waits, the process asks PostgreSQL every OUTAGE_CHECK_MS on the readiness probe's own
 * connection (`select 1`); once it answers, each of these jobs still delayed is promoted (BullMQ
 * `promote`: it runs now, with the attempts it has left; nothing else about it changes). A job
 * still being moved to its delay is looked at again on the next check. A job run early once is
 * run early again only after a check PostgreSQL did not answer: one whose failures look like an
 * outage while PostgreSQL answers (a session ended by an administrator) waits out its delay
 * instead of running every second. One per process context.
 */
export function resumeAfterOutage(ctx: FleetContext, opts: { checkMs?: number } = {}): OutageResume {
  const existing = perContext.get(ctx);
  if (existing) return existing;
  const checkMs = opts.checkMs ?? OUTAGE_CHECK_MS;
  const waiting = new Map<string, { queue: string; jobId: string }>();
  /** Jobs run early, by key, with when; forgotten after PROMOTED_MEMORY_MS. */
  const promotedAt = new Map<string, number>();
  /** When a check last found PostgreSQL away. */
  let lastDownAt = 0;
  const postgres = postgresAddressOf(ctx.config.db.url);
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;

  const schedule = () => {
    if (stopped || timer || waiting.size === 0) return;
    timer = setTimeout(() => void check(), checkMs);
    timer.unref();
  };

  const check = async () => {
    try {
      if (stopped || waiting.size === 0) return;
      try {
        await within(ctx.probeSql()`select 1`.execute(), Math.max(checkMs, 2_000));
      } catch {
        lastDownAt = Date.now();
        return; // still away
      }
      let promoted = 0;
      const now = Date.now();
      for (const [key, at] of promotedAt) if (now - at > PROMOTED_MEMORY_MS) promotedAt.delete(key);
      for (const [key, w] of [...waiting]) {
        const before = promotedAt.get(key);
        if (before !== undefined && before >= lastDownAt) {
          waiting.delete(key); // run early before, and PostgreSQL not seen away since: it waits out its delay
          continue;
        }
        try {
          const job = await ctx.queues.queue(w.queue).getJob(w.jobId);
          const state = job ? await job.getState() : 'unknown';
          if (state === 'active') continue; // its failure is still being recorded: next check
          waiting.delete(key);
          if (state === 'delayed') {
            await job!.promote();
            promotedAt.set(key, now);
            promoted++;
          }
        } catch (err) {
          // Redis away, or the job moved on meanwhile (BullMQ: not delayed any more): tried again
          // next check while it is still there.
          ctx.log.debug({ err, queue: w.queue, jobId: w.jobId }, 'could not run a job waiting out the outage now');
        }
      }
      if (promoted) ctx.log.info({ promoted }, 'postgres answers again: jobs that waited out a retry delay because of it run now');
    } finally {
      timer = null;
      schedule();
    }
  };

  const resume: OutageResume = {
    retrying(queue, jobId, err) {
      // Not a job whose own query lost its connection: it may be what brought the server down.
      if (stopped || !resume.isOutage(err)) return;
      waiting.set(`${queue}\u0000${jobId}`, { queue, jobId });
      schedule();
    },
    isOutage: (err) => couldNotReachPostgres(err, postgres),
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      waiting.clear();
      promotedAt.clear();
      perContext.delete(ctx);
    },
  };
  perContext.set(ctx, resume);
  return resume;
}
