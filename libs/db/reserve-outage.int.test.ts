import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { tcpProxyFor } from '../testing/tcp-proxy.js';
import { until as waitUntil } from '../testing/until.js';
import { openDatabase, type Database } from './client.js';

/**
 * The pool's reserved connections (`sql.reserve()`, used by the patient and therapist import
 * transactions) across a PostgreSQL outage, through a TCP proxy standing in for the server. These
 * need the Curavani Fleet patch of postgres.js 3.4.9 (patches/postgres+3.4.9.patch): without it a
 * reserve made while the server was down could stay pending for ever (the import and its job hung
 * until a restart), and a released dead connection was handed to every next reserve.
 */

let db: TestDatabase;
let proxy: ReturnType<typeof tcpProxyFor>;
const opened: Database[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  proxy = tcpProxyFor(db.url);
  await proxy.open();
});

afterAll(async () => {
  for (const d of opened) await d.close(1).catch(() => {});
  await proxy?.close();
  await db?.drop();
});

/** The fleet's own pool (openDatabase), reaching PostgreSQL through the proxy. */
function pool(poolMax: number): Database {
  const d = openDatabase({ url: proxy.url, poolMax, statementTimeoutMs: 30_000, idleInTransactionTimeoutMs: 30_000 });
  opened.push(d);
  return d;
}

type Outcome = 'pending' | 'query ok' | `query failed ${string}` | `rejected ${string}`;

/** Reserves a connection, runs one query on it and releases it; what came of it. */
function reserveAndQuery(sql: postgres.Sql, into: Outcome[], i: number): Promise<void> {
  into[i] = 'pending';
  return sql.reserve().then(
    async (c) => {
      try {
        await c`select 1`;
        into[i] = 'query ok';
      } catch (err) {
        into[i] = `query failed ${(err as { code?: string }).code}`;
      } finally {
        c.release();
      }
    },
    (err: { code?: string }) => {
      into[i] = `rejected ${err.code}`;
    },
  );
}

async function until(done: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('reserved connections across a PostgreSQL outage (patched postgres.js)', () => {
  it('reserves made while PostgreSQL is down all settle once it is back, and the pool keeps every connection', { timeout: 90_000 }, async () => {
    const { sql } = pool(3);
    await sql`select 1`;
    await proxy.close();
    const outcomes: Outcome[] = [];
    const all: Array<Promise<void>> = [];
    // As imports do while the server is away: reserves and plain queries, spread over seconds.
    for (let i = 0; i < 16; i++) {
      all.push(reserveAndQuery(sql, outcomes, i));
      sql`select 1`.catch(() => {});
      await sleep(300);
    }
    await proxy.open();
    await until(() => !outcomes.includes('pending'), 45_000);
    expect(outcomes.filter((o) => o === 'pending'), JSON.stringify(outcomes)).toEqual([]);
    // None was lost to a reserve that had settled already: three at once still get one each.
    const three = Array.from({ length: 3 }, async () => {
      const c = await sql.reserve();
      await c`select pg_sleep(0.2)`;
      return c;
    });
    const held = await Promise.race([Promise.all(three), sleep(20_000).then(() => 'pending' as const)]);
    expect(held).not.toBe('pending');
    for (const c of held as postgres.ReservedSql[]) c.release();
  });

  it('a reserved connection that died is not handed out again after its release', { timeout: 60_000 }, async () => {
    const { sql } = pool(2);
    const first = await sql.reserve();
    await first`select 1`;
    // The server goes away and comes back (a restart): the reserved connection is gone.
    await proxy.close();
    await proxy.open();
    await expect(first`select 1`).rejects.toMatchObject({ code: expect.stringMatching(/^CONNECTION_(CLOSED|DESTROYED)$/) });
    first.release();
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 3; i++) await reserveAndQuery(sql, outcomes, i);
    expect(outcomes).toEqual(['query ok', 'query ok', 'query ok']);
  });

  it('a reserve waiting for the only connection settles when the server ends that connection (porsager/postgres#1195)', { timeout: 60_000 }, async () => {
    const { sql } = pool(1);
    await sql`select 1`;
    const busy = sql`select pg_sleep(3)`.catch((err: { code?: string }) => err.code);
    // The only connection is busy on the server (else the reserve would take it).
    await waitUntil('the busy query running', async () => (await db.sql`select 1 from pg_stat_activity where datname = current_database() and state = 'active' and query = 'select pg_sleep(3)'`).length > 0);
    const outcomes: Outcome[] = [];
    // Queued for the connection as it is called (postgres.js's reserve pushes it synchronously).
    const waiting = reserveAndQuery(sql, outcomes, 0);
    await proxy.close();
    await proxy.open();
    await busy;
    await until(() => outcomes[0] !== 'pending', 30_000);
    await waiting.catch(() => {});
    expect(outcomes[0]).toBe('query ok');
  });
});
