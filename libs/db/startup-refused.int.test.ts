import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config/index.js';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { tcpProxyFor } from '../testing/tcp-proxy.js';
import { openDatabase, POOL_BACKOFF_MAX_S, type Database } from './client.js';

/**
 * The workers' pool (the fleet's own options: DB_POOL_MAX 10 and the rest) while PostgreSQL
 * refuses new sessions, as one that is starting up does (FATAL 57P03 "the database system is
 * starting up", then it closes the connection), with queries waiting for a connection; through
 * a TCP proxy that answers for the server, then lets connections through to the test database.
 * postgres.js 3.4.9 counted only socket errors as failed connects for its backoff: each waiting
 * query made a connection attempt right after the last was refused (100 queries: 100 attempts in
 * some 0.1 s, each query failing with 57P03), a reconnect storm against a server coming up; and
 * a server that closed without a word was reconnected to at once, for ever (thousands of
 * attempts a second). The Curavani Fleet patch (patches/postgres+3.4.9.patch) counts both as failed
 * connects, as a socket error: the pool waits by its backoff, some 15 attempts in 2 s, the
 * queries that were not refused wait and run once the server accepts.
 */

const REFUSING_MS = 2_000;
const WAITING = 100;
/** The fixed pool makes some 15 attempts in REFUSING_MS (as against a closed port); unpatched, one per waiting query. */
const MAX_ATTEMPTS = 40;
/** postgres.js's backoff stops growing at 10-20 s: by then every connection has tried again. */
const BACKOFF_CAP_MS = 25_000;

let db: TestDatabase;
const pools: Database[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  for (const p of pools) await p.close(1);
  await db?.drop();
});

interface Tracked {
  /** 'ok', or the error's code; undefined while pending. */
  result?: string;
  done: Promise<string>;
}

function track(q: Promise<unknown>): Tracked {
  const t: Tracked = {
    done: q.then(
      () => 'ok',
      (err: { code?: string }) => String(err.code),
    ),
  };
  void t.done.then((r) => (t.result = r));
  return t;
}

/** Settles with 'pending' when `p` has not settled within `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms).unref())]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The fleet's pool (its configuration's defaults) to `url`. */
function fleetPool(url: string): Database {
  const database = openDatabase(loadConfig({ DATABASE_URL: url }).db);
  pools.push(database);
  return database;
}

describe('the workers\' pool while PostgreSQL refuses sessions', () => {
  it('refused as it starts up (57P03): a few connection attempts, not one per waiting query; the others wait and run once it accepts', async () => {
    const proxy = tcpProxyFor(db.url);
    await proxy.open();
    try {
      proxy.refuseStartup();
      const database = fleetPool(proxy.url);
      const from = proxy.accepted;
      const queries = Array.from({ length: WAITING }, (_, i) => track(database.sql`select ${i}::int as i`.execute()));
      await sleep(REFUSING_MS);
      const attempts = proxy.accepted - from;
      const refused = queries.filter((q) => q.result !== undefined).map((q) => q.result);

      expect(attempts, `connection attempts in ${REFUSING_MS} ms`).toBeLessThanOrEqual(MAX_ATTEMPTS);
      // Each attempt fails the query it was made for with the server's answer; the others wait.
      expect(refused.length).toBeGreaterThan(0);
      expect(refused.length).toBeLessThanOrEqual(attempts);
      expect(new Set(refused)).toEqual(new Set(['57P03']));

      proxy.forward();
      expect(await within(database.sql`select 1 as x`.execute().then(() => 'ok'), BACKOFF_CAP_MS)).toBe('ok');
      const all = await within(Promise.all(queries.map((q) => q.done)), BACKOFF_CAP_MS);
      expect(all).not.toBe('pending');
      // One query failed per refused attempt (an answer on its way when the server started to
      // accept included); every other query ran once the server accepted.
      const notOk = (all as string[]).filter((r) => r !== 'ok');
      expect(new Set(notOk)).toEqual(new Set(['57P03']));
      expect(notOk.length).toBe(attempts);
    } finally {
      await proxy.close();
    }
  }, 60_000);

  it('closed without a word (a proxy whose server is away): a few attempts, not a reconnect loop; the query an attempt was for fails with CONNECTION_CLOSED', async () => {
    const proxy = tcpProxyFor(db.url);
    await proxy.open();
    try {
      proxy.refuseStartup(null);
      const database = fleetPool(proxy.url);
      const from = proxy.accepted;
      const queries = Array.from({ length: WAITING }, (_, i) => track(database.sql`select ${i}::int as i`.execute()));
      await sleep(REFUSING_MS);
      const attempts = proxy.accepted - from;
      const failed = queries.filter((q) => q.result !== undefined).map((q) => q.result);

      expect(attempts, `connection attempts in ${REFUSING_MS} ms`).toBeLessThanOrEqual(MAX_ATTEMPTS);
      expect(failed.length).toBeGreaterThan(0);
      expect(failed.length).toBeLessThanOrEqual(attempts);
      expect(new Set(failed)).toEqual(new Set(['CONNECTION_CLOSED']));

      proxy.forward();
      expect(await within(database.sql`select 1 as x`.execute().then(() => 'ok'), BACKOFF_CAP_MS)).toBe('ok');
    } finally {
      await proxy.close();
    }
  }, 60_000);
});

describe('a connection of its own (a lease) after a long outage', () => {
  /** Long enough for postgres.js's own curve to reach its 10-20 s waits (about 11 s of failed connects). */
  const OUTAGE_MS = 15_000;

  it(`is back within ${POOL_BACKOFF_MAX_S} s (its longest wait) of PostgreSQL accepting again, not postgres.js's 10-20 s`, async () => {
    const proxy = tcpProxyFor(db.url);
    await proxy.open();
    const database = fleetPool(proxy.url);
    const own = database.ownConnection('outage-test');
    try {
      expect((await own`select 1 as x`)[0]!.x).toBe(1);
      await proxy.close();
      // The holder keeps asking (a lease's renewal does): each query fails while the port is closed.
      let failed = 0;
      const until = Date.now() + OUTAGE_MS;
      while (Date.now() < until) {
        const r = await within(track(own`select 1`.execute()).done, 1_000);
        if (r !== 'ok' && r !== 'pending') failed++;
        await sleep(200);
      }
      expect(failed, 'queries failed during the outage').toBeGreaterThan(3);

      await proxy.open();
      const back = Date.now();
      expect(await within(own`select 1 as x`.execute().then(() => 'ok'), 30_000)).toBe('ok');
      const ms = Date.now() - back;
      // The next try comes within the longest wait (jitter only shortens it), plus the connect.
      expect(ms, 'ms from PostgreSQL accepting to the first query answered').toBeLessThan(POOL_BACKOFF_MAX_S * 1000 + 1_500);
    } finally {
      await own.end({ timeout: 1 });
      await proxy.close();
    }
  }, 90_000);
});
