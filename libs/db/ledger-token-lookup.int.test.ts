import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { until } from '../testing/until.js';
import { failedOfSameRegistration, newerImports } from './repositories/patient-import.js';

/**
 * A failed registration is linked to a later import of the same registration token under another
 * file name (a corrected upload, a hand import) by the token in the names. The lookups run for
 * every failed row a list shows and at the end of every import; they read the ledger through its
 * index on the name's token (migration drizzle/fleet/0018), not every row. Fails when the lookups'
 * expression and the index drift apart (the index is then left unused).
 */

const ROWS = 20_000;
let db: TestDatabase;
let failedId: number;
let importedByHandId: number;
let failedElsewhereId: number;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.sql.unsafe(`
    insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status)
    select 'b', 'registrations/Name_Vorname_20250101_' || md5(g::text) || '.json', '1', 'gs://b/x', 'deleted'
      from generate_series(1, ${ROWS}) g`);
  const failed = await db.sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status)
    values ('b', 'registrations/Müller_Anna_20250101_AbCdEf0123456789.json', '7', 'gs://b/x', 'failed') returning id`;
  failedId = Number(failed[0]!.id);
  // The corrected file, imported by hand under another name; the token in lower case.
  const hand = await db.sql`insert into fleet.patient_import_ledger (source, bucket, object_name, generation, source_uri, status)
    values ('file', 'local', 'Mueller_Anna_20250102_abcdef0123456789.JSON', '1', 'file:///x', 'done') returning id`;
  importedByHandId = Number(hand[0]!.id);
  const other = await db.sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status)
    values ('b', 'registrations/Other_Person_20250101_ffffffffffff.json', '3', 'gs://b/x', 'failed') returning id`;
  failedElsewhereId = Number(other[0]!.id);
  await db.sql`analyze fleet.patient_import_ledger`;
}, 60_000);

afterAll(async () => {
  await db?.drop();
});

async function tokenIndexScans(): Promise<number> {
  await db.sql`select pg_stat_clear_snapshot()`;
  const [row] = await db.sql`select idx_scan::int8 as n from pg_stat_user_indexes where indexrelname = 'patient_import_ledger_name_token_idx'`;
  expect(row, 'the ledger has its index on the name token').toBeDefined();
  return Number(row!.n);
}

describe('the registration-token link between ledger records', () => {
  // First: no earlier lookup's statistics can arrive late and count for this one.
  it('reads the ledger through the name-token index, not every row', async () => {
    const before = await tokenIndexScans();
    await newerImports(db.db, [failedId]);
    // Statistics reach the view after the backend flushes them (within a second or so).
    await until('newerImports used the index', async () => (await tokenIndexScans()) > before, 10_000);
    const between = await tokenIndexScans();
    await failedOfSameRegistration(db.db, importedByHandId);
    await until('failedOfSameRegistration used the index', async () => (await tokenIndexScans()) > between, 10_000);
  });

  it('links a failed upload to the hand import of the same token, and the hand import back to it', async () => {
    const later = await newerImports(db.db, [failedId, failedElsewhereId]);
    expect(later.get(failedId)).toMatchObject({ id: importedByHandId, source: 'file', link: 'same-token', status: 'done' });
    expect(later.has(failedElsewhereId)).toBe(false);
    expect(await failedOfSameRegistration(db.db, importedByHandId)).toEqual([failedId]);
    expect(await failedOfSameRegistration(db.db, failedElsewhereId)).toEqual([]);
  });
});
