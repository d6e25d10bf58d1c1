import type { Logger } from '../../libs/log/index.js';
import type { FanoutCounts, WeekWindow } from '../../libs/db/repositories/weekly-status.js';
import type { Clock } from '../../libs/runtime/clock.js';

export interface FanoutDeps {
  clock: Clock;
  log: Logger;
  pageSize: number;
  window(isoWeek: string): WeekWindow & { end: Date };
  counts(w: WeekWindow): Promise<FanoutCounts>;
  /** One page of eligible patient ids after `afterId`, ascending. */
  page(w: WeekWindow, afterId: number, limit: number): Promise<number[]>;
  /** Enqueues one `weekly-status` job per patient, keyed by patient and week. */
  enqueue(patientIds: number[], isoWeek: string): Promise<void>;
  progress?(p: { queued: number }): Promise<void>;
}

export type FanoutResult = FanoutCounts & {
  isoWeek: string;
  queued: number;
  dryRun: boolean;
  /** Set when nothing was done because the week is not the current one. */
  refused?: 'past_week' | 'future_week';
};

/**
 * The weekly fan-out: selects eligible patients page by page (keyset pagination on the
 * patient id, so memory stays flat) and enqueues one job per patient keyed by patient and
 * ISO week. Running it twice enqueues nobody twice: recorded patients are no longer
 * eligible, and a job id still queued is not added again.
 */
export async function processWeeklyFanout(input: { isoWeek: string; dryRun?: boolean }, deps: FanoutDeps): Promise<FanoutResult> {
  const w = deps.window(input.isoWeek);
  const dryRun = input.dryRun ?? false;
  const counts = await deps.counts(w);
  const base = { ...counts, isoWeek: input.isoWeek, queued: 0, dryRun };
  // Counting queues nothing: any week may be counted.
  if (dryRun) return base;
  // The time after the count: a count held up (a lock, a slow or restarting database) past
  // Monday 00:00 must not queue the week that ended meanwhile.
  const now = deps.clock.now();
  if (now >= w.end || now < w.weekStart) {
    const refused = now >= w.end ? 'past_week' : 'future_week';
    deps.log.warn({ isoWeek: input.isoWeek, refused }, 'weekly fan-out only runs for the current week: nothing queued');
    return { ...base, refused };
  }
  let queued = 0;
  // The next page is read while the current one is enqueued (one page ahead, no more).
  let next = deps.page(w, 0, deps.pageSize);
  for (;;) {
    const ids = await next;
    if (ids.length === 0) break;
    // Pages read after the week ended are not queued: their jobs would only skip (week_over).
    if (deps.clock.now() >= w.end) {
      deps.log.warn({ isoWeek: input.isoWeek, queued }, 'weekly fan-out stopped: its week ended while it ran');
      return { ...base, queued, refused: 'past_week' };
    }
    next = ids.length < deps.pageSize ? Promise.resolve([]) : deps.page(w, ids[ids.length - 1]!, deps.pageSize);
    next.catch(() => {}); // a failure surfaces at the await above, not as an unhandled rejection
    await deps.enqueue(ids, input.isoWeek);
    queued += ids.length;
    await deps.progress?.({ queued });
  }
  deps.log.info({ isoWeek: input.isoWeek, ...counts, queued }, 'weekly fan-out done');
  return { ...base, queued };
}
