import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { until as waitUntil } from '../testing/until.js';
import { isConnectionLost } from './connection-lost.js';

/**
 * Pipelines on a reserved connection (the patient and therapist import transactions: writes,
 * commit and a check sent at once) when the connection ends in between. postgres.js holds the
 * next queries back while the socket's buffer is full, after a large statement; 3.4.9 dropped
 * those held-back queries when the connection closed, so the commit never settled and the import
 * awaiting it, with its job, waited for ever (found in a drill: PostgreSQL stopped during a
 * therapist import). The Curavani Fleet patch (patches/postgres+3.4.9.patch) fails them with the
 * connection's error.
 */

let db: TestDatabase;
let admin: postgres.Sql;
const pools: postgres.Sql[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  admin = postgres(db.url, { max: 1, onnotice: () => {} });
});

afterAll(async () => {
  for (const p of pools) await p.end({ timeout: 1 });
  await admin?.end({ timeout: 1 });
  await db?.drop();
});

/** A pool of this test's own (a connection lost in one test is not handed to the next). */
function pool(): postgres.Sql {
  const p = postgres(db.url, { max: 2, onnotice: () => {} });
  pools.push(p);
  return p;
}

/** Settles with 'pending' when `p` has not settled within `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms).unref())]);
}

/** 8 MB fill the socket's buffer: postgres.js holds a reserved connection's next queries back until this one finishes. */
const BIG = 'x'.repeat(8 * 1024 * 1024);

