import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'drizzle-orm';
import { loadConfig } from '../../libs/config/index.js';
import { patienten, platzsuche } from '../../libs/db/schema/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { fixedClock, openContext, workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { runWeeklyFanout } from './run-fanout.js';
import { weeklyHandlers } from './worker.js';

/**
 * Crashes and repeats on the way from fan-out to a recorded delivery (real PostgreSQL and
 * Redis, real BullMQ workers with retries): each eligible patient gets exactly one delivery
 * row and one `email-send` job, whatever fails in between.
 */
const WEEK = '2026-W48';
let db: TestDatabase;
let ctx: FleetContext;
let cleanupRedis: () => Promise<void>;
let running: Component[] = [];
const clock = fixedClock('2026-11-23T08:00:05Z');

async function until(fn: () => Promise<boolean>, what: string, timeoutMs = 30_000) {
  const start = Date.now();
  while (!(await fn())) {
    if (Date.now() - start > timeoutMs) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
async function patients(n: number): Promise<number[]> {
  const rows = await ctx.database.db
    .insert(patienten)
    .values(Array.from({ length: n }, (_, i) => ({ anrede: 'Herr', geschlecht: 'männlich', vorname: 'V', nachname: `N${i}`, email: `w${i}@example.org`, zahlungsreferenz: `W${Date.now()}-${i}`, status: 'auf_der_Suche' as const })))
    .returning({ id: patienten.id });
  await ctx.database.db.insert(platzsuche).values(rows.map((r) => ({ patientId: r.id, status: 'aktiv' as const })));
  return rows.map((r) => r.id);
}
async function deliveriesPerPatient(): Promise<Map<number, number>> {
  const rows = await ctx.database.db.execute<{ patient_id: number; n: number }>(sql`select patient_id, count(*)::int as n from fleet.deliveries group by patient_id`);
  return new Map(rows.map((r) => [r.patient_id, r.n]));
}
async function jobIds(queue: string): Promise<string[]> {
  return (await ctx.queues.queue(queue).getJobs(['waiting', 'active', 'delayed', 'completed', 'prioritized'])).map((j) => j.id!);
}
async function idle(queue: string) {
  const c = await ctx.queues.queue(queue).getJobCounts('waiting', 'active', 'delayed', 'prioritized');
  return Object.values(c).every((v) => v === 0);
}
/** Makes `enqueue` of one job name fail `times` times (a crash right after the database commit). */
function failEnqueue(name: string, shouldFail: () => boolean) {
  const original = ctx.queues.enqueue.bind(ctx.queues);
  ctx.queues.enqueue = (async (n: string, payload: unknown, opts?: unknown) => {
    if (n === name && shouldFail()) throw new Error('simulated crash before the enqueue');
    return (original as (a: string, b: unknown, c?: unknown) => Promise<{ jobId: string; queue: string }>)(n, payload, opts);
  }) as typeof ctx.queues.enqueue;
  return () => {
    ctx.queues.enqueue = original;
  };
}

beforeAll(async () => {
  db = await createTestDatabase();
  const { prefix, cleanup } = testQueuePrefix();
  cleanupRedis = cleanup;
  const config = loadConfig({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix, RETRY_BACKOFF_SCALE: '0.0002', WEEKLY_PAGE_SIZE: '25', UNSUBSCRIBE_SECRET: 'x'.repeat(40) });
  ctx = openContext(config, silentLogger(), { clock });
});
afterEach(async () => {
  for (const c of running.reverse()) await c.stop(5_000);
  running = [];
  for (const q of ['weekly-fanout', 'weekly-status', 'email', 'weekly-status-dlq', 'weekly-fanout-dlq']) await ctx.queues.queue(q).obliterate({ force: true });
  await ctx.database.db.execute(sql`truncate fleet.deliveries, patient_service.patienten, matching_service.platzsuche`);
});
afterAll(async () => {
  await ctx?.close();
  await cleanupRedis?.();
  await db?.drop();
});

describe('weekly status: exactly one delivery per patient and week', () => {
  it('a crash between recording and enqueuing the send is retried without a second delivery', async () => {
    const ids = await patients(60);
    let calls = 0;
    const restore = failEnqueue('email-send', () => ++calls % 3 === 1); // every third send enqueue "crashes"
    try {
      const c = workerComponent(ctx, 'weekly', weeklyHandlers(ctx));
      await c.start();
      running.push(c);
      const r = await runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false });
      expect(r.queued).toBe(60);
      await until(async () => (await idle('weekly-status')) && (await jobIds('email')).length === 60, 'all sends enqueued');
    } finally {
      restore();
    }
    expect(calls).toBeGreaterThan(60); // some attempts failed and were retried
    const per = await deliveriesPerPatient();
    expect([...per.keys()].sort((a, b) => a - b)).toEqual(ids);
    expect([...per.values()].every((n) => n === 1)).toBe(true);
    expect(new Set(await jobIds('email')).size).toBe(60);
    expect(await jobIds('weekly-status-dlq')).toEqual([]);
  });

  it('a fan-out that dies after some pages and runs again queues every patient once', async () => {
    await patients(120); // 5 pages of 25
    const q = ctx.queues.queue('weekly-status');
    const addBulk = q.addBulk.bind(q);
    let pages = 0;
    q.addBulk = (async (jobs: Parameters<typeof addBulk>[0]) => {
      if (++pages === 3) throw new Error('simulated crash in the third page');
      return addBulk(jobs);
    }) as typeof q.addBulk;
    await expect(runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false })).rejects.toThrow(/simulated crash/);
    q.addBulk = addBulk;
    expect((await jobIds('weekly-status')).length).toBeGreaterThanOrEqual(50);
    const again = await runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false });
    expect(again.eligible).toBe(120); // nothing recorded yet: every patient still eligible
    expect(new Set(await jobIds('weekly-status')).size).toBe(120); // ... but each job once (keyed by patient and week)
    const c = workerComponent(ctx, 'weekly', weeklyHandlers(ctx));
    await c.start();
    running.push(c);
    await until(async () => (await idle('weekly-status')) && (await jobIds('email')).length === 120, 'all recorded');
    expect([...(await deliveriesPerPatient()).values()].every((n) => n === 1)).toBe(true);
    expect((await deliveriesPerPatient()).size).toBe(120);
  });

  it('the same patient processed concurrently (two workers, a retry) records one delivery', async () => {
    const [id] = await patients(1);
    const h = weeklyHandlers(ctx)['weekly-status']!;
    const helpers = { log: silentLogger(), jobId: 'x', attempt: 1, maxAttempts: 1, isFinalAttempt: false, updateProgress: async () => {} };
    const results = await Promise.all(Array.from({ length: 6 }, () => h({ patientId: id!, isoWeek: WEEK }, helpers)));
    const outcomes = results.map((r) => (r as { outcome: string }).outcome).sort();
    expect(outcomes).toEqual(['already_recorded', 'already_recorded', 'already_recorded', 'already_recorded', 'already_recorded', 'queued']);
    expect((await deliveriesPerPatient()).get(id!)).toBe(1);
    // After the week the job is stale and does nothing.
    clock.set('2026-11-30T00:00:00Z');
    try {
      expect(await h({ patientId: id!, isoWeek: WEEK }, helpers)).toEqual({ outcome: 'skipped', reason: 'week_over' });
    } finally {
      clock.set('2026-11-23T08:00:05Z');
    }
  });
});
