import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config/index.js';
import { silentLogger } from '../log/index.js';
import { jobOptionsFor } from '../queues/index.js';
import { couldNotReachPostgres } from '../db/connection-lost.js';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { testQueuePrefix } from '../testing/redis.js';
import { TEST_REDIS_URL } from '../testing/services.js';
import { tcpProxyFor } from '../testing/tcp-proxy.js';
import { until } from '../testing/until.js';
import { openContext, type FleetContext } from './context.js';
import { workerComponent } from './worker-component.js';

/**
 * A job that failed because PostgreSQL could not be reached runs again as soon as it answers,
 * not at the end of its retry delay (which grows to minutes in a long outage): through a TCP
 * proxy standing in for PostgreSQL, the real pool, BullMQ and Redis.
 */

/** Longer than the test waits: a job that ran after it would have waited out its delay. */
const RETRY_DELAY_MS = 60_000;

let db: TestDatabase;
let proxy: ReturnType<typeof tcpProxyFor>;
let q: ReturnType<typeof testQueuePrefix>;
let ctx: FleetContext;

beforeAll(async () => {
  db = await createTestDatabase();
  proxy = tcpProxyFor(db.url);
  await proxy.open();
  q = testQueuePrefix();
  ctx = openContext(loadConfig({ DATABASE_URL: proxy.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' }), silentLogger());
});

afterAll(async () => {
  await ctx?.close();
  await proxy?.close();
  await q?.cleanup();
  await db?.drop();
});

describe('jobs that could not reach PostgreSQL', () => {
  it('run again within seconds of PostgreSQL answering, not at the end of their retry delay; a job that failed otherwise waits it out', async () => {
    const runs: Record<number, string[]> = {};
    const worker = workerComponent(ctx, 'outage-test', {
      'weekly-status': async (p) => {
        (runs[p.patientId] ??= []).push(new Date().toISOString());
        // Patient 2 fails on its own (a statement, not the database being away).
        if (p.patientId === 2 && runs[2]!.length === 1) throw new Error('a statement that failed');
        await ctx.database.sql`select 1`;
        return { ok: true };
      },
    });
    await worker.start();
    try {
      await proxy.close(); // PostgreSQL away: connections refused
      const queue = ctx.queues.queue('weekly-status');
      const add = (patientId: number) =>
        queue.add('weekly-status', { patientId, isoWeek: '2026-W49' }, { ...jobOptionsFor('weekly-status', 1), backoff: { type: 'fixed', delay: RETRY_DELAY_MS }, jobId: `outage-test.${patientId}` });
      await add(1);
      await add(2);
      await until('both jobs failed once and wait out their delay', async () => {
        const states = await Promise.all([1, 2].map(async (id) => (await queue.getJob(`outage-test.${id}`))?.getState()));
        return states.every((s) => s === 'delayed');
      });
      const failed = (await queue.getJob('outage-test.1'))!.failedReason;
      expect(failed).toMatch(/ECONNREFUSED|CONNECTION/);

      await proxy.open();
      const back = Date.now();
      await until('the job that could not reach PostgreSQL completed', async () => (await queue.getJob('outage-test.1'))?.isCompleted(), 20_000);
      // The next check (every second) finds PostgreSQL answering; the pool then connects (at most ~4 s).
      expect(Date.now() - back).toBeLessThan(10_000);
      expect(runs[1]).toHaveLength(2);
      // The one that failed for another reason still waits out its delay.
      expect(await (await queue.getJob('outage-test.2'))!.getState()).toBe('delayed');
      expect(runs[2]).toHaveLength(1);
    } finally {
      await worker.stop(5_000);
    }
  }, 60_000);
});

describe('couldNotReachPostgres', () => {
  it('reads the code of the error or of what it wraps (drizzle carries postgres.js\'s as cause)', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    expect(couldNotReachPostgres(refused)).toBe(true);
    expect(couldNotReachPostgres(new Error('Failed query: select 1', { cause: refused }))).toBe(true);
    expect(couldNotReachPostgres(Object.assign(new Error('starting up'), { code: '57P03' }))).toBe(true);
    // Closed under the job's own query: it may be what brought the server down; it waits.
    expect(couldNotReachPostgres(Object.assign(new Error('closed'), { code: 'CONNECTION_CLOSED' }))).toBe(false);
    expect(couldNotReachPostgres(Object.assign(new Error('duplicate key'), { code: '23505' }))).toBe(false);
    expect(couldNotReachPostgres(new Error('no code'))).toBe(false);
  });
});
