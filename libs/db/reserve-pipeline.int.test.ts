import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
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
