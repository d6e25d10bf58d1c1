import { describe, expect, it } from 'vitest';
import type { ImportRow } from './ports.js';
import { failedMail, importedMail } from './staff-mails.js';

const row = (o: Partial<ImportRow> = {}): ImportRow => ({
  id: 42,
  source: 'bucket',
  bucket: 'b',
  objectName: 'registrations/Muster_Max_20250705_0b1ab67b.json',
  generation: '1',
  sourceUri: 'gs://b/registrations/Muster_Max_20250705_0b1ab67b.json',
  md5Hash: null,
  size: null,
  status: 'backed_up',
  attempts: 1,
  patientId: null,
  duplicateOfPatientId: null,
  backupPath: null,
  failedPath: null,
  receivedAt: new Date('2026-12-06T09:00:00Z'),
  deleteRequestedAt: null,
  ...o,
});
const at = new Date('2026-12-06T09:30:00Z');
const failed = (code: string, o: { source?: 'bucket' | 'file'; dashboardUrl?: string } = {}) =>
  failedMail(row({ source: o.source ?? 'bucket' }), { code, reason: 'ledger 42: patient_data.plz: expected 5 digits', failedPath: '/f/42-x.json', at, dashboardUrl: o.dashboardUrl }).text;

describe('staff email of a failed registration: next steps by what failed', () => {
  it('a file whose content is wrong: a requeue does not help, a corrected upload does, then discard with a reason', () => {
    for (const code of ['validation_failed', 'invalid_json', 'not_utf8', 'token_mismatch']) {
      const text = failed(code);
      expect(text).toContain('erneutes Einreihen hilft nicht');
      expect(text).toContain('fleet dlq discard patient-import.ledger.42 --reason "…"');
      expect(text).not.toContain('fleet dlq requeue');
    }
    expect(failed('bad_file_name')).toContain('unter einem passenden Namen neu hochgeladen');
  });

  it('a payment reference another patient holds: German reason, no requeue, resolve by hand with the platform, then discard', () => {
    const text = failedMail(row(), {
      code: 'zahlungsreferenz_taken',
      reason: 'ledger 42: registration_token: its payment reference c001ea16 is already used by patient 1 (another registration)',
      failedPath: '/f/42-x.json',
      at,
      referenceHeldBy: 1,
    }).text;
    expect(text).toContain('registration_token: die daraus abgeleitete Zahlungsreferenz c001ea16 hat schon Patient 1 (eine andere Anmeldung)');
    expect(text).not.toContain('already used');
    expect(text).toContain('hat schon Patient 1, aus einer anderen Anmeldung');
    expect(text).toContain('erneutes Einreihen hilft nicht');
    expect(text).toContain('von Hand mit der Plattform klären');
    expect(text).toContain('fleet dlq discard patient-import.ledger.42 --reason "…"');
    expect(text).not.toContain('fleet dlq requeue');
  });

  it('the fleet gave up (storage, database, a worker): requeue after the cause is fixed, with the record and a reason', () => {
    for (const code of ['gave_up', 'worker_died']) {
      const text = failed(code);
      expect(text).toContain('fleet dlq requeue patient-import.ledger.42 --reason "…"');
      expect(text).not.toContain('hilft nicht');
    }
  });

  it('signature or environment: the fleet\'s setting may be what is wrong; requeue after fixing it, else discard', () => {
    const text = failed('bad_signature');
    expect(text).toContain('REGISTRATION_SIGNING_SECRET');
    // The settings are read at start: a requeue before a restart fails the same way again.
    expect(text).toContain('korrigieren, die Fleet neu starten');
    expect(text).toContain('fleet dlq requeue patient-import.ledger.42 --reason "…"');
    expect(text).toContain('fleet dlq discard patient-import.ledger.42 --reason "…"');
  });

  it('a hand import has no dead letter: import the file again, or close it with fleet imports discard', () => {
    const text = failed('validation_failed', { source: 'file' });
    expect(text).toContain('Die Datei wurde von Hand eingespielt (fleet import patient-file) und konnte nicht importiert werden.');
    expect(text).toContain('fleet import patient-file <Pfad>');
    expect(text).toContain('fleet imports discard 42 --reason "…"');
    expect(text).not.toContain('fleet dlq');
  });

  it('names the operator pages when DASHBOARD_URL is set', () => {
    const text = failed('gave_up', { dashboardUrl: 'https://fleet.example.org' });
    expect(text).toContain('https://fleet.example.org/ops');
    expect(text).toContain('Details: fleet imports show 42 oder https://fleet.example.org/imports');
    expect(failed('gave_up')).not.toContain('http');
  });
});

describe('staff email of an imported registration: the subject says what needs a look', () => {
  const base = { vorname: 'Max', nachname: 'Muster', validation: 'valid (unsigned)', unknownFields: [], at };
  it('a possible duplicate and a paid voucher booking are in the subject; a routine import is not flagged', () => {
    expect(importedMail(row(), { kind: 'imported', patientId: 7, possibleDuplicateOf: null }, base).subject).toBe('Neue Patientenanmeldung importiert (Import 42)');
    expect(importedMail(row(), { kind: 'imported', patientId: 7, possibleDuplicateOf: 3 }, base).subject).toBe(
      'Neue Patientenanmeldung importiert, mögliches Duplikat: bitte prüfen (Import 42)',
    );
    expect(importedMail(row(), { kind: 'imported', patientId: 7, possibleDuplicateOf: null }, { ...base, voucher: { zahlungsreferenz: 'V_0b1ab6' } }).subject).toBe(
      'Neue Patientenanmeldung importiert, bezahlte Gutschein-Buchung (Import 42)',
    );
    expect(importedMail(row(), { kind: 'duplicate', duplicateKind: 'same_person', patientId: 3 }, { ...base, voucher: { zahlungsreferenz: 'V_0b1ab6' } }).subject).toBe(
      'Anmeldung als Duplikat erkannt, bezahlte Gutschein-Buchung: bitte prüfen (Import 42)',
    );
  });
});

describe('staff email of a failed registration: the reason', () => {
  const mail = (reason: string) => failedMail(row(), { code: 'validation_failed', reason, failedPath: null, at });
  it('one wrong field is the reason row, in German', () => {
    const { text } = mail('ledger 42: patient_data.plz: expected 5 digits, got the string "5207"');
    expect(text).toMatch(/^Grund: +patient_data\.plz: erwartet: 5 Ziffern, gefunden: der Text "5207"$/m);
    expect(text).not.toContain('Fehler in der Datei:');
  });

  it('several wrong fields are a list under the table, a value holding "; " kept whole', () => {
    const { text, html } = mail('ledger 42: patient_data.plz: expected 5 digits, got the string "52; 07"; patient_data.geburtsdatum: expected a real calendar date, got "1999-02-29"');
    expect(text).toMatch(/^Grund: +2 Fehler in der Datei \(unten\)$/m);
    expect(text).toContain('Fehler in der Datei:\n  - patient_data.plz: erwartet: 5 Ziffern, gefunden: der Text "52; 07"\n  - patient_data.geburtsdatum: erwartet: ein Datum, das es gibt, gefunden: "1999-02-29"');
    expect(html).toContain('<li');
  });
});
