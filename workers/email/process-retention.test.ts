import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../libs/log/index.js';
import { fixedClock } from '../../libs/runtime/index.js';
import { sweepEmailContents, type ContentRetentionStore } from './process-retention.js';

const NOW = '2026-12-01T02:30:00Z';

/** Deliveries in memory: `old` past retention (the failed ones among them in `failedIds`). */
function fakeStore(old: string[], failedIds: string[] = []) {
  const left = new Set(old);
  const calls: Array<{ before: Date; limit: number }> = [];
  const store: ContentRetentionStore = {
    async countExpired(_before, requeueable) {
      const waiting = [...left].filter((id) => failedIds.includes(id) && requeueable.has(id)).length;
      return { due: left.size - waiting, requeueable: waiting };
    },
    async removeBatch(q) {
      calls.push({ before: q.before, limit: q.limit });
      const take = [...left].filter((id) => !(failedIds.includes(id) && q.requeueable.has(id))).slice(0, q.limit);
      for (const id of take) left.delete(id);
      return take.length;
    },
  };
  return { store, calls, left };
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => `d${i}`);

describe('sweepEmailContents', () => {
  it('takes batches until one comes back short, counting from EMAIL_RETENTION_DAYS before now', async () => {
    const f = fakeStore(ids(10));
    const removed: number[] = [];
    const r = await sweepEmailContents({ store: f.store, deadLettered: async () => new Set(), days: 30, clock: fixedClock(NOW), log: silentLogger(), batchSize: 5, onRemoved: (n) => removed.push(n) });
    expect(r).toEqual({ retentionDays: 30, removed: 10, keptForDeadLetters: 0 });
    // 5 + 5, then an empty batch says nothing is left
    expect(f.calls.map((c) => c.limit)).toEqual([5, 5, 5]);
    expect(removed).toEqual([5, 5]);
    expect(f.calls[0]!.before.toISOString()).toBe('2026-11-01T02:30:00.000Z');
  });

  it('leaves failed deliveries whose dead letter waits, and counts them', async () => {
    const f = fakeStore(ids(4), ['d1', 'd2']);
    const r = await sweepEmailContents({ store: f.store, deadLettered: async () => new Set(['d1']), days: 30, clock: fixedClock(NOW), log: silentLogger() });
    expect(r).toEqual({ retentionDays: 30, removed: 3, keptForDeadLetters: 1 });
    expect([...f.left]).toEqual(['d1']);
  });

  it('a dry run only counts; 0 days keeps everything without asking the store', async () => {
    const f = fakeStore(ids(3), ['d0']);
    expect(await sweepEmailContents({ store: f.store, deadLettered: async () => new Set(['d0']), days: 30, clock: fixedClock(NOW), log: silentLogger() }, { dryRun: true })).toEqual({
      retentionDays: 30,
      due: 2,
      removed: 0,
      keptForDeadLetters: 1,
    });
    expect(f.calls).toEqual([]);
    const never = async () => {
      throw new Error('not asked');
    };
    const r = await sweepEmailContents({ store: { countExpired: never, removeBatch: never }, deadLettered: never, days: 0, clock: fixedClock(NOW), log: silentLogger() });
    expect(r).toEqual({ retentionDays: 0, removed: 0, keptForDeadLetters: 0 });
  });
});
