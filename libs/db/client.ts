import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import * as fleetSchema from './schema/index.js';

export interface DbOptions {
  url: string;
  poolMax: number;
  statementTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
  applicationName?: string;
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

export function openDatabase(opts: DbOptions): Database {
  const sql = postgres(opts.url, {
    max: opts.poolMax,
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
      onnotice: () => {},
      connection: { application_name: `${opts.applicationName ?? 'curavani-fleet'}:${purpose}`, statement_timeout: opts.statementTimeoutMs },
    });
  return { db, sql, ownConnection, close: (timeout = 5) => sql.end({ timeout }) };
}

/**
 * One connection of its own for the readiness probe (`GET /ready`): `select 1` on the workers'
 * pool waits behind them when they hold every connection, and a busy database then read as
 * "postgres down". Opened on first use, closed after a minute idle. It reconnects at once on the
 * next check (no backoff): postgres.js's default waits longer after every failed connect, up to
 * 10-20 s, so in an outage /ready answered "no answer within" instead of why, and stayed 503 that
 * long after PostgreSQL was back. A probe tries once per check, so no wait is needed.
 */
export function openProbeConnection(opts: Pick<DbOptions, 'url' | 'applicationName'>): postgres.Sql {
  return postgres(opts.url, {
    max: 1,
    idle_timeout: 60,
    connect_timeout: 10,
    backoff: () => 0,
    onnotice: () => {},
    connection: { application_name: `${opts.applicationName ?? 'curavani-fleet'}:ready`, statement_timeout: 10_000 },
  });
}
