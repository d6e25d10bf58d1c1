import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import * as fleetSchema from './schema/index.js';

export interface DbOptions {
  url: string;
  poolMax: number;
  statementTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
  applicationName?: string;
  /** How long connecting may take (postgres.js's default: 30 s); a one-shot command waits less. */
  connectTimeoutSeconds?: number;
}

export type Schema = typeof fleetSchema;
export type Db = PostgresJsDatabase<Schema>;
/** A transaction handle: whatever `db.transaction` passes to its callback. */
export type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];
/** Either the database or an open transaction: repositories accept both. */
export type DbOrTx = Db | Tx;

export interface Database {
  db: Db;
  sql: postgres.Sql;
  /**
   * A connection of its own, outside the pool, for a session that must outlive others' use of
   * the pool (a lease's advisory lock). One connection; it reconnects (a new session) when the
   * old one is gone. The caller ends it.
   */
  ownConnection(purpose: string): postgres.Sql;
  close(timeoutSeconds?: number): Promise<void>;
}

/** The longest wait (before jitter) between a pool's connection attempts while PostgreSQL is away. */
export const POOL_BACKOFF_MAX_S = 4;

/**
 * Seconds a pool waits after its `retries`-th failed connect in a row: postgres.js's own curve
 * (10 ms, 30 ms, 90 ms, ... tripling, with jitter between half and all of it), but stopping at
 * POOL_BACKOFF_MAX_S instead of 20 s. With the default, a pool that had been failing for ~10 s
 * waited 10-20 s before its next try, so work resumed that long after PostgreSQL was back (an
 * outage drill: 16-31 s) while /ready already said it was; now at most 4 s. A pool tries only
 * for queries that wait, so that is at most one attempt per connection every 2-4 s in an outage.
 */
export function poolBackoff(retries: number): number {
  return (0.5 + Math.random() / 2) * Math.min(3 ** retries / 100, POOL_BACKOFF_MAX_S);
}

export function openDatabase(opts: DbOptions): Database {
  const sql = postgres(opts.url, {
    max: opts.poolMax,
    backoff: poolBackoff,
    ...(opts.connectTimeoutSeconds !== undefined ? { connect_timeout: opts.connectTimeoutSeconds } : {}),
    onnotice: () => {},
    connection: {
      application_name: opts.applicationName ?? 'curavani-fleet',
      statement_timeout: opts.statementTimeoutMs,
      idle_in_transaction_session_timeout: opts.idleInTransactionTimeoutMs,
    },
  });
  const db = drizzle(sql, { schema: fleetSchema });
  const ownConnection = (purpose: string) =>
    postgres(opts.url, {
      max: 1,
      connect_timeout: 10,
      backoff: poolBackoff,
      onnotice: () => {},
      connection: { application_name: `${opts.applicationName ?? 'curavani-fleet'}:${purpose}`, statement_timeout: opts.statementTimeoutMs },
    });
  return { db, sql, ownConnection, close: (timeout = 5) => sql.end({ timeout }) };
}

/** How long the readiness probe waits after a connection ended before it connects again. */
export const PROBE_RECONNECT_MS = 250;

/**
 * One connection of its own for the readiness probe (`GET /ready`): `select 1` on the workers'
 * pool waits behind them when they hold every connection, and a busy database then read as
 * "postgres down". Opened on first use, closed after a minute idle. A check after a failed
 * connect connects again once PROBE_RECONNECT_MS have passed since (it waits the rest when it
 * comes sooner), not by postgres.js's default backoff, which waits longer after every failed
 * connect, up to 10-20 s: in an outage /ready then answered "no answer within" instead of why,
 * and stayed 503 that long after PostgreSQL was back. Nor at once: every check then made a
 * connection attempt of its own, and /ready asked in a loop (as in a drill) met a PostgreSQL
 * starting up with up to 165 attempts a second, each refused (57P03); now at most 4. Checks that
 * arrive together share one `select 1` (apps/http/reachable.ts).
 */
export function openProbeConnection(opts: Pick<DbOptions, 'url' | 'applicationName'>): postgres.Sql {
  return postgres(opts.url, {
    max: 1,
    idle_timeout: 60,
    connect_timeout: 10,
    backoff: () => PROBE_RECONNECT_MS / 1000,
    onnotice: () => {},
    connection: { application_name: `${opts.applicationName ?? 'curavani-fleet'}:ready`, statement_timeout: 10_000 },
  });
}
