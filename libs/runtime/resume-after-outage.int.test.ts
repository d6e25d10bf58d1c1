import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config/index.js';
import { silentLogger } from '../log/index.js';
import type { Job } from 'bullmq';
import { QueryFailedError, withoutQueryData } from '../errors/index.js';
import { JOB_LOGS_KEPT, jobOptionsFor, outageDelayMs } from '../queues/index.js';
import { couldNotReachPostgres, postgresAddressOf } from '../db/connection-lost.js';
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
  ctx = proxiedContext();
});

/** A context on the proxy, the test's queue prefix and `env` besides. */
function proxiedContext(env: Record<string, string> = {}): FleetContext {
  return openContext(loadConfig({ DATABASE_URL: proxy.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent', ...env }), silentLogger());
}

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
      // The outage's attempt is not counted (OUTAGE_CARRY_HOURS); the other failure is.
      expect((await queue.getJob('outage-test.1'))!.attemptsMade).toBe(0);
      expect((await queue.getJob('outage-test.2'))!.attemptsMade).toBe(1);

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
      await (await ctx.queues.queue('weekly-status').getJob('outage-test.2'))?.remove();
    }
  }, 60_000);
});

describe('a job whose failures look like an outage while PostgreSQL answers', () => {
  it('is run early once, then waits out its delay (not run again every second)', async () => {
    const runs: string[] = [];
    // Refused on PostgreSQL's port, while PostgreSQL answers the checks (a session an administrator ended looks alike).
    const refused = () => Object.assign(new Error(`connect ECONNREFUSED 127.0.0.1:${proxy.port}`), { code: 'ECONNREFUSED', port: proxy.port });
    const worker = workerComponent(ctx, 'loop-test', {
      'weekly-status': async () => {
        runs.push(new Date().toISOString());
        throw refused();
      },
    });
    await worker.start();
    const queue = ctx.queues.queue('weekly-status');
    try {
      await queue.add('weekly-status', { patientId: 21, isoWeek: '2026-W49' }, { ...jobOptionsFor('weekly-status', 1), backoff: { type: 'fixed', delay: RETRY_DELAY_MS }, jobId: 'loop-test.21' });
      await until('the job was run early once', async () => runs.length >= 2, 10_000);
      // Five more checks: without the rule it ran at each (7 runs by now). One more run is allowed:
      // a check that timed out on a busy machine counts as PostgreSQL seen away.
      await new Promise((r) => setTimeout(r, 5_000));
      expect(runs.length).toBeLessThanOrEqual(3);
      const job = await until('the job waiting for its next attempt', async () => {
        // The state first: a job read while its attempt ran would say 0 attempts made whatever the attempt did.
        if ((await queue.getJobState('loop-test.21')) !== 'delayed') return undefined;
        return queue.getJob('loop-test.21');
      });
      expect(job.attemptsMade).toBe(0);
    } finally {
      await worker.stop(5_000);
      await (await queue.getJob('loop-test.21'))?.remove();
    }
  }, 60_000);
});

