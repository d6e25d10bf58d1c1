import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PermanentError } from '../../libs/errors/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { fixedClock } from '../../libs/runtime/clock.js';
import { fileBytes, objectNameFor, plainRegistration } from './fixtures.js';
import type { CommitInput, CommitOutcome, ImportDeps, ImportRow, ImportStore, StaffMail } from './ports.js';
import { processPatientImport } from './process-patient-import.js';

/** In-memory fakes of the ports: one ledger row, a bucket object, folders. */
function setup(doc: unknown, name = objectNameFor(doc as Record<string, unknown>)) {
  const bytes = fileBytes(doc);
  const row: ImportRow = {
    id: 1, source: 'bucket', bucket: 'b', objectName: name, generation: '7', sourceUri: `gs://b/${name}`,
    md5Hash: createHash('md5').update(bytes).digest('base64'), size: bytes.length, status: 'received', attempts: 0,
    patientId: null, duplicateOfPatientId: null, backupPath: null, failedPath: null, receivedAt: new Date(), deleteRequestedAt: null,
  };
  const state = { patients: [] as CommitInput[], mails: new Set<string>(), sent: [] as string[], objects: new Map([[name, bytes]]), backups: new Map<string, Buffer>(), failed: new Map<string, Buffer>(), failures: [] as string[], replacedReasons: [] as string[], current: new Map<string, string>([[name, '7']]), outcome: null as CommitOutcome | null, staffMails: [] as StaffMail[], newerInLedger: null as string | null, deleteOutcome: null as string | null };
  let failFinishes = 0;
  const store: ImportStore = {
    startAttempt: async () => {
      row.attempts++;
      return { ...row };
    },
    readRow: async () => ({ ...row }),
    markBackedUp: async (_id, info) => {
      row.status = 'backed_up';
      row.backupPath = info.backupPath;
    },
    commit: async (input) => {
      if (row.status === 'imported') return { outcome: { kind: 'imported', patientId: row.patientId!, possibleDuplicateOf: null }, deliveryIds: [] };
      state.patients.push(input);
      row.status = 'imported';
      row.patientId = state.patients.length;
      const outcome = state.outcome ?? { kind: 'imported' as const, patientId: row.patientId, possibleDuplicateOf: null };
      const mail = input.staffMail(outcome);
      if (mail) state.staffMails.push(mail);
      const ids = mail && !state.mails.has('staff') ? (state.mails.add('staff'), ['staff']) : [];
      return { outcome, deliveryIds: ids };
    },
    markFailed: async (input) => {
      row.status = 'failed';
      state.failures.push(input.reason);
      state.staffMails.push(input.mail);
      const created = !state.mails.has('failed');
      state.mails.add('failed');
      return { deliveryId: 'failed', created };
    },
    markDeleteRequested: async () => void (row.deleteRequestedAt = new Date()),
    markFinished: async (_id, status, deleteOutcome) => {
      if (failFinishes-- > 0) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
      row.status = status;
      state.deleteOutcome = deleteOutcome;
    },
    markReplaced: async (_id, reason) => {
      row.status = 'replaced';
      state.replacedReasons.push(reason);
    },
    newerGeneration: async () => state.newerInLedger,
  };
  let failDeletes = 0;
  const deps: ImportDeps = {
    store,
    source: {
      download: async (r) => {
        const b = state.objects.get(r.objectName);
        if (!b || state.current.get(r.objectName) !== r.generation) throw new PermanentError('object_not_found', 'object generation not found');
        return b;
      },
      currentGeneration: async (r) => state.current.get(r.objectName) ?? null,
      delete: async (r) => {
        if (failDeletes-- > 0) throw new Error('storage unavailable');
        // Like the bucket: only this generation is deleted.
        const current = state.current.get(r.objectName);
        if (current === undefined) return 'not_found';
        if (current !== r.generation) return 'precondition_failed';
        state.current.delete(r.objectName);
        return state.objects.delete(r.objectName) ? 'deleted' : 'not_found';
      },
    },
    backups: { save: async (r, b) => (state.backups.set(`/backup/${r.id}`, b), `/backup/${r.id}`), read: async (p) => state.backups.get(p) ?? null },
    failed: { save: async (r, b) => (state.failed.set(`${r.id}`, b), `/failed/${r.id}`), read: async () => null },
    sendMail: async (id) => void state.sent.push(id),
    signing: { environment: 'production' },
    staffImportEmails: true,
    clock: fixedClock('2026-11-24T10:00:00Z'),
    log: silentLogger(),
  };
  return { row, state, deps, failDeletesTimes: (n: number) => (failDeletes = n), failFinishesTimes: (n: number) => (failFinishes = n) };
}

