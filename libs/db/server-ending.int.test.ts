import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { tcpProxyFor } from '../testing/tcp-proxy.js';
import { until } from '../testing/until.js';
import { couldNotReachPostgres } from './connection-lost.js';

/**
 * A query running when PostgreSQL ends its session. The server says why first: a FATAL
 * ErrorResponse 57P01 in a fast shutdown or `pg_terminate_backend`, a notice 57P01 in an
 * immediate shutdown, 57P02 when another backend crashed. postgres.js 3.4.9 kept that answer
 * waiting for a ReadyForQuery that never came, and failed the query with CONNECTION_CLOSED when
 * the socket closed: as if the connection had died under the query, which is also what the
 * query that brings the server down sees. The Curavani Fleet patch (patches/postgres+3.4.9.patch)
 * fails it with the server's error, so such a job is carried through the outage (not counted
 * against its attempts) while a connection closed without a word still counts.
 */

let db: TestDatabase;
const clients: postgres.Sql[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  for (const c of clients) await c.end({ timeout: 1 });
  await db?.drop();
});

function client(url: string): postgres.Sql {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  clients.push(sql);
  return sql;
}

/** The error `select pg_sleep(30)` fails with when `end` ends its session while it runs. */
async function sleepingQueryError(sql: postgres.Sql, end: (pid: number) => Promise<void>): Promise<{ code?: string }> {
  const [{ pid }] = await sql<[{ pid: number }]>`select pg_backend_pid() as pid`;
  const sleeping = sql`select pg_sleep(30)`.execute();
  const failed = sleeping.then(
    () => ({}) as { code?: string },
    (err: { code?: string }) => err,
  );
  await until('the query runs', async () => (await db.sql`select 1 from pg_stat_activity where pid = ${pid} and query like 'select pg_sleep%'`).length === 1);
  await end(pid);
  return failed;
}

describe('a query running when PostgreSQL ends its session', () => {
  it('pg_terminate_backend (as a fast shutdown): fails with 57P01, taken for PostgreSQL going away; the next query runs on a new session', async () => {
    const sql = client(db.url);
    const err = await sleepingQueryError(sql, async (pid) => {
      await db.sql`select pg_terminate_backend(${pid})`;
    });
    expect(err.code).toBe('57P01');
    expect(couldNotReachPostgres(err)).toBe(true);
    // Not carried into the next session of the slot.
    expect(await sql`select 1 as one`).toEqual([{ one: 1 }]);
  });

  it('a notice 57P01 or 57P02 before the close (immediate shutdown, a crash of another backend): fails with it; a close without a word stays CONNECTION_CLOSED', async () => {
    const proxy = tcpProxyFor(db.url);
    await proxy.open();
    try {
      const sql = client(proxy.url);
      const immediate = await sleepingQueryError(sql, async () => proxy.endSessions({ code: '57P01', message: 'terminating connection due to immediate shutdown command' }));
      expect(immediate.code).toBe('57P01');
      const crash = await sleepingQueryError(sql, async () => proxy.endSessions({ code: '57P02', message: 'terminating connection because of crash of another server process' }));
      expect(crash.code).toBe('57P02');
      expect(couldNotReachPostgres(crash)).toBe(true);
      // The query that may have brought the server down sees its connection close, nothing more.
      const silent = await sleepingQueryError(sql, async () => proxy.endSessions(null));
      expect(silent.code).toBe('CONNECTION_CLOSED');
      expect(couldNotReachPostgres(silent)).toBe(false);
    } finally {
      await proxy.close();
    }
  });
});
