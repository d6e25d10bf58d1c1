import { describe, expect, it } from 'vitest';
import { insertLedgerObjects, updateLedgerRow } from '../../libs/db/repositories/patient-import.js';
import { withRequeueAdvice } from '../../libs/ops/dead-letters.js';
import { addDeadLetter, listDeadLetters } from '../../libs/queues/index.js';
import { useDatabaseAndQueues } from '../../libs/testing/db-and-queues.js';
import { patientImportDeadLetterHook } from './dead-letters.js';

const f = useDatabaseAndQueues();

/** A failed bucket row with `code` and its dead letter, as the worker leaves them. */
async function failedWithDeadLetter(objectName: string, generation: string, code: string, registrationToken: string | null = null): Promise<number> {
  const [id] = await insertLedgerObjects(f.db.db, [{ bucket: 'b', objectName, generation, sourceUri: `gs://b/${objectName}` }]);
  await updateLedgerRow(f.db.db, id!, { status: 'failed', errorCode: code, reason: `ledger ${id}: ${code}`, failedAt: new Date(), registrationToken });
  await deadLetterOf(id!, code);
  return id!;
}

async function deadLetterOf(id: number, code: string): Promise<void> {
  await addDeadLetter(f.t.queues, {
    originalQueue: 'patient-import',
    originalJobId: `patient-import.ledger.${id}`,
    name: 'patient-import',
    data: { ledgerId: id },
    reason: `ledger ${id}: ${code}`,
    code,
    attemptsMade: 1,
    enqueuedAt: null,
    failedAt: new Date().toISOString(),
  });
}

