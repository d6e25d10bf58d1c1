import { describe, expect, it } from 'vitest';
import { PermanentError } from '../../libs/errors/index.js';
import { parseFileName } from './file-name.js';
import { fileBytes, plainRegistration, signedRegistration } from './fixtures.js';
import { parseRegistration } from './parse-registration.js';
import { registrationReasonDe } from './reason-de.js';
import { SYMPTOMS } from './registration-schema.js';

const now = new Date('2026-11-24T10:00:00Z');
const secret = 's3cret-for-tests';

/** Words of the English messages; none may be left once the values quoted from the file are taken out. */
const ENGLISH = /\b(expected|got|required|must|empty|at most|characters|the string|an array|an object|a number|a boolean|listed|more than once|not valid|not UTF|does not match|unsigned|signing|configured|parts?|separated|underscores|is not|real date|letters|digits|gave up|attempts|generation|no longer|bucket|contains|cannot|a key|file name|already used)\b|\((file|value)\)/;

function reasonOf(bytes: Buffer, signing: { secret?: string; environment: string } = { environment: 'production' }): string {
  try {
    parseRegistration(bytes, signing, now);
  } catch (err) {
    if (err instanceof PermanentError) return err.message;
    throw err;
  }
  throw new Error('expected the file to be rejected');
}

const patched = (fn: (pd: Record<string, unknown>) => void) => fileBytes(plainRegistration({ patch: (r) => fn(r.patient_data as Record<string, unknown>) }));
const top = (fn: (r: Record<string, unknown>) => void) => fileBytes(plainRegistration({ patch: fn }));

