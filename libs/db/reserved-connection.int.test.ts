import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { until } from '../testing/until.js';

/**
 * postgres.js 3.4.9 threw an uncaught TypeError (process exit) on the next query of a reserved
 * connection whose backend had ended (porsager/postgres#1208): a PostgreSQL restart or failover
 * took down every role of a process that holds one (the outbox relay's lease, an import's
 * transaction). patches/postgres+3.4.9.patch (applied by patch-package on npm install) settles
 * those queries with CONNECTION_CLOSED instead. If this test file dies with that TypeError, the
 * patch is not applied.
 */
let db: TestDatabase;
let sql: postgres.Sql;
let admin: postgres.Sql;
/** Connections of `sql` that postgres.js has seen closed. */
let closes = 0;

beforeAll(async () => {
  db = await createTestDatabase();
  sql = postgres(db.url, { max: 2, onnotice: () => {}, onclose: () => void closes++ });
  admin = postgres(db.url, { max: 1, onnotice: () => {} });
});

afterAll(async () => {
  await sql?.end({ timeout: 1 });
  await admin?.end({ timeout: 1 });
  await db?.drop();
});

describe('a reserved connection whose backend ended', () => {
  it('fails its queries with CONNECTION_CLOSED (no uncaught exception), and the pool serves again after its release', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      const reserved = await sql.reserve();
      const [row] = await reserved<Array<{ pid: number }>>`select pg_backend_pid() as pid`;
      const closed = closes;
      await admin`select pg_terminate_backend(${row!.pid})`;
      // postgres.js has seen the connection close (a query sent before that found the socket
      // still there and did not take the path that threw).
      await until('the reserved connection seen closed', () => closes > closed);

      const codes = [];
      for (let i = 0; i < 2; i++) codes.push(await reserved`select 1`.then(() => 'ok', (e: { code?: string }) => e.code));
      expect(codes).toEqual(['CONNECTION_CLOSED', 'CONNECTION_CLOSED']);
      reserved.release();

      // The pool may hand out the dead connection once more (it fails the same way); then it reconnects.
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push(await sql<Array<{ x: number }>>`select 1 as x`.then((r) => r[0]!.x, (e: { code?: string }) => e.code));
      expect(answers.slice(-2)).toEqual([1, 1]);
      await new Promise((r) => setTimeout(r, 50));
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });
});
