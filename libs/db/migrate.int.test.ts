import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { TEST_ADMIN_DB_URL, randomSuffix, withDatabase } from '../testing/services.js';
import { assertPlatformSchema, findMissingPlatformColumns, MissingPlatformTablesError, runMigrations } from './migrate.js';

const admin = postgres(TEST_ADMIN_DB_URL, { max: 1, onnotice: () => {} });
const created: string[] = [];

async function freshDatabaseUrl(): Promise<string> {
  const name = `fleet_mig_${randomSuffix()}`;
  created.push(name);
  return withDatabase(TEST_ADMIN_DB_URL, name);
}

afterAll(async () => {
  for (const name of created) await admin.unsafe(`drop database if exists "${name}" with (force)`);
  await admin.end();
});

describe('migrations', () => {
  it('create the database, apply both sets, and are safe to run twice and concurrently', async () => {
    const url = await freshDatabaseUrl();
    const results = await Promise.all([1, 2, 3].map(() => runMigrations(url, { platform: true })));
    expect(results.map((r) => r.sets)).toEqual([
      ['platform', 'fleet'],
      ['platform', 'fleet'],
      ['platform', 'fleet'],
    ]);
    await runMigrations(url, { platform: true });
    const sql = postgres(url, { max: 1 });
    try {
      const applied = await sql`select count(*)::int as n from drizzle.fleet_migrations`;
      const journalCount = (await import('../../drizzle/fleet/meta/_journal.json', { with: { type: 'json' } })).default.entries.length;
      expect(applied[0]!.n).toBe(journalCount);
      const tables = await sql`select table_schema || '.' || table_name as t from information_schema.tables
        where table_schema in ('fleet', 'patient_service', 'therapist_service', 'matching_service')`;
      const names = tables.map((r) => r.t as string);
      expect(names).toEqual(expect.arrayContaining(['fleet.outbox', 'fleet.deliveries', 'fleet.audit_log', 'patient_service.patienten', 'therapist_service.therapeuten', 'matching_service.platzsuche']));
      expect(await findMissingPlatformColumns(sql)).toEqual([]);
    } finally {
      await sql.end();
    }
  });

  it('against a platform database, names every missing table and column', async () => {
    const url = await freshDatabaseUrl();
    await admin.unsafe(`create database "${new URL(url).pathname.slice(1)}"`);
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await sql.unsafe(`create schema patient_service; create table patient_service.patienten (id serial primary key, vorname text, nachname text)`);
      const missing = await findMissingPlatformColumns(sql);
      expect(missing).toContain('patient_service.patienten.email');
      expect(missing).toContain('patient_service.patienten.weekly_update_opt_out');
      expect(missing).not.toContain('patient_service.patienten.vorname');
      expect(missing).toContain('therapist_service.therapeuten');
      expect(missing).toContain('matching_service.platzsuche');
      await expect(assertPlatformSchema(sql)).rejects.toThrow(MissingPlatformTablesError);
      await expect(assertPlatformSchema(sql)).rejects.toThrow(/patient_service\.patienten\.email/);
    } finally {
      await sql.end();
    }
  });
});