/** One of each wrong value for every field, and every other way a file is refused. */
function allReasons(): string[] {
  const fields: Array<(pd: Record<string, unknown>) => void> = [
    (pd) => (pd.symptome = SYMPTOMS.slice(0, 7)),
    (pd) => (pd.symptome = 'Schlafstörungen; 2: "x"'),
    (pd) => delete pd.symptome,
    (pd) => (pd.symptome = ['Schlafstoerungen', 5, 'Schlafstörungen', 'Schlafstörungen']),
    (pd) => (pd.anrede = 'Dr., got "x"'),
    (pd) => delete pd.anrede,
    (pd) => (pd.geschlecht = 5),
    (pd) => delete pd.vorname,
    (pd) => (pd.vorname = '  '),
    (pd) => (pd.vorname = { text: 'Max' }),
    (pd) => (pd.nachname = 'x'.repeat(101)),
    (pd) => (pd.plz = '5206'),
    (pd) => (pd.plz = 52062),
    (pd) => (pd.email = 'max@'),
    (pd) => (pd.email = `${'a'.repeat(250)}@example.org`),
    (pd) => (pd.telefon = ['1']),
    (pd) => (pd.geburtsdatum = '2030-01-01'),
    (pd) => (pd.geburtsdatum = '1990-02-30'),
    (pd) => (pd.geburtsdatum = '12.04.1990'),
    (pd) => (pd.geburtsdatum = '1899-12-31'),
    (pd) => (pd.geburtsdatum = true),
    (pd) => (pd.erfahrung_mit_psychotherapie = 'ja'),
    (pd) => (pd.offen_fuer_gruppentherapie = 1),
    (pd) => (pd.bevorzugtes_therapeutengeschlecht = 'egal'),
    (pd) => (pd.zeitliche_verfuegbarkeit = { montag: ['9-12', 5] }),
    (pd) => (pd.zeitliche_verfuegbarkeit = { montag: '9-12' }),
    (pd) => (pd.zeitliche_verfuegbarkeit = { montag: ['18:00-09:00'] }),
    (pd) => (pd.zeitliche_verfuegbarkeit = 'immer'),
    (pd) => (pd.raeumliche_verfuegbarkeit = 30),
    (pd) => (pd.vorname = 'Max\u0000'),
  ];
  const documents: Buffer[] = [
    ...fields.map(patched),
    top((r) => (r.patient_data = 'x')),
    top((r) => delete r.patient_data),
    top((r) => delete r.consent_metadata),
    top((r) => (r.consent_metadata = [])),
    top((r) => ((r.consent_metadata as Record<string, unknown>).timestamp_utc = 'gestern')),
    top((r) => delete (r.consent_metadata as Record<string, unknown>).timestamp_utc),
    top((r) => ((r.consent_metadata as Record<string, unknown>).voucher_booking = 'ja')),
    top((r) => (r.registration_timestamp = 'gestern')),
    top((r) => (r.registration_timestamp = '2025-13-45 99:99:99')),
    top((r) => (r.registration_timestamp = '1899-12-31 23:00:00')),
    top((r) => delete r.registration_token),
    top((r) => (r.registration_token = 'abc')),
    top((r) => (r['x\ud800'] = 1)),
    Buffer.from(JSON.stringify(plainRegistration()).replace('"max_km":30', '"max_km":1e400')),
    Buffer.from('{"patient_data": {'),
    Buffer.from('{"patient_data": True}'),
    Buffer.from(''),
    Buffer.from('[1]'),
    Buffer.from(`{"a":${'['.repeat(600)}${']'.repeat(600)}}`),
    Buffer.from([0x7b, 0xff, 0x7d]),
  ];
  const signedWith = (over: Record<string, unknown>) => fileBytes({ ...signedRegistration(plainRegistration(), { secret }), ...over });
  const signing = { secret, environment: 'production' };
  const refusedSigned = [
    reasonOf(signedWith({ signature_version: 7 }), signing),
    reasonOf(signedWith({ signature: 'x' }), signing),
    reasonOf(fileBytes(signedRegistration(plainRegistration(), { secret, environment: 'staging' })), signing),
    reasonOf(signedWith({ data: 5 }), { environment: 'production' }),
    reasonOf(fileBytes(plainRegistration()), signing),
  ];
  const names = ['a.txt', 'Muster_Max.json', 'Probe_Anna_20251201.json', 'Muster_M4x_20250705_abcdefgh.json', '4_Max_20250705_abcdefgh.json', 'Muster_Max_2025-13_abcdefgh.json', 'Muster_Max_20250230_abcdefgh.json', 'Muster_Max_20250705_ab.json', 'M_a_x_Max_20250705_abcdefgh.json']
    .map(parseFileName)
    .map((r) => (r.ok ? '' : r.reason));
  // Written by the import itself (process-patient-import.ts, wiring.ts), the "ledger N: " prefix cut off as the email does.
  const own = [
    'registration_token: does not match the token in the file name',
    'file: 1.4 MB, more than REGISTRATION_FILE_MAX_MB=1 allows (a registration is a few KB), not read',
    'gave up after 5 attempts: connect ECONNREFUSED 127.0.0.1:5432',
    'patient_data.plz: expected 5 digits, got the string "5206"; failed folder: the original bytes could not be kept there (ENOSPC: no space left on device (open in the folder /var/failed/registrations)), the file stays in the bucket',
    'generation 1733 is no longer in the bucket and no other upload of that name is: deleted before the fleet downloaded it (not by the fleet); ask for the registration to be uploaded again',
    'the file is not in the configured bucket',
    'registration_token: its payment reference c001ea16 is already used by patient 1 (another registration)',
    'registration_token: its payment reference V_c001ea is already used by patient 12 (another registration)',
  ];
  return [...documents.map((d) => reasonOf(d)), ...refusedSigned, ...names, ...own];
}