describe('processPatientImport (in-memory ports)', () => {
  it('imports, emails staff once, deletes the object; a second run does nothing', async () => {
    const t = setup(plainRegistration());
    const r = await processPatientImport(1, t.deps);
    expect(r).toMatchObject({ outcome: 'imported', status: 'deleted', patientId: 1 });
    expect(t.state.objects.size).toBe(0);
    expect(t.state.backups.size).toBe(1);
    expect(t.state.sent).toEqual(['staff']);
    expect(await processPatientImport(1, t.deps)).toMatchObject({ outcome: 'already-final' });
    expect(t.state.patients).toHaveLength(1);
  });

  it('with staff import emails switched off: no notice of a new patient, but a possible duplicate is still reported', async () => {
    const plain = setup(plainRegistration());
    plain.deps.staffImportEmails = false;
    expect(await processPatientImport(1, plain.deps)).toMatchObject({ outcome: 'imported', status: 'deleted' });
    expect(plain.state.staffMails).toHaveLength(0);
    expect(plain.state.sent).toEqual([]);

    const flagged = setup(plainRegistration());
    flagged.deps.staffImportEmails = false;
    flagged.state.outcome = { kind: 'imported', patientId: 1, possibleDuplicateOf: 42 };
    await processPatientImport(1, flagged.deps);
    expect(flagged.state.sent).toEqual(['staff']);
    expect(flagged.state.staffMails[0]!.text).toContain('Mögliches Duplikat: Patient 42');
  });

  it('a paid voucher booking says so in the staff notice; as a duplicate it asks staff to check the existing patient', async () => {
    const imported = setup(plainRegistration({ voucher: true, token: 'abcdef0123456789' }));
    await processPatientImport(1, imported.deps);
    expect(imported.state.staffMails[0]!.text).toContain('Gutschein-Buchung');
    expect(imported.state.staffMails[0]!.text).toContain('V_abcdef');

    const duplicate = setup(plainRegistration({ voucher: true, token: 'abcdef0123456789' }));
    duplicate.state.outcome = { kind: 'duplicate', duplicateKind: 'same_person', patientId: 9 };
    await processPatientImport(1, duplicate.deps);
    const text = duplicate.state.staffMails[0]!.text;
    expect(text).toContain('bezahlte Gutschein-Buchung (Zahlungsreferenz V_abcdef)');
    expect(text).toContain('Der vorhandene Patient 9 wurde nicht geändert');

    const unpaid = setup(plainRegistration());
    unpaid.state.outcome = { kind: 'duplicate', duplicateKind: 'same_person', patientId: 9 };
    await processPatientImport(1, unpaid.deps);
    expect(unpaid.state.staffMails[0]!.text).not.toContain('Gutschein');
    // A duplicate created nothing: not "Importiert am".
    expect(unpaid.state.staffMails[0]!.text).toMatch(/^Erkannt am: +\d/m);
    expect(unpaid.state.staffMails[0]!.text).not.toContain('Importiert am');
  });

  // The same registration token with other content was dropped without a word (recorded `duplicate (same_token)`).
  it('the same registration again: silent when nothing differs, a staff email naming the changed fields (never their values) when something does', async () => {
    const retry = setup(plainRegistration());
    retry.state.outcome = { kind: 'duplicate', duplicateKind: 'same_token', patientId: 9 };
    await processPatientImport(1, retry.deps);
    expect(retry.state.staffMails).toEqual([]);

    const changed = setup(plainRegistration({ patch: (r) => ((r.patient_data as Record<string, unknown>).telefon = '+49 170 9999999') }));
    changed.state.outcome = { kind: 'duplicate', duplicateKind: 'same_token', patientId: 9, differingFields: ['telefon', 'email'], comparedWith: 'import' };
    await processPatientImport(1, changed.deps);
    expect(changed.state.staffMails).toHaveLength(1);
    const mail = changed.state.staffMails[0]!;
    expect(mail.subject).toContain('Anmeldung erneut hochgeladen, mit geänderten Angaben');
    expect(mail.text).toContain('mit anderen Angaben als beim ersten Import in: telefon, email. Patient 9 wurde nicht geändert');
    expect(mail.text).not.toContain('9999999');

    // Its import recorded no digests: compared with the patient as it is now, which staff may have corrected since.
    const older = setup(plainRegistration({ patch: (r) => ((r.patient_data as Record<string, unknown>).telefon = '+49 170 9999999') }));
    older.state.outcome = { kind: 'duplicate', duplicateKind: 'same_token', patientId: 9, differingFields: ['telefon'], comparedWith: 'patient' };
    await processPatientImport(1, older.deps);
    const fallback = older.state.staffMails[0]!;
    expect(fallback.subject).toContain('Angaben weichen vom Patienten ab');
    expect(fallback.text).toContain('anders als Patient 9 in seinem heutigen Stand: telefon');
    expect(fallback.text).toContain('seit dem Import von Hand korrigiert');
    expect(fallback.text).not.toContain('aktualisieren');
    expect(fallback.text).not.toContain('9999999');
  });

  it("the failure notice gives the reason in German without the log's 'ledger N:' prefix (the record number has its own line)", async () => {
    const bad = setup(plainRegistration({ patch: (r) => ((r.patient_data as Record<string, unknown>).plz = '123') }));
    await expect(processPatientImport(1, bad.deps)).rejects.toThrow('ledger 1: patient_data.plz: expected 5 digits');
    expect(bad.state.failures[0]).toMatch(/^ledger 1: patient_data\.plz/);
    const text = bad.state.staffMails[0]!.text;
    expect(text).toMatch(/^Import-Nr\.: +1$/m);
    expect(text).toMatch(/^Grund: +patient_data\.plz: erwartet: 5 Ziffern, gefunden: der Text "123"$/m);
    expect(text).not.toContain('ledger 1');
  });

  it('a delete that fails after the commit is retried without a second patient or email', async () => {
    const t = setup(plainRegistration());
    t.failDeletesTimes(2);
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('storage unavailable');
    expect(t.row.status).toBe('imported');
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('storage unavailable');
    expect(await processPatientImport(1, t.deps)).toMatchObject({ outcome: 'imported', status: 'deleted' });
    expect(t.state.patients).toHaveLength(1);
    expect(t.state.sent).toEqual(['staff']);
    expect(t.row.attempts).toBe(3);
  });

  it('a delete that went through but could not be recorded (the database away) is recorded by the retry as deleted_earlier, not as not_found', async () => {
    const t = setup(plainRegistration());
    t.failFinishesTimes(1);
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('ECONNREFUSED');
    expect(t.state.objects.size).toBe(0); // the delete went through
    expect(t.row).toMatchObject({ status: 'imported' });
    expect(t.row.deleteRequestedAt).not.toBeNull();
    expect(await processPatientImport(1, t.deps)).toMatchObject({ outcome: 'imported', status: 'deleted' });
    expect(t.state.deleteOutcome).toBe('deleted_earlier');
    expect(t.state.patients).toHaveLength(1);
  });

  it('an object gone before the fleet sent its delete (removed by someone else) is recorded as not_found', async () => {
    const t = setup(plainRegistration());
    let failMail = 1;
    t.deps.sendMail = async (id) => {
      if (failMail-- > 0) throw new Error('redis not reachable');
      t.state.sent.push(id);
    };
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('redis not reachable');
    expect(t.row).toMatchObject({ status: 'imported', deleteRequestedAt: null });
    t.state.current.clear();
    t.state.objects.clear();
    expect(await processPatientImport(1, t.deps)).toMatchObject({ outcome: 'imported', status: 'deleted' });
    expect(t.state.deleteOutcome).toBe('not_found');
  });

  it('a permanent error after the commit (in this run or a later one) fails the job but never records the committed row as failed', async () => {
    const t = setup(plainRegistration());
    t.deps.sendMail = async () => {
      throw new PermanentError('invalid_payload', 'job email-send: deliveryId: expected a uuid');
    };
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('expected a uuid');
    expect(t.row.status).toBe('imported');
    expect(t.state.failures).toEqual([]);
    // A later run finds it committed; the delete refuses for good: the job fails again, the row stays imported.
    t.deps.source.delete = async () => {
      throw new PermanentError('invalid_object_name', 'invalid object name: leaves the bucket folder');
    };
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('invalid object name');
    expect(t.row.status).toBe('imported');
    expect(t.state.failures).toEqual([]);
    expect(t.state.patients).toHaveLength(1);
  });

  it('an invalid file fails permanently with the ledger id, field and rule; bytes kept; one email even when run again', async () => {
    const doc = plainRegistration({ patch: (r) => ((r.patient_data as Record<string, unknown>).symptome = 'Mobbing') });
    const t = setup(doc);
    const err = await processPatientImport(1, t.deps).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PermanentError);
    // Logs and dead letters never see values from the file; the ledger reason (for staff) does.
    expect((err as PermanentError).message).toBe('ledger 1: patient_data.symptome: expected a list of 1 to 6 symptoms, got the string (value not shown)');
    expect(t.state.failures[0]).toBe('ledger 1: patient_data.symptome: expected a list of 1 to 6 symptoms, got the string "Mobbing"');
    expect(t.state.objects.size).toBe(1);
    expect(t.state.failed.get('1')).toEqual(fileBytes(doc));
    await processPatientImport(1, t.deps).catch(() => {});
    expect(t.state.sent).toEqual(['failed']);
    expect(t.state.patients).toHaveLength(0);
  });

  it('a wrong file name is rejected before anything is imported', async () => {
    const t = setup(plainRegistration(), 'registrations/anmeldung.json');
    await expect(processPatientImport(1, t.deps)).rejects.toMatchObject({ code: 'bad_file_name' });
    expect(t.state.patients).toHaveLength(0);
  });

  it('a file name that does not fit names the part; logs and dead letters do not see the parts of the name', async () => {
    const t = setup(plainRegistration({ token: '0b1ab67bcafe0123' }), 'registrations/Mustermann_M4x_20250705_0b1ab67b.json');
    const err = await processPatientImport(1, t.deps).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'bad_file_name' });
    expect((err as PermanentError).message).toBe('ledger 1: file name: expected {nachname}_{vorname}_{date}_{token}.json (the vorname part (value not shown) is not a name)');
    expect(t.state.failures[0]).toBe('ledger 1: file name: expected {nachname}_{vorname}_{date}_{token}.json (the vorname part "M4x" is not a name)');
  });

  it('a file whose name and content are both wrong names both (one corrected upload fixes the file); values only for staff', async () => {
    const doc = plainRegistration({ token: '0b1ab67bcafe0123', patch: (r) => ((r.patient_data as Record<string, unknown>).plz = '5207') });
    const t = setup(doc, 'registrations/Mustermann_Max_2025075_0b1ab67b.json');
    const err = await processPatientImport(1, t.deps).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'bad_file_name' });
    expect(t.state.failures[0]).toBe(
      'ledger 1: file name: expected {nachname}_{vorname}_{date}_{token}.json (the date part "2025075" is not YYYYMMDD or YYYY-MM-DD); patient_data.plz: expected 5 digits, got the string "5207"',
    );
    expect((err as PermanentError).message).toBe(
      'ledger 1: file name: expected {nachname}_{vorname}_{date}_{token}.json (the date part (value not shown) is not YYYYMMDD or YYYY-MM-DD); patient_data.plz: expected 5 digits, got the string (value not shown)',
    );
  });

  it('imports a file whose name PHP urlencoded (+ for spaces, upper-case extension)', async () => {
    const doc = plainRegistration({ vorname: 'Anna Maria', nachname: 'van der Berg', token: '74de009acafe0123' });
    const t = setup(doc, 'registrations/van+der+Berg_Anna+Maria_20250705_74de009a.JSON');
    expect(await processPatientImport(1, t.deps)).toMatchObject({ outcome: 'imported', status: 'deleted' });
  });

  it('a NUL character in a field fails at once as validation_failed naming the field (no retries)', async () => {
    const t = setup(plainRegistration({ patch: (r) => ((r.patient_data as Record<string, unknown>).telefon = '0241\u0000') }));
    const err = await processPatientImport(1, t.deps).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PermanentError);
    expect(err).toMatchObject({ code: 'validation_failed', message: 'ledger 1: patient_data.telefon: contains a NUL character (\\u0000), which cannot be stored' });
    expect(t.state.patients).toHaveLength(0);
  });

  it('hands the store the consent exactly as the file carried it, and the parsed values to decide on', async () => {
    const doc = plainRegistration({
      patch: (r) => {
        const c = r.consent_metadata as Record<string, unknown>;
        c.ip_address = '';
        c.user_agent = '  Mozilla  ';
        delete c.voucher_booking;
      },
    });
    const t = setup(doc);
    await processPatientImport(1, t.deps);
    const input = t.state.patients[0]!;
    expect(input.consent).toEqual({ ip_address: '', user_agent: '  Mozilla  ', timestamp_utc: '2025-07-05T14:33:55Z' });
    expect(input.consentValues).toEqual({ ipAddress: null, userAgent: 'Mozilla', consentedAt: new Date('2025-07-05T14:33:55Z'), voucherBooking: false });
  });

  it('on the final attempt a transient error is recorded as failed for staff, then rethrown', async () => {
    const t = setup(plainRegistration());
    t.deps.store.commit = async () => {
      throw new Error('connection refused');
    };
    await expect(processPatientImport(1, t.deps, { finalAttempt: true })).rejects.toThrow('connection refused');
    expect(t.row.status).toBe('failed');
    expect(t.state.failures[0]).toMatch(/^ledger 1: gave up after 1 attempts: connection refused/);
  });

  it('on the final attempt an error carried through an outage (retried anyway, OUTAGE_CARRY_HOURS) is not recorded as failed: rethrown only', async () => {
    const t = setup(plainRegistration());
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    t.deps.store.commit = async () => {
      throw refused;
    };
    const seen: unknown[] = [];
    const carried = (err: unknown) => (seen.push(err), true);
    await expect(processPatientImport(1, t.deps, { finalAttempt: true, carried })).rejects.toBe(refused);
    expect(seen).toEqual([refused]);
    expect(t.row.status).toBe('received');
    expect(t.state).toMatchObject({ failures: [], staffMails: [], patients: [] });
  });

  it('a generation replaced by a newer upload before its download is not imported and no failure: replaced, no email, the newer upload left alone', async () => {
    const t = setup(plainRegistration());
    t.state.current.set(t.row.objectName, '8');
    expect(await processPatientImport(1, t.deps)).toEqual({ outcome: 'replaced', ledgerId: 1, status: 'replaced' });
    expect(t.row.status).toBe('replaced');
    expect(t.state.replacedReasons).toEqual(['replaced in the bucket by generation 8 before it was downloaded; that upload is imported on its own']);
    expect(t.state).toMatchObject({ patients: [], sent: [], failures: [] });
    expect(t.state.objects.size).toBe(1);
    expect(await processPatientImport(1, t.deps)).toMatchObject({ outcome: 'already-final', status: 'replaced' });
  });

  it('a generation deleted by someone else before its download fails for staff with a reason that says so', async () => {
    const t = setup(plainRegistration());
    t.state.current.clear();
    t.state.objects.clear();
    await expect(processPatientImport(1, t.deps)).rejects.toMatchObject({ code: 'object_not_found' });
    expect(t.row.status).toBe('failed');
    expect(t.state.failures[0]).toBe(
      'ledger 1: generation 7 is no longer in the bucket and no other upload of that name is: deleted before the fleet downloaded it (not by the fleet); ask for the registration to be uploaded again',
    );
    expect(t.state.sent).toEqual(['failed']);
  });

  it('a generation whose newer upload the fleet recorded, imported and deleted first is replaced, not failed as deleted by someone else', async () => {
    const t = setup(plainRegistration());
    t.state.current.clear();
    t.state.objects.clear();
    t.state.newerInLedger = '9';
    expect(await processPatientImport(1, t.deps)).toEqual({ outcome: 'replaced', ledgerId: 1, status: 'replaced' });
    expect(t.state.replacedReasons).toEqual(['replaced in the bucket by generation 9 before it was downloaded; that upload is imported on its own']);
    expect(t.state).toMatchObject({ patients: [], sent: [], failures: [] });
  });

  it('a generation the bucket lists but does not serve is retried, not failed', async () => {
    const t = setup(plainRegistration());
    t.state.objects.clear(); // still listed as generation 7
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('ledger 1: the bucket has generation 7 but did not serve it');
    expect(t.row.status).toBe('received');
    expect(t.state.sent).toEqual([]);
  });

  it('a retry of a backed-up row whose generation is gone from the bucket imports its durable copy', async () => {
    const doc = plainRegistration();
    const t = setup(doc);
    const commit = t.deps.store.commit;
    t.deps.store.commit = async (input) => {
      await t.deps.store.markBackedUp(1, input.backedUp!);
      throw new Error('connection reset');
    };
    await expect(processPatientImport(1, t.deps)).rejects.toThrow('connection reset');
    expect(t.row.status).toBe('backed_up');
    t.deps.store.commit = commit;
    // Meanwhile the bucket object was replaced by a newer upload.
    t.state.current.set(t.row.objectName, '8');
    t.state.objects.set(t.row.objectName, Buffer.from('{"newer": true}'));
    expect(await processPatientImport(1, t.deps)).toMatchObject({ outcome: 'imported', status: 'superseded' });
    expect(t.state.patients).toHaveLength(1);
    expect(t.state.patients[0]!.registrationToken).toBe((doc as { registration_token: string }).registration_token);
    expect(t.state.objects.size).toBe(1); // the newer upload is not deleted
  });
});