describe('an outage longer than a job\'s attempts allow', () => {
  /** Two attempts 100 ms apart: without the carry, a job meeting a 4 s outage is a dead letter within 0.2 s. */
  const SHORT = { attempts: 2, backoff: { type: 'fixed', delay: 100 } } as const;

  it('ends no job as a dead letter while it is younger than OUTAGE_CARRY_HOURS: its attempts are not used up, and it runs when PostgreSQL answers', async () => {
    const runs: number[] = [];
    const carried: boolean[] = [];
    const worker = workerComponent(ctx, 'carry-test', {
      'weekly-status': async (p, helpers) => {
        runs.push(p.patientId);
        // What a handler asks before its last attempt's bookkeeping (the imports do).
        await ctx.database.sql`select 1`.catch((err: unknown) => {
          carried.push(helpers.carriedThroughOutage?.(err) === true);
          throw err;
        });
        return { ok: true };
      },
    });
    await worker.start();
    const queue = ctx.queues.queue('weekly-status');
    try {
      await proxy.close();
      await queue.add('weekly-status', { patientId: 11, isoWeek: '2026-W49' }, { ...jobOptionsFor('weekly-status', 1), ...SHORT, jobId: 'carry-test.11' });
      // More attempts than the job has, all refused: none counted.
      // Tried at least three times, and waiting for the next (not running: the delays are short).
      const waiting = await until('the job tried at least three times and waiting', async () => {
        if (runs.filter((id) => id === 11).length < 3 || (await queue.getJobState('carry-test.11')) !== 'delayed') return undefined;
        return queue.getJob('carry-test.11');
      }, 20_000);
      expect(waiting.attemptsMade).toBe(0);
      expect(waiting.attemptsStarted).toBeGreaterThanOrEqual(3);
      expect(carried.length).toBeGreaterThanOrEqual(3);
      expect(carried.every(Boolean)).toBe(true);
      // Why it waits, with the job on the dashboard.
      const { logs } = await queue.getJobLogs('carry-test.11');
      expect(logs.length).toBeGreaterThanOrEqual(3);
      expect(logs[0]).toMatch(/^\S+ could not reach the database, not counted \(OUTAGE_CARRY_HOURS\): .*ECONNREFUSED/);
      expect(await ctx.queues.queue('weekly-status-dlq').getJobCounts('waiting', 'delayed', 'completed', 'failed')).toEqual({ waiting: 0, delayed: 0, completed: 0, failed: 0 });

      await proxy.open();
      await until('the job completed once PostgreSQL answered', async () => (await queue.getJob('carry-test.11'))?.isCompleted(), 20_000);
      // The attempt that completed it is its first counted one.
      expect((await queue.getJob('carry-test.11'))!.attemptsMade).toBe(1);
    } finally {
      await worker.stop(5_000);
      await (await queue.getJob('carry-test.11'))?.remove();
      await proxy.open();
    }
  }, 60_000);

  it('keeps the last JOB_LOGS_KEPT log lines of a job carried many times (a day\'s outage would leave ~290)', async () => {
    // Retry delays scaled down: the carried attempts come every few milliseconds.
    const fast = proxiedContext({ RETRY_BACKOFF_SCALE: '0.0001' });
    const worker = workerComponent(fast, 'carry-logs-test', {
      'weekly-status': async () => {
        await fast.database.sql`select 1`;
        return { ok: true };
      },
    });
    await worker.start();
    const queue = fast.queues.queue('weekly-status');
    try {
      await proxy.close();
      await queue.add('weekly-status', { patientId: 14, isoWeek: '2026-W49' }, { ...jobOptionsFor('weekly-status', 1), backoff: { type: 'fixed', delay: 5 }, jobId: 'carry-logs-test.14' });
      await until('the job carried more often than its logs are kept', async () => ((await queue.getJob('carry-logs-test.14'))?.attemptsStarted ?? 0) > JOB_LOGS_KEPT + 5, 30_000);
      const { logs, count } = await queue.getJobLogs('carry-logs-test.14');
      expect(count).toBe(JOB_LOGS_KEPT);
      expect(logs.every((l) => /could not reach the database, not counted/.test(l))).toBe(true);
    } finally {
      await worker.stop(5_000);
      await (await queue.getJob('carry-logs-test.14'))?.remove();
      await fast.close();
      await proxy.open();
    }
  }, 60_000);

  it('counts such attempts with OUTAGE_CARRY_HOURS=0, and always counts a failure that is not an outage: the job is a dead letter when they run out', async () => {
    const off = proxiedContext({ OUTAGE_CARRY_HOURS: '0' });
    const runs: number[] = [];
    const carried: boolean[] = [];
    const worker = workerComponent(off, 'carry-off-test', {
      'weekly-status': async (p, helpers) => {
        runs.push(p.patientId);
        await off.database.sql`select 1`.catch((err: unknown) => {
          if (p.patientId === 12) carried.push(helpers.carriedThroughOutage?.(err) === true);
          throw err;
        });
        return { ok: true };
      },
    });
    await worker.start();
    const queue = ctx.queues.queue('weekly-status');
    const dlq = ctx.queues.queue('weekly-status-dlq');
    try {
      await proxy.close();
      await queue.add('weekly-status', { patientId: 12, isoWeek: '2026-W49' }, { ...jobOptionsFor('weekly-status', 1), ...SHORT, jobId: 'carry-off-test.12' });
      await until('the job failed for good', async () => (await queue.getJob('carry-off-test.12'))?.isFailed(), 20_000);
      expect((await queue.getJob('carry-off-test.12'))!.attemptsMade).toBe(2);
      expect(carried).toEqual([false, false]);
    } finally {
      await worker.stop(5_000);
      await off.close();
      await proxy.open();
    }
    // With the carry on, a failure of another kind still uses up the attempts.
    const carrying = workerComponent(ctx, 'carry-other-test', {
      'weekly-status': async (p) => {
        runs.push(p.patientId);
        throw new Error('a statement that failed');
      },
    });
    await carrying.start();
    try {
      await queue.add('weekly-status', { patientId: 13, isoWeek: '2026-W49' }, { ...jobOptionsFor('weekly-status', 1), ...SHORT, jobId: 'carry-off-test.13' });
      await until('the failing job failed for good', async () => (await queue.getJob('carry-off-test.13'))?.isFailed(), 20_000);
      expect((await queue.getJob('carry-off-test.13'))!.attemptsMade).toBe(2);
    } finally {
      await carrying.stop(5_000);
    }
    expect(runs.filter((id) => id === 12)).toHaveLength(2);
    expect(runs.filter((id) => id === 13)).toHaveLength(2);
    await until('both are dead letters', async () => (await dlq.getJobCounts('waiting')).waiting === 2, 10_000);
  }, 60_000);
});