describe('registrationReasonDe', () => {
  it('leaves no English message in any reason a refused registration gets', () => {
    const reasons = allReasons();
    expect(reasons.filter((r) => r === '')).toEqual([]);
    for (const r of reasons) {
      const de = registrationReasonDe(r);
      // Values from the file and the technical cause of the fleet's own failures stay as they are.
      const words = de.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/^(nach \d+ Versuchen aufgegeben): .*$/, '$1');
      expect(words, `${r}\n-> ${de}`).not.toMatch(ENGLISH);
    }
  });

  it('keeps field paths and the values quoted from the file as they are', () => {
    expect(registrationReasonDe('patient_data.plz: expected 5 digits, got the string "5206"; patient_data.symptome: expected 1 to 6 entries, got 7')).toBe(
      'patient_data.plz: erwartet: 5 Ziffern, gefunden: der Text "5206"; patient_data.symptome: erwartet: 1 bis 6 Einträge, gefunden: 7',
    );
    // A value holding the separators is not split.
    expect(registrationReasonDe('patient_data.anrede: expected one of Herr, Frau, got the string "Dr.; x: \\"y\\", got z"')).toBe(
      'patient_data.anrede: erwartet: einer der Werte Herr, Frau, gefunden: der Text "Dr.; x: \\"y\\", got z"',
    );
    expect(registrationReasonDe('patient_data.vorname: required: expected text')).toBe('patient_data.vorname: Pflichtfeld, erwartet: Text');
    expect(registrationReasonDe('file name: expected {nachname}_{vorname}_{date}_{token}.json (the date part "2025-13" is not YYYYMMDD or YYYY-MM-DD)')).toBe(
      'Dateiname: erwartet: {nachname}_{vorname}_{datum}_{token}.json (der Teil Datum "2025-13" ist nicht JJJJMMTT oder JJJJ-MM-TT)',
    );
    // German grammar: "1 getrennter Teil", "5 getrennte Teile".
    expect(registrationReasonDe('file name: expected {nachname}_{vorname}_{date}_{token}.json (1 part separated by underscores, expected 4)')).toBe(
      'Dateiname: erwartet: {nachname}_{vorname}_{datum}_{token}.json (1 durch Unterstriche getrennter Teil, erwartet 4)',
    );
    expect(registrationReasonDe('file name: expected {nachname}_{vorname}_{date}_{token}.json (5 parts separated by underscores, expected 4)')).toBe(
      'Dateiname: erwartet: {nachname}_{vorname}_{datum}_{token}.json (5 durch Unterstriche getrennte Teile, erwartet 4)',
    );
    expect(registrationReasonDe('file name: expected {nachname}_{vorname}_{date}_{token}.json (3 parts separated by underscores, expected 4: the token part is missing after the date)')).toBe(
      'Dateiname: erwartet: {nachname}_{vorname}_{datum}_{token}.json (3 durch Unterstriche getrennte Teile, erwartet 4: der Teil Token fehlt nach dem Datum)',
    );
  });

  it('translates the note that the failed folder could not keep the copy, also after the cause of a give-up', () => {
    const note = 'the original bytes could not be kept there (ENOSPC: no space left on device (open in the folder /var/failed)), the file stays in the bucket';
    const de = 'Ordner für nicht importierte Dateien: die Originaldatei konnte dort nicht gesichert werden (ENOSPC: no space left on device (open in the folder /var/failed)), die Datei bleibt im Bucket';
    expect(registrationReasonDe(`gave up after 22 attempts: ENOSPC: no space left on device (open in the folder /var/backup); failed folder: ${note}`)).toBe(
      `nach 22 Versuchen aufgegeben: ENOSPC: no space left on device (open in the folder /var/backup); ${de}`,
    );
    expect(registrationReasonDe(`patient_data.plz: expected 5 digits, got the string "5206"; failed folder: ${note}`)).toBe(`patient_data.plz: erwartet: 5 Ziffern, gefunden: der Text "5206"; ${de}`);
  });

  it('says in German that the payment reference is taken, naming the reference and the patient', () => {
    expect(registrationReasonDe('registration_token: its payment reference c001ea16 is already used by patient 1 (another registration)')).toBe(
      'registration_token: die daraus abgeleitete Zahlungsreferenz c001ea16 hat schon Patient 1 (eine andere Anmeldung)',
    );
  });

  it('keeps what it does not know in English', () => {
    expect(registrationReasonDe('patient_data.x: expected a unicorn, got a number')).toBe('patient_data.x: expected a unicorn, got a number');
  });
});
