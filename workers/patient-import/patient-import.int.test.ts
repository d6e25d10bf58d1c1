import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../libs/log/index.js';
import { catalog, jobIdFor, listDeadLetters } from '../../libs/queues/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { fileBytes, objectNameFor, plainRegistration, signedRegistration } from './fixtures.js';
import { BUCKET, PREFIX, startImportHarness, until, type ImportHarness } from './int-harness.js';
import { safeFileName } from './file-keeper.js';
import { pgImportStore } from './pg-store.js';
import { SYMPTOMS } from './registration-schema.js';
import { registrationReasonIssuesDe } from './reason-de.js';

let database: TestDatabase;
let h: ImportHarness;
let signedH: ImportHarness;
const cleanups: Array<() => Promise<void>> = [];
const SECRET = 'integration-secret';

beforeAll(async () => {
  database = await createTestDatabase();
  const a = testQueuePrefix();
  const b = testQueuePrefix();
  cleanups.push(a.cleanup, b.cleanup);
  // Retries 1000x faster than production: the give-up test runs through all of them.
  h = await startImportHarness({ databaseUrl: database.url, queuePrefix: a.prefix, env: { RETRY_BACKOFF_SCALE: '0.001' } });
  await h.startWorkers();
  signedH = await startImportHarness({
    databaseUrl: database.url,
    queuePrefix: b.prefix,
    env: { REGISTRATION_SIGNING_SECRET: SECRET, GCS_BUCKET: 'signed-bucket' },
  });
  await signedH.startWorkers();
});

afterAll(async () => {
  await h?.close();
  await signedH?.close();
  for (const c of cleanups) await c();
  await database?.drop();
});

type Row = Record<string, unknown>;
const ledger = async (id: number) => (await database.sql`select * from fleet.patient_import_ledger where id = ${id}`)[0] as Row;
const ledgerOf = async (name: string, generation: string) =>
  (await database.sql`select * from fleet.patient_import_ledger where object_name = ${name} and generation = ${generation}`)[0] as Row | undefined;
const deliveriesOf = async (like: string) => database.sql`select * from fleet.deliveries where idempotency_key like ${like}`;
/** `import.failed` outbox rows of a ledger row (key = ledger id), oldest first. */
const failedEventsOf = async (ledgerId: unknown) =>
  database.sql`select * from fleet.outbox where event_type = 'import.failed' and key = ${String(ledgerId)} order by id`;

/** One `import.failed` event: import topic, key = ledger id, ids and codes only (nothing from the file). */
function expectImportFailedEvent(event: Row, row: Row, e: { code: string; attempts: number; never?: string[] }) {
  expect(event).toMatchObject({ topic: 'import-events', key: String(row.id), version: 1, producer: 'curavani-fleet' });
  expect(event.payload).toEqual({ kind: 'patient', ledgerId: Number(row.id), errorCode: e.code, attempts: e.attempts });
  const text = JSON.stringify(event);
  for (const secret of [row.object_name, row.source_uri, row.reason, row.failed_path, ...(e.never ?? [])]) {
    if (typeof secret === 'string' && secret) expect(text).not.toContain(secret);
  }
}

const bytesOf = (doc: unknown): Buffer => (Buffer.isBuffer(doc) ? doc : typeof doc === 'string' ? Buffer.from(doc) : fileBytes(doc));

async function upload(harness: ImportHarness, doc: unknown, name?: string, bucket = BUCKET) {
  const n = name ?? objectNameFor(doc as Record<string, unknown>, PREFIX);
  const obj = harness.standIn.putObject(bucket, n, bytesOf(doc));
  return { name: n, generation: obj.generation };
}

async function settled(harness: ImportHarness, name: string, generation: string, statuses = ['deleted', 'superseded', 'failed']) {
  await harness.poll();
  return until(async () => {
    const r = await ledgerOf(name, generation);
    return r && statuses.includes(r.status as string) ? r : undefined;
  }, 20_000, `ledger row of ${name} settled`);
}