describe('outageDelayMs', () => {
  const carry = { isOutage: couldNotReachPostgres, carryMs: 3_600_000, maxDelayMs: 320_000 };
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
  const now = Date.parse('2026-12-07T12:00:00Z');
  const job = (o: { ageMs: number; attemptsStarted: number; attemptsMade: number }) =>
    ({ name: 'weekly-status', timestamp: now - o.ageMs, opts: { backoff: { type: 'fixed', delay: 10_000 } }, attemptsStarted: o.attemptsStarted, attemptsMade: o.attemptsMade }) as unknown as Job;

  it('doubles from the job\'s retry delay per carried attempt up to the cap, half of it random', () => {
    for (let i = 0; i < 50; i++) {
      const d0 = outageDelayMs(job({ ageMs: 0, attemptsStarted: 1, attemptsMade: 0 }), refused, carry, now)!;
      expect(d0).toBeGreaterThanOrEqual(5_000);
      expect(d0).toBeLessThanOrEqual(10_000);
      const d2 = outageDelayMs(job({ ageMs: 60_000, attemptsStarted: 3, attemptsMade: 0 }), refused, carry, now)!;
      expect(d2).toBeGreaterThanOrEqual(20_000);
      expect(d2).toBeLessThanOrEqual(40_000);
      const capped = outageDelayMs(job({ ageMs: 60_000, attemptsStarted: 40, attemptsMade: 1 }), refused, carry, now)!;
      expect(capped).toBeGreaterThanOrEqual(160_000);
      expect(capped).toBeLessThanOrEqual(320_000);
    }
  });

  it('counts the attempt (null) for a job as old as the limit, for another error, and when switched off', () => {
    expect(outageDelayMs(job({ ageMs: 3_600_000, attemptsStarted: 5, attemptsMade: 0 }), refused, carry, now)).toBeNull();
    expect(outageDelayMs(job({ ageMs: 3_599_000, attemptsStarted: 5, attemptsMade: 0 }), refused, carry, now)).not.toBeNull();
    expect(outageDelayMs(job({ ageMs: 0, attemptsStarted: 1, attemptsMade: 0 }), Object.assign(new Error('closed'), { code: 'CONNECTION_CLOSED' }), carry, now)).toBeNull();
    expect(outageDelayMs(job({ ageMs: 0, attemptsStarted: 1, attemptsMade: 0 }), refused, { ...carry, carryMs: 0 }, now)).toBeNull();
    expect(outageDelayMs(job({ ageMs: 0, attemptsStarted: 1, attemptsMade: 0 }), refused, undefined, now)).toBeNull();
  });
});

describe('couldNotReachPostgres with the database\'s address', () => {
  const at = { host: 'db.internal', port: 5433 };
  const net = (code: string, extra: object) => Object.assign(new Error(code), { code, ...extra });

  it('takes a socket error for PostgreSQL\'s only when it names its port or host; its own codes always', () => {
    expect(couldNotReachPostgres(net('ECONNREFUSED', { address: '10.0.0.5', port: 5433 }), at)).toBe(true);
    expect(couldNotReachPostgres(new Error('Failed query: select 1', { cause: net('ECONNREFUSED', { port: 5433 }) }), at)).toBe(true);
    expect(couldNotReachPostgres(net('ENOTFOUND', { hostname: 'db.internal' }), at)).toBe(true);
    // Every address of a host refused (Node's AggregateError).
    expect(couldNotReachPostgres(net('ECONNREFUSED', { errors: [net('ECONNREFUSED', { address: '::1', port: 5433 })] }), at)).toBe(true);
    // Another service's: an HTTP client's FetchError names no port; a raw socket error another one.
    expect(couldNotReachPostgres(net('ECONNREFUSED', {}), at)).toBe(false);
    expect(couldNotReachPostgres(net('ECONNREFUSED', { port: 443 }), at)).toBe(false);
    expect(couldNotReachPostgres(net('ENOTFOUND', { hostname: 'storage.googleapis.com' }), at)).toBe(false);
    expect(couldNotReachPostgres(net('ECONNREFUSED', {}))).toBe(true);
    // drizzle's query error made fit to log (the therapist import's transaction rethrows it so) keeps the port.
    const drizzleError = Object.assign(new Error('Failed query: select 1\nparams: '), { params: [], cause: net('ECONNREFUSED', { address: '10.0.0.5', port: 5433 }) });
    const safe = withoutQueryData(drizzleError);
    expect(safe).toBeInstanceOf(QueryFailedError);
    expect(couldNotReachPostgres(safe, at)).toBe(true);
    expect(couldNotReachPostgres(net('57P03', {}), at)).toBe(true);
    expect(couldNotReachPostgres(net('CONNECT_TIMEOUT', {}), at)).toBe(true);
  });

  it('reads the address from DATABASE_URL', () => {
    expect(postgresAddressOf('postgres://postgres@127.0.0.1:5432/x')).toEqual({ host: '127.0.0.1', port: 5432 });
    expect(postgresAddressOf('postgres://u:p@db.internal/x')).toEqual({ host: 'db.internal', port: 5432 });
    expect(postgresAddressOf('postgresql://u@[::1]:6543/x')).toEqual({ host: '::1', port: 6543 });
    expect(postgresAddressOf('postgres://u@/x?host=/var/run/postgresql')).toBeUndefined();
    expect(postgresAddressOf('postgres://u@a:5432,b:5432/x')).toBeUndefined();
  });
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
