import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import postgres from 'postgres';
import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import { is } from 'drizzle-orm';
import { getTableConfig, PgTable } from 'drizzle-orm/pg-core';
import * as platform from './schema/platform.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Migrations ship beside the code: drizzle/ at the repository (or dist) root. */
function migrationsDir(set: 'fleet' | 'platform'): string {
  const candidates = [path.join(root, 'drizzle', set), path.join(root, '..', 'drizzle', set)];
  return candidates.find((c) => existsSync(path.join(c, 'meta', '_journal.json'))) ?? candidates[0]!;
}

export interface MigrateResult {
  sets: Array<'platform' | 'fleet'>;
}

const LOCK_KEY = 'curavani-fleet:migrate';

/**
 * Applies the migration sets: platform first (only when the fleet runs standalone), then
 * the fleet's own. Safe to run twice or from several processes at once: one session-level
 * advisory lock serialises them, and drizzle skips what is already applied.
 */
export async function runMigrations(url: string, opts: { platform: boolean }): Promise<MigrateResult> {
  await ensureDatabase(url);
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql`select pg_advisory_lock(hashtext(${LOCK_KEY}))`;
    try {
      const db = drizzle(sql);
      const sets: MigrateResult['sets'] = [];
      if (opts.platform) {
        await migrate(db, {
          migrationsFolder: migrationsDir('platform'),
          migrationsSchema: 'drizzle',
          migrationsTable: 'platform_migrations',
        });
        sets.push('platform');
      }
      await migrate(db, {
        migrationsFolder: migrationsDir('fleet'),
        migrationsSchema: 'drizzle',
        migrationsTable: 'fleet_migrations',
      });
      sets.push('fleet');
      return { sets };
    } finally {
      await sql`select pg_advisory_unlock(hashtext(${LOCK_KEY}))`;
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Creates the database named in the URL when it does not exist yet (a fresh machine). */
export async function ensureDatabase(url: string): Promise<void> {
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
  if (!name) return;
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const sql = postgres(admin.toString(), { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql`select 1 as ok from pg_database where datname = ${name}`;
    if (!row) {
      await sql.unsafe(`create database "${name.replaceAll('"', '""')}"`).catch((err: { code?: string }) => {
        // created meanwhile by another process: duplicate_database, or the catalog's unique index
        if (err.code !== '42P04' && err.code !== '23505') throw err;
      });
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export class MissingPlatformTablesError extends Error {
  override name = 'MissingPlatformTablesError';
  constructor(readonly missing: string[]) {
    super(`the platform database lacks what the fleet needs: ${missing.join(', ')}`);
  }
}

function platformTables(): PgTable[] {
  return (Object.values(platform) as unknown[]).filter((v): v is PgTable => is(v, PgTable));
}

/**
 * Against the platform's existing database (PLATFORM_MIGRATIONS=false): checks that every
 * table and column the fleet reads or writes exists. Returns the missing ones, named
 * `schema.table` or `schema.table.column`.
 */
export async function findMissingPlatformColumns(sql: postgres.Sql): Promise<string[]> {
  const rows = await sql<{ table_schema: string; table_name: string; column_name: string }[]>`
    select table_schema, table_name, column_name from information_schema.columns
    where table_schema in ('patient_service', 'therapist_service', 'matching_service')`;
  const have = new Set(rows.map((r) => `${r.table_schema}.${r.table_name}.${r.column_name}`));
  const haveTables = new Set(rows.map((r) => `${r.table_schema}.${r.table_name}`));
  const missing: string[] = [];
  for (const table of platformTables()) {
    const cfg = getTableConfig(table);
    const qualified = `${cfg.schema}.${cfg.name}`;
    if (!haveTables.has(qualified)) {
      missing.push(qualified);
      continue;
    }
    for (const col of cfg.columns) {
      if (!have.has(`${qualified}.${col.name}`)) missing.push(`${qualified}.${col.name}`);
    }
  }
  return missing;
}

export async function assertPlatformSchema(sql: postgres.Sql): Promise<void> {
  const missing = await findMissingPlatformColumns(sql);
  if (missing.length > 0) throw new MissingPlatformTablesError(missing);
}