describe('patient import end to end (PostgreSQL, Redis, @google-cloud/storage against the stand-in)', () => {
  it('happy path: patient, consent, ledger, backup, object deleted, one staff email, one patient.created event', async () => {
    const reg = plainRegistration({ vorname: 'Jürgen', nachname: 'Groß-Müller', token: 'aa11bb22cc33dd44', patch: (r) => ((r.patient_data as Row).hobby = 'Schach') });
    const { name, generation } = await upload(h, reg);
    const row = await settled(h, name, generation);
    expect(row).toMatchObject({ status: 'deleted', delete_outcome: 'deleted', attempts: 1, error_code: null, validation: 'valid (unsigned)', source_uri: `gs://${BUCKET}/${name}` });
    expect(row.unknown_fields).toEqual(['patient_data.hobby']);
    for (const k of ['received_at', 'downloaded_at', 'backed_up_at', 'imported_at', 'delete_requested_at', 'deleted_at']) expect(row[k], k).toBeTruthy();
    expect(row.failed_at).toBeNull();

    const [patient] = await database.sql`select * from patient_service.patienten where id = ${row.patient_id as number}`;
    expect(patient).toMatchObject({ vorname: 'Jürgen', nachname: 'Groß-Müller', zahlungsreferenz: 'aa11bb22', status: 'offen', vertraege_unterschrieben: true, zahlung_eingegangen: false, plz: '52062' });
    expect(patient!.symptome).toEqual(['Schlafstörungen', 'Ängste / Panikattacken']);
    const consents = await database.sql`select * from fleet.patient_consents where patient_id = ${row.patient_id as number}`;
    expect(consents).toHaveLength(1);
    expect(consents[0]).toMatchObject({ registration_token: 'aa11bb22cc33dd44', ip_address: '37.201.29.143', voucher_booking: false, ledger_id: row.id });
    expect(consents[0]!.metadata).toEqual((reg as Row).consent_metadata);

    expect(existsSync(row.backup_path as string)).toBe(true);
    expect(await readFile(row.backup_path as string)).toEqual(fileBytes(reg));
    expect((row.backup_path as string).startsWith(h.backupDir)).toBe(true);
    expect(h.standIn.getObject(BUCKET, name)).toBeUndefined();

    const mails = await deliveriesOf(`patient-import.%.ledger.${row.id}`);
    expect(mails).toHaveLength(1);
    expect(mails[0]).toMatchObject({ kind: 'staff.patient-imported', to_address: 'info@curavani.com', patient_id: row.patient_id });
    expect(mails[0]!.text).toContain('Jürgen Groß-Müller');
    expect(mails[0]!.text).toContain(`gs://${BUCKET}/${name}`);
    expect(mails[0]!.text).toContain('gültig (nicht signiert)');
    const events = await database.sql`select * from fleet.outbox where event_type = 'patient.created' and key = ${String(row.patient_id)}`;
    expect(events).toHaveLength(1);
    expect(events[0]!.payload).toEqual({ patientId: row.patient_id, importId: Number(row.id), source: 'registration' });
    expect(await failedEventsOf(row.id)).toHaveLength(0);
    // An email-send job was enqueued for the delivery after the commit.
    expect(await h.ctx.queues.queue('email').getJob(`email-send.delivery.${mails[0]!.id}`)).toBeTruthy();
  });

  const invalid: Array<[string, () => { doc: unknown; name?: string }, string, string]> = [
    ['a bad enum', () => ({ doc: plainRegistration({ patch: (r) => ((r.patient_data as Row).anrede = 'Divers') }) }), 'validation_failed', 'patient_data.anrede: expected one of Herr, Frau, got the string "Divers"'],
    ['a missing required field', () => ({ doc: plainRegistration({ patch: (r) => delete (r.patient_data as Row).geschlecht }) }), 'validation_failed', 'patient_data.geschlecht: required: one of männlich, weiblich, divers, keine_Angabe'],
    ['7 symptoms', () => ({ doc: plainRegistration({ patch: (r) => ((r.patient_data as Row).symptome = SYMPTOMS.slice(3, 10)) }) }), 'validation_failed', 'patient_data.symptome: expected 1 to 6 entries, got 7'],
    ['a string for symptome', () => ({ doc: plainRegistration({ patch: (r) => ((r.patient_data as Row).symptome = 'Mobbing') }) }), 'validation_failed', 'patient_data.symptome: expected a list of 1 to 6 symptoms, got the string "Mobbing"'],
    ['broken JSON', () => ({ doc: '{"patient_data": {"anrede": "Herr",', name: `${PREFIX}Kaputt_Karl_20250705_deadbeef.json` }), 'invalid_json', 'file: not valid JSON'],
    // JSON.parse gives no position for an unexpected token: these were reported as "the file ends too early or is empty".
    ['a Python True for a boolean', () => ({ doc: '{"patient_data": {"anrede": "Herr", "erfahrung_mit_psychotherapie": True}}', name: `${PREFIX}Kaputt_Karl_20250705_deadbee1.json` }), 'invalid_json', 'file: not valid JSON (error at character 68)'],
    ['a trailing comma in a list', () => ({ doc: '{"patient_data": {"symptome": ["Mobbing",]}}', name: `${PREFIX}Kaputt_Karl_20250705_deadbee2.json` }), 'invalid_json', 'file: not valid JSON (error at character 41)'],
    ['a file cut off', () => ({ doc: '{"patient_data": {"anrede": "Herr", "vorname": "Ka', name: `${PREFIX}Kaputt_Karl_20250705_deadbee3.json` }), 'invalid_json', 'file: not valid JSON (the file ends too early)'],
    ['an empty file', () => ({ doc: ' \n', name: `${PREFIX}Kaputt_Karl_20250705_deadbee4.json` }), 'invalid_json', 'file: not valid JSON (the file is empty)'],
    ['a wrong file name', () => ({ doc: plainRegistration(), name: `${PREFIX}anmeldung-final.json` }), 'bad_file_name', 'file name: expected {nachname}_{vorname}_{date}_{token}.json'],
    ['a date part that is not a date', () => ({ doc: plainRegistration({ token: 'dd11ee22ff334455' }), name: `${PREFIX}Mustermann_Max_2025075_dd11ee22.json` }), 'bad_file_name', 'file name: expected {nachname}_{vorname}_{date}_{token}.json (the date part "2025075" is not YYYYMMDD or YYYY-MM-DD)'],
    ['a NUL character in telefon', () => ({ doc: plainRegistration({ patch: (r) => ((r.patient_data as Row).telefon = '0241\u0000') }) }), 'validation_failed', 'patient_data.telefon: contains a NUL character (\\u0000), which cannot be stored'],
    ['an unpaired surrogate in hausarzt', () => ({ doc: plainRegistration({ patch: (r) => ((r.patient_data as Row).hausarzt = 'Dr. \ud800') }) }), 'validation_failed', 'patient_data.hausarzt: contains an unpaired surrogate (not valid Unicode), which cannot be stored'],
    ['a NUL character in consent_metadata', () => ({ doc: plainRegistration({ patch: (r) => ((r.consent_metadata as Row).user_agent = 'Mozilla\u0000') }) }), 'validation_failed', 'consent_metadata.user_agent: contains a NUL character (\\u0000), which cannot be stored'],
    ['nesting 20,000 levels deep', () => {
      const reg = plainRegistration({ vorname: 'Karl', patch: (r) => ((r.consent_metadata as Row).extra = '') });
      return { doc: JSON.stringify(reg).replace('"extra":""', `"extra":${'['.repeat(20_000)}${']'.repeat(20_000)}`), name: objectNameFor(reg, PREFIX) };
    }, 'invalid_json', 'file: nested more than 512 levels deep'],
    ['a Latin-1 file', () => {
      const reg = plainRegistration({ vorname: 'Jürgen', nachname: 'Weiß' });
      return { doc: Buffer.from(JSON.stringify(reg), 'latin1'), name: objectNameFor(reg, PREFIX) };
    }, 'not_utf8', 'file: not UTF-8 text'],
  ];

  it.each(invalid)('invalid file (%s): reason in the ledger and the DLQ, object kept, bytes saved, one staff email, no retries', async (_k, make, code, reason) => {
    const { doc, name: given } = make();
    const { name, generation } = await upload(h, doc, given);
    const row = await settled(h, name, generation);
    const vorname = typeof doc === 'string' ? 'Karl' : Buffer.isBuffer(doc) ? 'Jürgen' : String(((doc as Row).patient_data as Row).vorname);
    await expectFailedAsDesigned(h, row, { name, generation, code, reason, bytes: bytesOf(doc), never: [vorname] });
  });

  it('a file over REGISTRATION_FILE_MAX_MB is neither downloaded nor parsed: failed at once (file_too_large), object kept, one staff email', async () => {
    // A valid registration carrying 1.5 MB in a field the fleet does not know.
    const reg = plainRegistration({ vorname: 'Gustav', patch: (r) => (r.anhang = 'x'.repeat(1_500_000)) });
    const { name, generation } = await upload(h, reg);
    const row = await settled(h, name, generation);
    expect(row).toMatchObject({ status: 'failed', error_code: 'file_too_large', attempts: 1, patient_id: null, backup_path: null, failed_path: null });
    expect(row.reason).toBe(`ledger ${row.id}: file: 1.4 MB, more than REGISTRATION_FILE_MAX_MB=1 allows (a registration is a few KB), not read`);
    expect(h.standIn.getObject(BUCKET, name)?.generation).toBe(generation);
    const dead = await until(async () => (await listDeadLetters(h.ctx.queues, { queue: 'patient-import' })).find((d) => (d.data as Row).ledgerId === Number(row.id)));
    expect(dead).toMatchObject({ code: 'file_too_large', attemptsMade: 1 });
    const mails = await deliveriesOf(`patient-import.%.ledger.${row.id}`);
    expect(mails).toHaveLength(1);
    expect(mails[0]!.text).toContain('REGISTRATION_FILE_MAX_MB=1 erlaubt');
  });

  it('invalid file (bad signature with signing on) is treated the same way; a correctly signed file is imported', async () => {
    const good = signedRegistration(plainRegistration(), { secret: SECRET });
    const g = await upload(signedH, good, objectNameFor((good.data as Row), PREFIX), 'signed-bucket');
    const okRow = await settled(signedH, g.name, g.generation);
    expect(okRow).toMatchObject({ status: 'deleted', validation: 'valid (signed, signature verified)' });

    const forged = signedRegistration(plainRegistration(), { secret: 'not-the-secret' });
    const f = await upload(signedH, forged, objectNameFor((forged.data as Row), PREFIX), 'signed-bucket');
    const row = await settled(signedH, f.name, f.generation);
    await expectFailedAsDesigned(signedH, row, { ...f, bucket: 'signed-bucket', code: 'bad_signature', reason: 'signature: does not match the content', bytes: fileBytes(forged) });
  });

  it('storage failing on every attempt: the row is marked failed (gave_up) with exactly one import.failed event', async () => {
    const reg = plainRegistration({ token: '9a9a9a9a12345678' });
    const { name, generation } = await upload(h, reg);
    const attempts = catalog['patient-import'].retry.attempts;
    h.standIn.fail({ kind: 'download', mode: { status: 503 }, times: attempts, object: name });
    const row = await settled(h, name, generation, ['deleted', 'failed']);
    expect(row).toMatchObject({ status: 'failed', error_code: 'gave_up', attempts });
    const events = await failedEventsOf(row.id);
    expect(events).toHaveLength(1);
    expectImportFailedEvent(events[0]!, row, { code: 'gave_up', attempts, never: [String((reg.patient_data as Row).nachname)] });
  });

  it('storage failing twice, then recovering: one patient, object deleted', async () => {
    const reg = plainRegistration();
    const { name, generation } = await upload(h, reg);
    h.standIn.fail({ kind: 'download', mode: { status: 503 }, times: 2, object: name });
    const row = await settled(h, name, generation, ['deleted', 'failed']);
    expect(row).toMatchObject({ status: 'deleted', attempts: 3 });
    expect(await database.sql`select id from patient_service.patienten where zahlungsreferenz = ${(reg.registration_token as string).slice(0, 8)}`).toHaveLength(1);
    expect(h.standIn.getObject(BUCKET, name)).toBeUndefined();
    expect(await deliveriesOf(`patient-import.%.ledger.${row.id}`)).toHaveLength(1);
    expect(await failedEventsOf(row.id)).toHaveLength(0);
  });

  it('the delete failing twice after the commit: no second patient or email, object deleted', async () => {
    const reg = plainRegistration();
    const { name, generation } = await upload(h, reg);
    h.standIn.fail({ kind: 'delete', mode: { status: 500 }, times: 2, object: name });
    const row = await settled(h, name, generation, ['deleted', 'failed']);
    expect(row).toMatchObject({ status: 'deleted', attempts: 3 });
    expect(await database.sql`select id from patient_service.patienten where zahlungsreferenz = ${(reg.registration_token as string).slice(0, 8)}`).toHaveLength(1);
    expect(await deliveriesOf(`patient-import.%.ledger.${row.id}`)).toHaveLength(1);
    expect(await database.sql`select 1 from fleet.outbox where event_type = 'patient.created' and key = ${String(row.patient_id)}`).toHaveLength(1);
  });

  it('the delete failing on every attempt after the commit: a dead letter that says only the delete is left; its requeue deletes the object and imports nothing again', async () => {
    const { requeueOne, withRequeueAdvice } = await import('../../libs/ops/dead-letters.js');
    const { patientImportDeadLetterHook } = await import('./dead-letters.js');
    const reg = plainRegistration();
    const { name, generation } = await upload(h, reg);
    const attempts = catalog['patient-import'].retry.attempts;
    h.standIn.fail({ kind: 'delete', mode: { status: 503 }, times: 1_000, object: name });
    await h.poll();
    const row = await until(async () => ledgerOf(name, generation), 20_000, `ledger row of ${name}`);
    const dead = await until(async () => (await listDeadLetters(h.ctx.queues, { queue: 'patient-import' })).find((d) => (d.data as Row).ledgerId === Number(row.id)));
    expect(await ledger(row.id as number)).toMatchObject({ status: 'imported', attempts });
    expect(h.standIn.getObject(BUCKET, name)).toBeDefined();
    const [advised] = await withRequeueAdvice({ db: h.ctx.database.db, hooks: { 'patient-import': patientImportDeadLetterHook } }, [dead]);
    const patientId = (await ledger(row.id as number)).patient_id;
    expect(advised?.requeueAdvice).toBe(
      `Imported as patient ${patientId}: only removing the file from the bucket is left. A requeue of patient-import.ledger.${row.id} does that and imports nothing again; a discard leaves the file, with its personal data, in the bucket, to be deleted by hand.`,
    );

    h.standIn.clearFaults();
    await requeueOne({ db: h.ctx.database.db, queues: h.ctx.queues, hooks: { 'patient-import': patientImportDeadLetterHook } }, dead.id, { actor: 'test', reason: 'storage is back' });
    await until(async () => ((await ledger(row.id as number)).status === 'deleted') || undefined, 20_000, 'requeued row deleted');
    expect(await ledger(row.id as number)).toMatchObject({ status: 'deleted', delete_outcome: 'deleted', patient_id: patientId });
    expect(h.standIn.getObject(BUCKET, name)).toBeUndefined();
    expect(await database.sql`select id from patient_service.patienten where zahlungsreferenz = ${(reg.registration_token as string).slice(0, 8)}`).toHaveLength(1);
    expect(await deliveriesOf(`patient-import.%.ledger.${row.id}`)).toHaveLength(1);
    expect(await database.sql`select 1 from fleet.outbox where event_type = 'patient.created' and key = ${String(patientId)}`).toHaveLength(1);
  });

  it('the database failing twice, then recovering: one patient, object deleted', async () => {
    await database.sql.unsafe(`
      create sequence if not exists public.inject_fail_seq;
      create or replace function public.inject_fail() returns trigger language plpgsql as $$
      begin
        if nextval('public.inject_fail_seq') <= 2 then raise exception 'injected database failure'; end if;
        return new;
      end $$;
      create trigger inject_fail before insert on patient_service.patienten for each row execute function public.inject_fail();`);
    try {
      const reg = plainRegistration();
      const { name, generation } = await upload(h, reg);
      const row = await settled(h, name, generation, ['deleted', 'failed']);
      expect(row).toMatchObject({ status: 'deleted', attempts: 3 });
      expect(await database.sql`select id from patient_service.patienten where zahlungsreferenz = ${(reg.registration_token as string).slice(0, 8)}`).toHaveLength(1);
      expect(h.standIn.getObject(BUCKET, name)).toBeUndefined();
      expect(await deliveriesOf(`patient-import.%.ledger.${row.id}`)).toHaveLength(1);
    } finally {
      await database.sql.unsafe('drop trigger inject_fail on patient_service.patienten');
    }
  });

  it('same registration token uploaded again: no second patient, no second email', async () => {
    const reg = plainRegistration({ token: 'feedc0de12345678' });
    const first = await upload(h, reg);
    const one = await settled(h, first.name, first.generation);
    const again = await upload(h, reg); // the same name: a new generation
    const two = await settled(h, again.name, again.generation);
    expect(two).toMatchObject({ status: 'deleted', duplicate_kind: 'same_token', duplicate_of_patient_id: one.patient_id, patient_id: null });
    expect(await database.sql`select id from patient_service.patienten where zahlungsreferenz = 'feedc0de'`).toHaveLength(1);
    expect(await deliveriesOf(`patient-import.%.ledger.${two.id}`)).toHaveLength(0);
    expect(h.standIn.getObject(BUCKET, again.name)).toBeUndefined();
    expect(two.differing_fields).toBeNull();
  });

  // It was recorded `duplicate (same_token)` and deleted from the bucket, and no one was told.
  it('same registration token uploaded again with other content: no second patient, the changed fields (names only) recorded and staff emailed', async () => {
    const reg = plainRegistration({ token: 'c4a49ed012345678' });
    const first = await upload(h, reg);
    const one = await settled(h, first.name, first.generation);
    const changed = structuredClone(reg);
    (changed.patient_data as Row).telefon = '+49 170 5550001';
    (changed.patient_data as Row).ort = 'Köln';
    const again = await upload(h, changed);
    const two = await settled(h, again.name, again.generation);
    expect(two).toMatchObject({ status: 'deleted', duplicate_kind: 'same_token', duplicate_of_patient_id: one.patient_id, patient_id: null, differing_fields: ['ort', 'telefon'], differing_compared_with: 'import' });
    expect(await database.sql`select telefon from patient_service.patienten where id = ${one.patient_id as number}`).toEqual([{ telefon: '+49 241 123456' }]);
    const mails = await deliveriesOf(`patient-import.%.ledger.${two.id}`);
    expect(mails.map((m) => m.kind)).toEqual(['staff.patient-duplicate']);
    expect(mails[0]!.text).toContain(`mit anderen Angaben als beim ersten Import in: ort, telefon. Patient ${one.patient_id} wurde nicht geändert`);
    expect(mails[0]!.text).not.toContain('5550001');
    // The patient is not emailed again: no delivery other than the staff one.
    expect(await database.sql`select 1 from fleet.deliveries where patient_id = ${one.patient_id as number} and kind not like 'staff.%'`).toHaveLength(0);
  });

  // Staff corrected the patient after the import; the identical file uploaded again was compared with the
  // corrected row: "differs in: telefon", and staff were asked to update the patient, i.e. to undo their correction.
  it('same registration again after staff corrected the patient: compared with what the import wrote, not with the corrected row', async () => {
    const reg = plainRegistration({ token: 'd16e57a012345678' });
    const first = await upload(h, reg);
    const one = await settled(h, first.name, first.generation);
    expect(Object.keys(one.field_digests as Row).sort()).toContain('telefon');
    expect(JSON.stringify(one.field_digests)).not.toContain('123456');
    await database.sql`update patient_service.patienten set telefon = '+49 241 999888' where id = ${one.patient_id as number}`;

    const same = await upload(h, reg);
    const two = await settled(h, same.name, same.generation);
    expect(two).toMatchObject({ status: 'deleted', duplicate_kind: 'same_token', duplicate_of_patient_id: one.patient_id, differing_fields: null });
    expect(await deliveriesOf(`patient-import.%.ledger.${two.id}`)).toHaveLength(0);

    const changed = structuredClone(reg);
    (changed.patient_data as Row).email = 'max.neu@example.org';
    const again = await upload(h, changed);
    const three = await settled(h, again.name, again.generation);
    expect(three).toMatchObject({ duplicate_kind: 'same_token', differing_fields: ['email'], differing_compared_with: 'import' });
    const mails = await deliveriesOf(`patient-import.%.ledger.${three.id}`);
    expect(mails.map((m) => m.kind)).toEqual(['staff.patient-duplicate']);
    expect(mails[0]!.text).toContain(`mit anderen Angaben als beim ersten Import in: email. Patient ${one.patient_id} wurde nicht geändert`);
    expect(mails[0]!.text).not.toContain('max.neu');
    expect(await database.sql`select telefon from patient_service.patienten where id = ${one.patient_id as number}`).toEqual([{ telefon: '+49 241 999888' }]);
    expect(await database.sql`select id from patient_service.patienten where zahlungsreferenz = 'd16e57a0'`).toHaveLength(1);
  });

  // Imported before the digests were recorded: only the patient row as it is now is there to compare with.
  it('same registration again, its import recorded no digests: compared with the patient as it is now, and worded so', async () => {
    const reg = plainRegistration({ token: 'f0a11bac12345678' });
    const first = await upload(h, reg);
    const one = await settled(h, first.name, first.generation);
    await database.sql`update fleet.patient_import_ledger set field_digests = null where id = ${one.id as number}`;
    await database.sql`update patient_service.patienten set telefon = '+49 241 999777' where id = ${one.patient_id as number}`;
    const same = await upload(h, reg);
    const two = await settled(h, same.name, same.generation);
    expect(two).toMatchObject({ duplicate_kind: 'same_token', differing_fields: ['telefon'], differing_compared_with: 'patient' });
    const mails = await deliveriesOf(`patient-import.%.ledger.${two.id}`);
    expect(mails.map((m) => m.kind)).toEqual(['staff.patient-duplicate']);
    expect(mails[0]!.text).toContain(`anders als Patient ${one.patient_id} in seinem heutigen Stand: telefon`);
    expect(mails[0]!.text).toContain('seit dem Import von Hand korrigiert');
    expect(mails[0]!.text).not.toContain('999777');
    expect(mails[0]!.text).not.toContain('123456');
  });

  // The reviewer's file: its token shares its first 8 characters (the payment reference, the name's token part) with
  // patient 1's. It failed rightly, but the dead letter and `imports show` called patient 1's import "the same
  // registration", told staff to discard it, and `dlq requeue` refused for that reason.
  it('a payment reference taken by another registration: failed with its own token recorded, never linked to that registration, resolved by hand', async () => {
    const one = await upload(h, plainRegistration({ vorname: 'One', nachname: 'Patient', token: 'c001ea16f0ad4e21aa' }));
    const rOne = await settled(h, one.name, one.generation);
    expect(rOne).toMatchObject({ status: 'deleted', registration_token: 'c001ea16f0ad4e21aa' });
    const other = await upload(h, plainRegistration({ vorname: 'Person', nachname: 'Other', token: 'c001ea16zz77bb01' }));
    const rOther = await settled(h, other.name, other.generation);
    expect(rOther).toMatchObject({ status: 'failed', error_code: 'zahlungsreferenz_taken', registration_token: 'c001ea16zz77bb01' });
    const { withRequeueAdvice } = await import('../../libs/ops/dead-letters.js');
    const { patientImportDeadLetterHook } = await import('./dead-letters.js');
    const entries = await withRequeueAdvice({ db: h.ctx.database.db, hooks: { 'patient-import': patientImportDeadLetterHook } }, await listDeadLetters(h.ctx.queues));
    const entry = entries.find((e) => (e.data as { ledgerId: number }).ledgerId === Number(rOther.id))!;
    expect(entry.requeueAdvice).not.toContain('same registration token');
    expect(entry.requeueAdvice).toContain('A requeue does not help: its payment reference');
    expect(entry.requeueFutile).toBe(true);
    // The staff email: the reason in German, the patient holding the reference named.
    const [mail] = await deliveriesOf(`patient-import.failed.ledger.${rOther.id}`);
    expect(mail!.text).toContain(`Zahlungsreferenz c001ea16 hat schon Patient ${rOne.patient_id} (eine andere Anmeldung)`);
    expect(mail!.text).toContain(`hat schon Patient ${rOne.patient_id}, aus einer anderen Anmeldung`);
  });

  it('a job run on a row already final (a stale requeue, the same local file imported again) counts no attempt', async () => {
    const { name, generation } = await upload(h, plainRegistration({ token: 'a77e3971abcdef01' }));
    const row = await settled(h, name, generation);
    expect(row).toMatchObject({ status: 'deleted', attempts: 1 });
    const store = pgImportStore({ db: h.ctx.database.db, clock: h.ctx.clock, mail: { from: 'fleet@curavani.com', staffEmail: 'info@curavani.com' } });
    expect(await store.startAttempt(Number(row.id))).toMatchObject({ status: 'deleted' });
    // `fleet imports show` said "attempts: 3" for a file imported once and then twice "nothing done"
    expect(await ledger(row.id as number)).toMatchObject({ attempts: 1, last_attempt_at: row.last_attempt_at, updated_at: row.updated_at });
  });

  it('same email and name (other token): recorded as a duplicate, staff told; same email with another name: imported, flagged', async () => {
    const email = 'Erika.Muster@Example.org';
    const a = await upload(h, plainRegistration({ vorname: 'Erika', nachname: 'Muster', email }));
    const ra = await settled(h, a.name, a.generation);
    const b = await upload(h, plainRegistration({ vorname: ' erika', nachname: 'MUSTER ', email: ' erika.muster@example.org', token: 'cccccccc1234abcd' }), `${PREFIX}MUSTER_erika_20250706_${'c'.repeat(8)}.json`);
    const rb = await settled(h, b.name, b.generation);
    expect(rb).toMatchObject({ status: 'deleted', duplicate_kind: 'same_person', duplicate_of_patient_id: ra.patient_id });
    const mails = await deliveriesOf(`patient-import.%.ledger.${rb.id}`);
    expect(mails.map((m) => m.kind)).toEqual(['staff.patient-duplicate']);
    expect(await database.sql`select 1 from fleet.patient_consents where patient_id = ${ra.patient_id as number}`).toHaveLength(2);
    const c = await upload(h, plainRegistration({ vorname: 'Hans', nachname: 'Muster', email }));
    const rc = await settled(h, c.name, c.generation);
    expect(rc).toMatchObject({ status: 'deleted', possible_duplicate_of_patient_id: ra.patient_id });
    expect(rc.patient_id).not.toBe(ra.patient_id);
    expect((await deliveriesOf(`patient-import.%.ledger.${rc.id}`))[0]!.text).toContain(`Mögliches Duplikat: Patient ${ra.patient_id}`);
  });

  it('a file name as PHP urlencode writes it (+ for spaces, .JSON) is imported', async () => {
    const reg = plainRegistration({ vorname: 'Anna Maria', nachname: 'van der Berg', token: '74de009acafe0123' });
    const { name, generation } = await upload(h, reg, `${PREFIX}van+der+Berg_Anna+Maria_20250705_74de009a.JSON`);
    const row = await settled(h, name, generation);
    expect(row).toMatchObject({ status: 'deleted', error_code: null });
    const [patient] = await database.sql`select vorname, nachname from patient_service.patienten where id = ${row.patient_id as number}`;
    expect(patient).toEqual({ vorname: 'Anna Maria', nachname: 'van der Berg' });
  });

  it('stores consent_metadata exactly as the file carried it; the consent columns hold the parsed values', async () => {
    const reg = plainRegistration({
      patch: (r) => {
        const c = r.consent_metadata as Row;
        c.ip_address = '';
        c.user_agent = '  Mozilla  ';
        delete c.voucher_booking;
        c.form_version = 3;
      },
    });
    const { name, generation } = await upload(h, reg);
    const row = await settled(h, name, generation);
    expect(row.status).toBe('deleted');
    const [consent] = await database.sql`select * from fleet.patient_consents where ledger_id = ${row.id as number}`;
    expect(consent!.metadata).toEqual({ ip_address: '', user_agent: '  Mozilla  ', timestamp_utc: '2025-07-05T14:33:55Z', form_version: 3 });
    expect(Object.keys(consent!.metadata as Row)).not.toContain('voucher_booking');
    expect(consent).toMatchObject({ ip_address: null, user_agent: 'Mozilla', voucher_booking: false });
    expect(new Date(consent!.consented_at as string).toISOString()).toBe('2025-07-05T14:33:55.000Z');
  });

  it('internationalised email addresses: imported, and the same person again (other case, decomposed umlauts, SS for ß) is a duplicate', async () => {
    const a = await upload(h, plainRegistration({ vorname: 'Jörg', nachname: 'Weiß', email: 'JÖRG@MÜLLER.DE' }));
    const ra = await settled(h, a.name, a.generation);
    expect(ra.status).toBe('deleted');
    const b = await upload(h, plainRegistration({ vorname: 'jo\u0308rg', nachname: 'WEISS', email: 'jo\u0308rg@mu\u0308ller.de', token: 'eeee1111ffff2222' }), `${PREFIX}WEISS_J%C3%B6rg_20250706_eeee1111.json`);
    const rb = await settled(h, b.name, b.generation);
    expect(rb).toMatchObject({ status: 'deleted', duplicate_kind: 'same_person', duplicate_of_patient_id: ra.patient_id });
    const c = await upload(h, plainRegistration({ email: 'max@example.xn--p1ai' }));
    expect(await settled(h, c.name, c.generation)).toMatchObject({ status: 'deleted', error_code: null });
  });

  it('a stored email in capitals beyond ASCII is the same address on a database whose collation lowers ASCII only (C)', async () => {
    await database.sql`alter table patient_service.patienten alter column email type text collate "C"`;
    try {
      const a = await upload(h, plainRegistration({ vorname: 'Özlem', nachname: 'Çelik', email: 'özlem.çelik@example.org', token: 'c0c0c0c0aaaa1111' }));
      const ra = await settled(h, a.name, a.generation);
      // Staff typed it in capitals.
      await database.sql`update patient_service.patienten set email = 'ÖZLEM.ÇELIK@EXAMPLE.ORG' where id = ${ra.patient_id as number}`;
      const b = await upload(h, plainRegistration({ vorname: 'Özlem', nachname: 'Çelik', email: 'Özlem.Çelik@example.org', token: 'c0c0c0c0bbbb2222' }));
      const rb = await settled(h, b.name, b.generation);
      expect(rb).toMatchObject({ status: 'deleted', duplicate_kind: 'same_person', duplicate_of_patient_id: ra.patient_id });
    } finally {
      await database.sql`alter table patient_service.patienten alter column email type text collate "default"`;
    }
  });

  it.each([
    ['a trailing tab', (e: string) => `${e}\t`],
    ['a no-break space at both ends', (e: string) => `\u00a0${e}\u00a0`],
    ['a line break and an ideographic space', (e: string) => `\r\n${e}\u3000`],
  ])('a stored email with %s (entered by staff) is the same person', async (_k, pad) => {
    const token = randomBytes(8).toString('hex');
    const email = `staff.${token}@example.org`;
    const a = await upload(h, plainRegistration({ vorname: 'Tabea', nachname: 'Leer', email }));
    const ra = await settled(h, a.name, a.generation);
    await database.sql`update patient_service.patienten set email = ${pad(email)} where id = ${ra.patient_id as number}`;
    const b = await upload(h, plainRegistration({ vorname: 'Tabea', nachname: 'Leer', email: ` ${email.toUpperCase()}` }));
    const rb = await settled(h, b.name, b.generation);
    expect(rb).toMatchObject({ status: 'deleted', duplicate_kind: 'same_person', duplicate_of_patient_id: ra.patient_id });
  });

  it('object replaced between import and delete: the delete precondition fails, the new generation is imported afterwards', async () => {
    const reg = plainRegistration({ token: 'ab12cd34ef567890' });
    const first = await upload(h, reg);
    const replacement = plainRegistration({ token: 'ab12cd34ef567890', patch: (r) => ((r.patient_data as Row).telefon = '+49 170 000') });
    let newGeneration = '';
    h.standIn.before('delete', (req, s) => {
      newGeneration = s.putObject(BUCKET, first.name, fileBytes(replacement)).generation;
      void req;
    });
    const one = await settled(h, first.name, first.generation);
    expect(one).toMatchObject({ status: 'superseded', delete_outcome: 'precondition_failed' });
    expect(one.finished_at, 'the time it became final (its copies are kept from here)').toBeTruthy();
    expect(one.deleted_at).toBeNull();
    expect(h.standIn.getObject(BUCKET, first.name)?.generation).toBe(newGeneration);
    const two = await settled(h, first.name, newGeneration);
    expect(two).toMatchObject({ status: 'deleted', duplicate_kind: 'same_token', duplicate_of_patient_id: one.patient_id });
    expect(existsSync(two.backup_path as string)).toBe(true);
    expect(await readFile(two.backup_path as string)).toEqual(fileBytes(replacement));
    expect(h.standIn.getObject(BUCKET, first.name)).toBeUndefined();
  });

  it('object replaced before its download: that generation is `replaced` (no failure, no email, no dead letter), the new one is imported', async () => {
    const reg = plainRegistration({ token: 'cd34ef567890ab12' });
    const first = await upload(h, reg);
    const replacement = plainRegistration({ token: 'cd34ef567890ab12', patch: (r) => ((r.patient_data as Row).telefon = '+49 170 111') });
    let newGeneration = '';
    h.standIn.before('download', (_req, s) => {
      newGeneration = s.putObject(BUCKET, first.name, fileBytes(replacement)).generation;
    });
    const one = await settled(h, first.name, first.generation, ['replaced', 'failed', 'deleted']);
    expect(one).toMatchObject({ status: 'replaced', patient_id: null, error_code: null, failed_path: null, backup_path: null });
    expect(one.reason).toBe(`replaced in the bucket by generation ${newGeneration} before it was downloaded; that upload is imported on its own`);
    expect(one.finished_at).toBeTruthy();
    const two = await settled(h, first.name, newGeneration);
    expect(two).toMatchObject({ status: 'deleted', duplicate_kind: null });
    const [patient] = await database.sql`select telefon from patient_service.patienten where id = ${two.patient_id as number}`;
    expect(patient!.telefon).toBe('+49 170 111');
    expect(await deliveriesOf(`patient-import.%.ledger.${one.id}`)).toHaveLength(0);
    expect((await listDeadLetters(h.ctx.queues, { queue: 'patient-import' })).some((d) => (d.data as Row).ledgerId === Number(one.id))).toBe(false);
  });

  it('object replaced before its download, and the newer upload imported and deleted by the fleet first: `replaced`, not "deleted by someone else"', async () => {
    // A backlog (Redis lost its queue, retries after a storage hiccup) can run the newer row first.
    const reg = plainRegistration({ token: '5ec0d0ffab12cd34' });
    const first = await upload(h, reg);
    const replacement = plainRegistration({ token: '5ec0d0ffab12cd34', patch: (r) => ((r.patient_data as Row).telefon = '+49 170 222') });
    let second = { name: '', generation: '' };
    h.standIn.before('download', async () => {
      second = await upload(h, replacement, first.name);
      await settled(h, second.name, second.generation);
    });
    const one = await settled(h, first.name, first.generation, ['replaced', 'failed', 'deleted']);
    const two = (await ledgerOf(second.name, second.generation))!;
    expect(two).toMatchObject({ status: 'deleted', duplicate_kind: null });
    expect(h.standIn.getObject(BUCKET, first.name)).toBeUndefined();
    expect(one).toMatchObject({ status: 'replaced', patient_id: null, error_code: null, failed_path: null });
    expect(one.reason).toBe(`replaced in the bucket by generation ${second.generation} before it was downloaded; that upload is imported on its own`);
    expect(await deliveriesOf(`patient-import.%.ledger.${one.id}`)).toHaveLength(0);
    expect((await listDeadLetters(h.ctx.queues, { queue: 'patient-import' })).some((d) => (d.data as Row).ledgerId === Number(one.id))).toBe(false);
  });

  it('object deleted by someone else before its download: failed for staff, with a reason that says so', async () => {
    const gone = await upload(h, plainRegistration({ token: 'ef567890ab12cd34' }));
    h.standIn.before('download', (_req, s) => void s.removeObject(BUCKET, gone.name));
    const row = await settled(h, gone.name, gone.generation);
    expect(row).toMatchObject({ status: 'failed', error_code: 'object_not_found', attempts: 1, failed_path: null });
    expect(row.reason).toBe(
      `ledger ${row.id}: generation ${gone.generation} is no longer in the bucket and no other upload of that name is: deleted before the fleet downloaded it (not by the fleet); ask for the registration to be uploaded again`,
    );
    const mails = await until(async () => {
      const m = await deliveriesOf(`patient-import.%.ledger.${row.id}`);
      return m.length ? m : undefined;
    });
    expect(mails).toHaveLength(1);
    expect(mails[0]!.text).toContain('nicht mehr im Bucket');
  });

  it('a listing error is an error, never an empty bucket: the poll job fails, is counted and retried', async () => {
    const listed = await upload(h, plainRegistration());
    h.standIn.fail({ kind: 'list', mode: { status: 503 }, times: 1 });
    await expect(h.poll()).rejects.toThrow(/gcs list failed/);
    // Through the bucket-poll job: the first attempt fails (counted), the retry lists and enqueues.
    await h.startPollWorker();
    h.standIn.fail({ kind: 'list', mode: { status: 503 }, times: 1 });
    const { jobId } = await h.ctx.queues.enqueue('bucket-poll', { trigger: 'manual' });
    const job = await until(async () => {
      const j = await h.ctx.queues.queue('bucket-poll').getJob(jobId);
      return j?.finishedOn ? j : undefined;
    });
    expect(job.attemptsMade).toBe(2);
    expect(job.returnvalue).toMatchObject({ trigger: 'manual', pages: 1 });
    expect(await h.ctx.metrics.registry.getSingleMetricAsString('fleet_jobs_failed_total')).toContain('queue="bucket-poll"');
    await until(async () => h.standIn.getObject(BUCKET, listed.name) === undefined || undefined); // imported by the retry's enqueue
  });

  it('a failed file is requeued by an operator: the ledger reopens and the import runs again', async () => {
    const { requeueOne } = await import('../../libs/ops/dead-letters.js');
    const { patientImportDeadLetterHook } = await import('./dead-letters.js');
    const doc = plainRegistration({ patch: (r) => ((r.patient_data as Row).plz = '123') });
    const { name, generation } = await upload(h, doc);
    const row = await settled(h, name, generation);
    expect(row.status).toBe('failed');
    // Someone fixes the file in place... no: the bucket object is what it is. Requeue runs it again and it fails again,
    // with still exactly one staff email.
    await requeueOne({ db: h.ctx.database.db, queues: h.ctx.queues, hooks: { 'patient-import': patientImportDeadLetterHook } }, `patient-import.ledger.${row.id}`, { actor: 'test', reason: 'retry', force: true }); // its advice says it cannot help: forced
    await until(async () => ((await ledger(row.id as number)).attempts === 2 && (await ledger(row.id as number)).status === 'failed') || undefined);
    expect(await deliveriesOf(`patient-import.failed.ledger.${row.id}`)).toHaveLength(1);
    // A reopened row that fails again is a new failure: a second import.failed event (one per failure, not per row).
    const events = await failedEventsOf(row.id);
    expect(events.map((e) => (e.payload as Row).attempts)).toEqual([1, 2]);
    expectImportFailedEvent(events[1]!, await ledger(row.id as number), { code: 'validation_failed', attempts: 2 });
  });

  it('a failed file requeued after a corrected upload of the same name was imported (and deleted): its durable copy is judged again, and the failed-folder copy stays on the row', async () => {
    const { requeueOne } = await import('../../libs/ops/dead-letters.js');
    const { patientImportDeadLetterHook } = await import('./dead-letters.js');
    const bad = plainRegistration({ token: 'c0ffee0123456789', patch: (r) => ((r.patient_data as Row).plz = '5207') });
    const { name, generation } = await upload(h, bad);
    const failed = await settled(h, name, generation);
    expect(failed).toMatchObject({ status: 'failed', error_code: 'validation_failed' });
    expect(failed.backup_path).toEqual(expect.any(String));
    expect(failed.failed_path).toEqual(expect.any(String));
    const failedReason = failed.reason as string;

    // The corrected upload: a new generation of the same name, imported and deleted from the bucket.
    const fixed = await upload(h, plainRegistration({ token: 'c0ffee0123456789' }), name);
    expect((await settled(h, name, fixed.generation)).status).toBe('deleted');
    expect(h.standIn.getObject(BUCKET, name)).toBeUndefined();

    await requeueOne({ db: h.ctx.database.db, queues: h.ctx.queues, hooks: { 'patient-import': patientImportDeadLetterHook } }, `patient-import.ledger.${failed.id}`, { actor: 'test', reason: 'retry', force: true });
    const again = await until(async () => {
      const r = await ledger(failed.id as number);
      return r.attempts === 2 && r.status === 'failed' ? r : undefined;
    });
    // Not "deleted before the fleet downloaded it; ask for a new upload": the copy the fleet kept was imported again and failed for its own reason.
    expect(again).toMatchObject({ error_code: 'validation_failed', reason: failedReason, failed_path: failed.failed_path, backup_path: failed.backup_path });
    // The reason web pages show: the same text without the value quoted from the file.
    expect(failedReason).toContain('"5207"');
    expect(again.reason_withheld).toBe(failedReason.replace('the string "5207"', 'the string (value not shown)'));
    expect(existsSync(again.failed_path as string)).toBe(true);
    expect(await deliveriesOf(`patient-import.failed.ledger.${failed.id}`)).toHaveLength(1);
  });

  it('the same failure recorded twice (a retry of a failed row): still one import.failed event', async () => {
    const doc = plainRegistration({ patch: (r) => ((r.patient_data as Row).symptome = SYMPTOMS.slice(0, 7)) });
    const { name, generation } = await upload(h, doc);
    const row = await settled(h, name, generation);
    expect(row.status).toBe('failed');
    const store = pgImportStore({ db: h.ctx.database.db, clock: h.ctx.clock, mail: { from: 'fleet@curavani.com', staffEmail: 'info@curavani.com' } });
    const again = { ledgerId: Number(row.id), code: 'validation_failed', reason: row.reason as string, reasonWithheld: row.reason_withheld as string, failedPath: row.failed_path as string, mail: { subject: 's', html: 'h', text: 't' } };
    await Promise.all([store.markFailed(again), store.markFailed(again)]);
    const events = await failedEventsOf(row.id);
    expect(events).toHaveLength(1);
    expectImportFailedEvent(events[0]!, row, { code: 'validation_failed', attempts: 1 });
  });

  it('the backup folder failing (EACCES, ENOSPC, EROFS...): logs, job failures, dead letter and ledger never carry the file name (the patient name)', async () => {
    const q = testQueuePrefix();
    cleanups.push(q.cleanup);
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', pretty: 'false' }, new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    const own = await startImportHarness({ databaseUrl: database.url, queuePrefix: q.prefix, log, env: { RETRY_BACKOFF_SCALE: '0.001' } });
    try {
      const reg = plainRegistration({ vorname: 'Ottilie', nachname: 'Quastenberg', token: 'f01de0f012345678' });
      const { name, generation } = await upload(own, reg);
      await own.poll();
      const recorded = (await ledgerOf(name, generation))!;
      // The backup copy's place is taken by a folder: every write of it fails (rename: EISDIR), as a
      // full, read-only or wrongly owned volume would, with Node's message naming the file.
      await mkdir(path.join(own.backupDir, safeFileName({ id: Number(recorded.id), objectName: name }), 'x'), { recursive: true });
      await own.startWorkers();
      // This file's (the poll also gives the failed rows of other tests in this database a dead letter under this prefix).
      const dead = await until(async () => (await listDeadLetters(own.ctx.queues, { queue: 'patient-import' })).find((d) => (d.data as Row).ledgerId === Number(recorded.id)), 30_000, 'dead letter');
      const row = await ledger(Number(recorded.id));
      expect(row).toMatchObject({ status: 'failed', error_code: 'gave_up' });
      expect(row.reason).toContain('EISDIR');
      expect(row.reason).toContain(own.backupDir);
      const job = await own.ctx.queues.queue('patient-import').getJob(`patient-import.ledger.${row.id}`);
      const stored = [JSON.stringify(dead), String(row.reason), JSON.stringify(job?.failedReason ?? ''), JSON.stringify(job?.stacktrace ?? []), ...lines];
      expect(lines.some((l) => l.includes('EISDIR'))).toBe(true);
      for (const text of stored) {
        expect(text).not.toMatch(/Quastenberg|Ottilie/);
      }
      expect(own.standIn.getObject(BUCKET, name)?.generation).toBe(generation);
    } finally {
      await own.close();
    }
  });

  it('a full disk (the backup and the failed folder both failing): on the last attempt the row is still recorded failed for staff, without the copy', async () => {
    const q = testQueuePrefix();
    cleanups.push(q.cleanup);
    const own = await startImportHarness({ databaseUrl: database.url, queuePrefix: q.prefix, env: { RETRY_BACKOFF_SCALE: '0.001' } });
    try {
      const reg = plainRegistration({ vorname: 'Ottilie', nachname: 'Vollplatte', token: 'f011d15c12345678' });
      const { name, generation } = await upload(own, reg);
      await own.poll();
      const id = Number((await ledgerOf(name, generation))!.id);
      // Every write of either copy fails (rename: EISDIR), as on a full volume (ENOSPC) both folders share.
      for (const dir of [own.backupDir, own.failedDir]) await mkdir(path.join(dir, safeFileName({ id, objectName: name }), 'x'), { recursive: true });
      await own.startWorkers();
      const dead = await until(async () => (await listDeadLetters(own.ctx.queues, { queue: 'patient-import' })).find((d) => (d.data as Row).ledgerId === id), 30_000, 'dead letter');
      const row = await until(async () => {
        const r = await ledger(id);
        return r.status === 'failed' ? r : undefined;
      }, 5_000, 'row failed');
      expect(row).toMatchObject({ error_code: 'gave_up', failed_path: null, attempts: catalog['patient-import'].retry.attempts });
      expect(row.reason).toContain(`; failed folder: the original bytes could not be kept there (EISDIR`);
      expect(row.reason).toContain(own.failedDir);
      expect(row.reason_withheld).toContain('; failed folder: the original bytes could not be kept there (EISDIR');
      const mails = await deliveriesOf(`patient-import.failed.ledger.${id}`);
      expect(mails).toHaveLength(1);
      expect(mails[0]!.text).toContain('die Originaldatei konnte dort nicht gesichert werden');
      expect(await failedEventsOf(id)).toHaveLength(1);
      for (const text of [JSON.stringify(dead), String(row.reason), String(row.reason_withheld)]) expect(text).not.toMatch(/Vollplatte|Ottilie/);
      expect(own.standIn.getObject(BUCKET, name)?.generation).toBe(generation);
    } finally {
      await own.close();
    }
  });

  it('the final attempt commits and then fails (e.g. the email enqueue): the row stays imported, no failure email or event', async () => {
    const q = testQueuePrefix();
    cleanups.push(q.cleanup);
    const own = await startImportHarness({ databaseUrl: database.url, queuePrefix: q.prefix, env: { RETRY_BACKOFF_SCALE: '0.001' } });
    try {
      // Stands for what follows the commit in the same attempt (enqueueing the staff email on Redis).
      await own.startWorkers({
        afterCommit: () => {
          throw new Error('redis went away after the commit');
        },
      });
      const reg = plainRegistration({ token: 'c0ffee0012345678' });
      const { name, generation } = await upload(own, reg);
      const attempts = catalog['patient-import'].retry.attempts;
      // Every attempt but the last fails before the commit; the last commits.
      own.standIn.fail({ kind: 'download', mode: { status: 503 }, times: attempts - 1, object: name });
      await own.poll();
      const id = Number((await ledgerOf(name, generation))!.id);
      // This file's job's dead letter, after its last attempt (the poll also gives the failed rows of other tests in this database one).
      await until(async () => (await listDeadLetters(own.ctx.queues, { queue: 'patient-import' })).find((d) => (d.data as Row).ledgerId === id), 30_000, 'dead letter');
      const row = (await ledgerOf(name, generation))!;
      expect(row).toMatchObject({ status: 'imported', attempts, error_code: null, failed_at: null });
      expect(await database.sql`select id from patient_service.patienten where zahlungsreferenz = 'c0ffee00'`).toHaveLength(1);
      expect(await deliveriesOf(`patient-import.failed.ledger.${row.id}`)).toHaveLength(0);
      expect(await deliveriesOf(`patient-import.staff.ledger.${row.id}`)).toHaveLength(1);
      expect(await failedEventsOf(row.id)).toHaveLength(0);
      expect(own.standIn.getObject(BUCKET, name)?.generation).toBe(generation); // only the delete is left
    } finally {
      await own.close();
    }
  });
});