/** The promise `get` returns once it returns one (set later by code under test). */
async function until<T>(get: () => Promise<T> | undefined): Promise<T> {
  for (;;) {
    const p = get();
    if (p) return p;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Terminates the backend `pid` after `ms` (while the server sleeps in the large statement). */
function terminateLater(pid: number, ms: number): void {
  setTimeout(() => void admin`select pg_terminate_backend(${pid})`.catch(() => {}), ms);
}

describe('a reserved connection lost behind a large statement', () => {
  it('fails the held-back commit and check with the connection error instead of never settling them', async () => {
    const conn = await pool().reserve();
    try {
      const [row] = await conn<Array<{ pid: number }>>`select pg_backend_pid() as pid`;
      await conn`begin`;
      const writes = conn`select pg_sleep(1.5), length(${BIG}::text) as n`;
      const commit = conn`commit`;
      const after = conn`select 1 as x`;
      terminateLater(row!.pid, 500);

      const settled = await within(Promise.allSettled([writes, commit, after]), 10_000);
      expect(settled).not.toBe('pending');
      const results = settled as PromiseSettledResult<unknown>[];
      expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
      for (const r of results) expect(isConnectionLost((r as PromiseRejectedResult).reason)).toBe(true);

      // A query made on the reserve afterwards fails at once: the pool may have connected the
      // slot anew for someone else.
      const later = await within(
        conn`select 2 as y`.then(
          () => 'ran',
          (err: unknown) => (isConnectionLost(err) ? 'connection lost' : String(err)),
        ),
        5_000,
      );
      expect(later).toBe('connection lost');
    } finally {
      conn.release();
    }
  });

  it('in sql.begin(): the transaction function gets the error of its held-back query and ends', async () => {
    const sql = pool();
    let inner: 'pending' | 'resolved' | 'rejected' = 'pending';
    const tx = sql.begin(async (t) => {
      const [row] = await t<Array<{ pid: number }>>`select pg_backend_pid() as pid`;
      terminateLater(row!.pid, 500);
      const writes = t`select pg_sleep(1.5), length(${BIG}::text) as n`;
      const next = t`select 3 as z`;
      await Promise.allSettled([writes, next]).then(
        (r) => (inner = r.every((x) => x.status === 'rejected') ? 'rejected' : 'resolved'),
      );
    });
    await expect(within(tx, 10_000)).rejects.toMatchObject({ code: expect.any(String) });
    // The function's own awaits settled too (before the patch they stayed pending for ever).
    await within(
      (async () => {
        while (inner === 'pending') await new Promise((r) => setTimeout(r, 20));
      })(),
      5_000,
    );
    expect(inner).toBe('rejected');
  });

  it('in sql.begin(): a query after the connection was lost fails and writes nothing (it ran inside the transaction the pool reconnected the slot for, and was committed with it)', async () => {
    const sql = postgres(db.url, { max: 1, onnotice: () => {} }); // one slot: the reconnect is for the transaction waiting
    pools.push(sql);
    await sql`create table late_writes (n int)`;
    let other: Promise<string> | undefined;
    let late: Promise<string> | undefined;
    const tx = sql.begin(async (t) => {
      const [row] = await t<Array<{ pid: number }>>`select pg_backend_pid() as pid`;
      // Another transaction waits for the only connection.
      other = sql.begin(async (o) => {
        await o`select pg_sleep(1)`;
        return 'committed';
      });
      await admin`select pg_terminate_backend(${row!.pid})`;
      await t`select 1`.catch(() => {}); // the loss shows
      // The slot is connected anew and the other transaction has begun (its sleep runs on a new
      // session); a fixed pause let a slower reconnect come after the insert, which then failed
      // for want of a connection whether or not it was kept out of the other transaction.
      await waitUntil('the other transaction running on the reconnected slot', async () =>
        (await admin`select 1 from pg_stat_activity where datname = current_database() and pid <> ${row!.pid} and state = 'active' and query = 'select pg_sleep(1)'`).length > 0);
      late = t`insert into late_writes values (1)`.then(
        () => 'ran',
        (err: unknown) => (isConnectionLost(err) ? 'connection lost' : String(err)),
      );
      await late;
    });
    await expect(within(tx, 10_000)).rejects.toMatchObject({ code: expect.any(String) });
    expect(await within(until(() => late), 5_000)).toBe('connection lost');
    expect(await within(until(() => other), 10_000)).toBe('committed');
    expect(await admin`select count(*)::int as n from late_writes`).toEqual([{ n: 0 }]);
  });

  it('a statement that fails on a live connection: the commit still runs and rolls back', async () => {
    const conn = await pool().reserve();
    try {
      await conn`begin`;
      const [writes, commit, after] = await Promise.allSettled([
        conn`select length(${BIG}::text) / 0 as n`,
        conn`commit`,
        conn<Array<{ x: number }>>`select 1 as x`,
      ]);
      expect(writes.status).toBe('rejected');
      expect(isConnectionLost((writes as PromiseRejectedResult).reason)).toBe(false);
      expect(commit.status).toBe('fulfilled');
      expect((commit as PromiseFulfilledResult<{ command: string }>).value.command).toBe('ROLLBACK');
      expect(after).toEqual({ status: 'fulfilled', value: expect.arrayContaining([{ x: 1 }]) });
    } finally {
      conn.release();
    }
  });
});

describe('a backend terminated in the middle of a query', () => {
  it('the query waiting for its slot runs on the new session instead of failing with the old one\'s 57P01, and the pool ends without waiting for the old one', async () => {
    const sql = postgres(db.url, { max: 1, onnotice: () => {} }); // one slot: the waiting query reconnects it
    pools.push(sql);
    const conn = await sql.reserve();
    try {
      const [row] = await conn<Array<{ pid: number }>>`select pg_backend_pid() as pid`;
      const sleeping = conn`select pg_sleep(5)`.then(
        () => 'ran',
        (err: { code?: string }) => err.code,
      );
      const waiting = sql<Array<{ x: number }>>`select 2 as x`.then(
        (r) => r[0]?.x,
        (err: { code?: string }) => `failed ${err.code}`,
      );
      // The sleep runs on the server (and the other query waits for the slot) before its backend is ended.
      await waitUntil('the sleep running', async () => (await admin`select 1 from pg_stat_activity where pid = ${row!.pid} and state = 'active' and query = 'select pg_sleep(5)'`).length > 0);
      await admin`select pg_terminate_backend(${row!.pid})`;
      // The server answers the sleeping query with 57P01 (FATAL) and closes the connection.
      expect(await within(sleeping, 5_000)).toMatch(/^(57P01|CONNECTION_CLOSED)$/);
      expect(await within(waiting, 5_000)).toBe(2);
    } finally {
      conn.release();
    }
    // Nothing of the ended session is left to wait for: the pool ends at once, not after its
    // timeout (a fleet process stopped after an outage waited its whole database close timeout).
    expect(await within(sql.end({ timeout: 60 }).then(() => 'ended'), 10_000)).toBe('ended');
  });
});