describe('patient import dead letters: what a requeue would do (/ops, fleet dlq list)', () => {
  // /ops offered "Requeue" for a file whose content is wrong with nothing said, and the requeued
  // job was back a moment later with the same reason; /imports said so, the dead-letter page did not.
  it('says where a requeue cannot help, and nothing where it can', async () => {
    const invalid = await failedWithDeadLetter('registrations/A_B_20250707_aaaaaaaa.json', '1', 'validation_failed');
    const badName = await failedWithDeadLetter('registrations/nope.json', '1', 'bad_file_name');
    const gaveUp = await failedWithDeadLetter('registrations/C_D_20250707_cccccccc.json', '1', 'gave_up');
    // Another patient holds the payment reference: every requeue failed the same way (it was advised as "requeue once fixed").
    const refTaken = await failedWithDeadLetter('registrations/Q_R_20250707_qqqqqqqq.json', '1', 'zahlungsreferenz_taken');
    // A corrected re-upload of the same name imported since: only the discard is left.
    const replaced = await failedWithDeadLetter('registrations/E_F_20250707_eeeeeeee.json', '1', 'validation_failed');
    const [newer] = await insertLedgerObjects(f.db.db, [{ bucket: 'b', objectName: 'registrations/E_F_20250707_eeeeeeee.json', generation: '2', sourceUri: 'gs://b/x' }]);
    await updateLedgerRow(f.db.db, newer!, { status: 'deleted', patientId: 4711 });

    const entries = await withRequeueAdvice({ db: f.db.db, hooks: { 'patient-import': patientImportDeadLetterHook } }, await listDeadLetters(f.t.queues));
    const advice = new Map(entries.map((e) => [(e.data as { ledgerId: number }).ledgerId, e.requeueAdvice]));
    expect(advice.get(invalid)).toBe(`A requeue does not help (the content is wrong): have a corrected file uploaded, then discard patient-import.ledger.${invalid}.`);
    expect(advice.get(badName)).toContain('A requeue does not help (the name does not fit)');
    expect(advice.get(gaveUp)).toBeUndefined();
    expect(advice.get(refTaken)).toContain('A requeue does not help: its payment reference');
    expect(entries.find((e) => (e.data as { ledgerId: number }).ledgerId === refTaken)?.requeueFutile).toBe(true);
    expect(advice.get(replaced)).toContain(`A newer upload of this file name was imported since: import record ${newer} (patient 4711;`);
  });

  // `fleet import patient-file` of the corrected file (same registration token) left the failed
  // record asking for a corrected upload, which then only made a same_token duplicate.
  it('links a failed record to a hand import or another upload of the same registration token', async () => {
    // The import records the content's token of a file that failed a field rule or the name rule.
    const failed = await failedWithDeadLetter('registrations/Beispiel_Jonas_20250707_5f3a1c88.json', '1', 'validation_failed', '5F3A1C88aa00bb11');
    const other = await failedWithDeadLetter('registrations/M_N_20250707_mmmmmmmm.json', '1', 'invalid_json');
    const renamed = await failedWithDeadLetter('registrations/O_P_2025077_oooooooo.json', '1', 'bad_file_name', 'oooooooo11223344');
    // Not JSON (its own token never read) and an import whose name carries the same token: linked, with a caveat.
    const unread = await failedWithDeadLetter('registrations/S_T_20250707_ssssssss.json', '1', 'invalid_json');
    const [byHand, underOtherName, sameNameToken] = await insertLedgerObjects(f.db.db, [
      { source: 'file', bucket: '(local file)', objectName: 'Beispiel_Jonas_20250707_5F3A1C88.json', generation: 'sha-1', sourceUri: 'file:///tmp/x.json' },
      { bucket: 'b', objectName: 'registrations/O_P_20250707_oooooooo.json', generation: '7', sourceUri: 'gs://b/o' },
      { bucket: 'b', objectName: 'registrations/S_U_20250707_ssssssss.json', generation: '3', sourceUri: 'gs://b/s' },
    ]);
    await updateLedgerRow(f.db.db, byHand!, { status: 'done', patientId: 5, registrationToken: '5F3A1C88aa00bb11' });
    await updateLedgerRow(f.db.db, underOtherName!, { status: 'duplicate', duplicateOfPatientId: 6, registrationToken: 'oooooooo11223344' });
    await updateLedgerRow(f.db.db, sameNameToken!, { status: 'deleted', patientId: 8, registrationToken: 'ssssssss55667788' });

    const entries = await withRequeueAdvice({ db: f.db.db, hooks: { 'patient-import': patientImportDeadLetterHook } }, await listDeadLetters(f.t.queues));
    const advice = new Map(entries.map((e) => [(e.data as { ledgerId: number }).ledgerId, e.requeueAdvice]));
    expect(advice.get(failed)).toBe(
      `This registration (same registration token) was imported by hand as import record ${byHand} (patient 5; fleet imports show ${byHand}). Nothing is left to import from this record: discard patient-import.ledger.${failed}.`,
    );
    expect(advice.get(renamed)).toBe(
      `An upload of this registration (same registration token) under another name was imported: import record ${underOtherName} (a duplicate of patient 6; fleet imports show ${underOtherName}). Nothing is left to import from this record: discard patient-import.ledger.${renamed}.`,
    );
    expect(advice.get(other)).toContain('A requeue does not help (the content is wrong)');
    expect(advice.get(unread)).toBe(
      `An upload under another name whose name carries the same registration token was imported: import record ${sameNameToken} (patient 8; fleet imports show ${sameNameToken}). This record's own registration token could not be read (it failed before that), so only the token in the file names matched: check that it is the same registration before you discard it. Nothing is left to import from this record: discard patient-import.ledger.${unread}.`,
    );
  });

  // A job that died twice (or ran out of retries on the delete) after its commit left a dead
  // letter with nothing said: it read as a registration that was not imported.
  it('says of a committed import that only the delete is left, and that a requeue imports nothing again', async () => {
    const [imported, duplicate, open] = await insertLedgerObjects(f.db.db, [
      { bucket: 'b', objectName: 'registrations/G_H_20250707_gggggggg.json', generation: '1', sourceUri: 'gs://b/g' },
      { bucket: 'b', objectName: 'registrations/I_J_20250707_iiiiiiii.json', generation: '1', sourceUri: 'gs://b/i' },
      { bucket: 'b', objectName: 'registrations/K_L_20250707_kkkkkkkk.json', generation: '1', sourceUri: 'gs://b/k' },
    ]);
    await updateLedgerRow(f.db.db, imported!, { status: 'imported', patientId: 4712 });
    await updateLedgerRow(f.db.db, duplicate!, { status: 'duplicate', duplicateOfPatientId: 4713 });
    await updateLedgerRow(f.db.db, open!, { status: 'backed_up' });
    for (const id of [imported!, duplicate!, open!]) await deadLetterOf(id, 'gave_up');

    const entries = await withRequeueAdvice({ db: f.db.db, hooks: { 'patient-import': patientImportDeadLetterHook } }, await listDeadLetters(f.t.queues));
    const advice = new Map(entries.map((e) => [(e.data as { ledgerId: number }).ledgerId, e.requeueAdvice]));
    expect(advice.get(imported!)).toBe(
      `Imported as patient 4712: only removing the file from the bucket is left. A requeue of patient-import.ledger.${imported} does that and imports nothing again; a discard leaves the file, with its personal data, in the bucket, to be deleted by hand.`,
    );
    expect(advice.get(duplicate!)).toMatch(/^Imported as a duplicate of patient 4713: only removing the file from the bucket is left\./);
    expect(advice.get(open!)).toBeUndefined();
  });
});