async function expectFailedAsDesigned(
  harness: ImportHarness,
  row: Row,
  e: { name: string; generation: string; code: string; reason: string; bytes: Buffer; bucket?: string; never?: string[] },
) {
  expect(row).toMatchObject({ status: 'failed', error_code: e.code, attempts: 1 });
  expect(row.reason).toContain(`ledger ${row.id}: ${e.reason}`);
  const dead = await until(async () => (await listDeadLetters(harness.ctx.queues, { queue: 'patient-import' })).find((d) => (d.data as Row).ledgerId === Number(row.id)));
  expect(dead).toMatchObject({ code: e.code, attemptsMade: 1 });
  const withheld = e.reason.replace(/(the string|part) "[^"]*"/g, '$1 (value not shown)');
  expect(dead.reason).toContain(withheld);
  if (withheld !== e.reason) expect(dead.reason).not.toContain(e.reason);
  expect(harness.standIn.getObject(e.bucket ?? BUCKET, e.name)?.generation).toBe(e.generation);
  expect(await readFile(row.failed_path as string)).toEqual(e.bytes);
  expect((row.failed_path as string).startsWith(harness.failedDir)).toBe(true);
  const mails = await deliveriesOf(`patient-import.%.ledger.${row.id}`);
  expect(mails).toHaveLength(1);
  expect(mails[0]).toMatchObject({ kind: 'staff.patient-import-failed', to_address: 'info@curavani.com' });
  // The email gives the ledger's reason in German, issue by issue.
  for (const issue of registrationReasonIssuesDe(String(row.reason).slice(`ledger ${row.id}: `.length))) expect(mails[0]!.text).toContain(issue);
  expect(mails[0]!.text).not.toContain(e.reason);
  // Polling again neither re-enqueues the failed file nor sends another email: it records no
  // new row, and the row's job stays failed (a re-enqueue would have made it wait again).
  expect(await harness.poll()).toMatchObject({ recorded: 0 });
  expect(await harness.ctx.queues.queue('patient-import').getJobState(jobIdFor('patient-import', { ledgerId: Number(row.id) })!)).toBe('failed');
  await new Promise((r) => setTimeout(r, 200));
  const again = await ledger(row.id as number);
  expect(again).toMatchObject({ status: 'failed', attempts: 1 });
  expect(await deliveriesOf(`patient-import.%.ledger.${row.id}`)).toHaveLength(1);
  // Exactly one import.failed event, written with the failure, none added by the second poll.
  const events = await failedEventsOf(row.id);
  expect(events).toHaveLength(1);
  expectImportFailedEvent(events[0]!, again, { code: e.code, attempts: 1, never: [...(e.never ?? []), e.reason] });
}
