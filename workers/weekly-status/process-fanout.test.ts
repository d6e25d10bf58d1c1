import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../libs/log/index.js';
import { fixedClock } from '../../libs/runtime/clock.js';
import { isoWeekRange } from '../../libs/weekly/iso-week.js';
import { processWeeklyFanout, type FanoutDeps } from './process-fanout.js';

function fakes(eligible: number[], now: string) {
  const enqueued: number[][] = [];
  const pageCalls: number[] = [];
  const deps: FanoutDeps = {
    clock: fixedClock(now),
    log: silentLogger(),
    pageSize: 3,
    window: (isoWeek) => {
      const { start, end } = isoWeekRange(isoWeek, 'Europe/Berlin');
      return { isoWeek, weekStart: start, end };
    },
    counts: async () => ({ candidates: eligible.length + 2, eligible: eligible.length, skippedOptedOut: 1, skippedNoEmail: 1, skippedInvalidEmail: 0, skippedAlreadySent: 0, skippedAlreadyRecorded: { sent: 0, pending: 0, failed: 0, dropped: 0 } }),
    page: async (_w, afterId, limit) => {
      pageCalls.push(afterId);
      return eligible.filter((id) => id > afterId).slice(0, limit);
    },
    enqueue: async (ids) => {
      enqueued.push(ids);
    },
  };
  return { deps, enqueued, pageCalls };
}

describe('processWeeklyFanout', () => {
  it('walks the eligible ids in keyset pages and enqueues each once', async () => {
    const f = fakes([2, 3, 5, 8, 13, 21, 34], '2026-11-23T08:00:05Z');
    const r = await processWeeklyFanout({ isoWeek: '2026-W48' }, f.deps);
    expect(f.enqueued).toEqual([[2, 3, 5], [8, 13, 21], [34]]);
    expect(f.pageCalls).toEqual([0, 5, 21]);
    expect(r).toMatchObject({ isoWeek: '2026-W48', eligible: 7, queued: 7, dryRun: false, skippedOptedOut: 1, skippedNoEmail: 1 });
  });
  it('a full last page ends with one empty read', async () => {
    const f = fakes([1, 2, 3], '2026-11-23T08:00:05Z');
    expect((await processWeeklyFanout({ isoWeek: '2026-W48' }, f.deps)).queued).toBe(3);
    expect(f.pageCalls).toEqual([0, 3]);
  });
  it('counts only on a dry run, and refuses past and future weeks', async () => {
    const f = fakes([1, 2], '2026-11-23T08:00:05Z');
    expect(await processWeeklyFanout({ isoWeek: '2026-W48', dryRun: true }, f.deps)).toMatchObject({ queued: 0, eligible: 2, dryRun: true });
    expect(await processWeeklyFanout({ isoWeek: '2026-W47' }, f.deps)).toMatchObject({ queued: 0, refused: 'past_week' });
    expect(await processWeeklyFanout({ isoWeek: '2026-W49' }, f.deps)).toMatchObject({ queued: 0, refused: 'future_week' });
    // a dry run only counts: any week
    const counted = await processWeeklyFanout({ isoWeek: '2026-W47', dryRun: true }, f.deps);
    expect(counted).toMatchObject({ queued: 0, dryRun: true });
    expect(counted.refused).toBeUndefined();
    expect(f.enqueued).toEqual([]);
  });
  it('a failing enqueue fails the run (the job retries; keyed jobs are not added twice)', async () => {
    const f = fakes([1, 2, 3, 4, 5, 6, 7], '2026-11-23T08:00:05Z');
    f.deps.enqueue = async (ids) => {
      if (ids[0] === 4) throw new Error('redis down');
    };
    await expect(processWeeklyFanout({ isoWeek: '2026-W48' }, f.deps)).rejects.toThrow('redis down');
  });
});
