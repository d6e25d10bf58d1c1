import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { isConnectionLost, settlePipeline } from './pipeline.js';

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

describe('settlePipeline', () => {
  it('a connection lost behind a large statement: the held-back commit fails too instead of never settling (the drill: PostgreSQL stopped during a therapist import)', async () => {
    const conn = await pool().reserve();
    try {
      const [row] = await conn<Array<{ pid: number }>>`select pg_backend_pid() as pid`;
      await conn`begin`;
      // The server sleeps, so the backend is terminated while the next queries are held back.
      const writes = conn`select pg_sleep(1.5), length(${BIG}::text) as n`;
      const commit = conn`commit`;
      const after = conn`select 1 as x`;
      setTimeout(() => void admin`select pg_terminate_backend(${row!.pid})`.catch(() => {}), 500);

      const settled = await within(settlePipeline([writes, commit, after]), 10_000);
      expect(settled).not.toBe('pending');
      const results = settled as PromiseSettledResult<unknown>[];
      expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
      for (const r of results) expect(isConnectionLost((r as PromiseRejectedResult).reason)).toBe(true);
    } finally {
      conn.release();
    }
  });

  it('a statement that fails on a live connection: waits for the commit, which rolls back', async () => {
    const conn = await pool().reserve();
    try {
      await conn`begin`;
      const [writes, commit, after] = await settlePipeline([
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
