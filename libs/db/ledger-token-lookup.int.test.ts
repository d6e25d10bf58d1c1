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
let ids: number[] = [];
let oldImportId: number;
let lateId: number;

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
  // A re-upload of patient 1's registration recorded as a duplicate before the ledger recorded
  // tokens (no token, no consent of its own): its content's token is not known.
  await db.sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, duplicate_of_patient_id, duplicate_kind)
    values ('b', 'registrations/Patient_One_20251031_c001ea16.json', '1', 'gs://b/x', 'duplicate', 1, 'same_token')`;
  // Two registrations whose tokens share their first 8 characters (the part in the file names, and the payment reference).
  const rows = await db.sql`insert into fleet.patient_import_ledger (source, bucket, object_name, generation, source_uri, status, patient_id, error_code, registration_token) values
    ('bucket', 'b', 'registrations/Patient_One_20251101_c001ea16.json', '1', 'gs://b/x', 'deleted', 1, null, 'c001ea16f0ad0001'),
    ('bucket', 'b', 'registrations/Other_Person_20251202_c001ea16.json', '1', 'gs://b/x', 'failed', null, 'zahlungsreferenz_taken', 'c001ea16zz000002'),
    -- before the ledger recorded tokens: a payment reference taken, no token on the row
    ('bucket', 'b', 'registrations/Old_Person_20251203_c001ea16.json', '1', 'gs://b/x', 'failed', null, 'zahlungsreferenz_taken', null),
    -- not JSON: its own token was never read; the names' token is all there is
    ('bucket', 'b', 'registrations/Broken_File_20251204_c001ea16.json', '1', 'gs://b/x', 'failed', null, 'invalid_json', null),
    -- a corrected upload under a name with another token part: the full tokens match
    ('bucket', 'b', 'registrations/Typo_Name_20251205_deadbeef.json', '1', 'gs://b/x', 'failed', null, 'token_mismatch', 'abcabcab00000003'),
    ('file', '(local file)', 'Typo_Name_20251205_abcabcab.json', 'sha', 'file:///x', 'done', 3, null, 'abcabcab00000003')
    returning id`;
  ids = rows.map((r) => Number(r.id));
  // An import from before the column: its token is its consent's.
  const [oldImport] = await db.sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, patient_id)
    values ('b', 'registrations/Early_Bird_20240101_5eed5eed.json', '1', 'gs://b/x', 'deleted', 9) returning id`;
  oldImportId = Number(oldImport!.id);
  await db.sql`insert into fleet.patient_consents (patient_id, ledger_id, registration_token, metadata) values (9, ${oldImportId}, '5eed5eed00000009', '{}'::jsonb)`;
  const [late] = await db.sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, error_code, registration_token)
    values ('b', 'registrations/Late_Comer_20251206_5eed5eed.json', '1', 'gs://b/x', 'failed', 'zahlungsreferenz_taken', '5eed5eedyy000010') returning id`;
  lateId = Number(late!.id);
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
    expect((await failedOfSameRegistration(db.db, importedByHandId)).map((f) => f.id)).toEqual([failedId]);
    expect(await failedOfSameRegistration(db.db, failedElsewhereId)).toEqual([]);
  });

  // A failed registration whose token shares only its first 8 characters with patient 1's (its
  // payment reference is taken) was called "the same registration" by the names' token: staff were
  // told to discard a real registration, and `dlq requeue` refused it.
  it('links by the full registration tokens where both are known, never by the names alone when they differ', async () => {
    const [imported, refTaken, oldRefTaken, broken, typo, hand] = ids as [number, number, number, number, number, number];
    const later = await newerImports(db.db, [refTaken, oldRefTaken, broken, typo, lateId]);
    // Its own token known and another: not linked, neither to patient 1's import nor to the old
    // duplicate whose token is unknown (the names' 8 characters are all the two share).
    expect(later.has(refTaken)).toBe(false);
    // No token on the row, but its failure says the registrations differ.
    expect(later.has(oldRefTaken)).toBe(false);
    // Its own token unknown: the names' token links it, said to be unchecked.
    expect(later.get(broken)).toMatchObject({ id: imported, link: 'same-token', tokenCompared: false });
    // Another token in the name, the same in the content: linked, checked.
    expect(later.get(typo)).toMatchObject({ id: hand, source: 'file', link: 'same-token', tokenCompared: true });
    // An import recorded before the column: its consent's token differs.
    expect(later.has(lateId)).toBe(false);
    expect(await failedOfSameRegistration(db.db, imported)).toEqual([{ id: broken, tokenCompared: false }]);
    expect(await failedOfSameRegistration(db.db, hand)).toEqual([{ id: typo, tokenCompared: true }]);
    expect(await failedOfSameRegistration(db.db, oldImportId)).toEqual([]);
  });
});
