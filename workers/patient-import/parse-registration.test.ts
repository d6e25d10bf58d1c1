import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PermanentError } from '../../libs/errors/index.js';
import { parseFileName } from './file-name.js';
import { fileBytes, plainRegistration, signedRegistration } from './fixtures.js';
import { berlinDay, mapPatient, normalise } from './map-patient.js';
import { parseRegistration } from './parse-registration.js';
import { SYMPTOMS } from './registration-schema.js';
import { validationDe } from './staff-mails.js';
import { phpJsonEncode } from './signature.js';

const now = new Date('2026-11-24T10:00:00Z');
const noSecret = { environment: 'production' };
const secret = 's3cret-for-tests';
const signing = { secret, environment: 'production' };

function rejectOf(doc: unknown, opts: { secret?: string; environment: string } = noSecret): PermanentError {
  try {
    parseRegistration(typeof doc === 'string' ? Buffer.from(doc) : fileBytes(doc), opts, now);
  } catch (err) {
    if (err instanceof PermanentError) return err;
    throw err;
  }
  throw new Error('expected the file to be rejected');
}

function patched(fn: (pd: Record<string, unknown>) => void) {
  return plainRegistration({ patch: (r) => fn(r.patient_data as Record<string, unknown>) });
}

describe('registration validation', () => {
  it('accepts a plain registration and maps the derived fields', () => {
    const reg = plainRegistration({ token: '0b1ab67bcafe0123' });
    const parsed = parseRegistration(fileBytes(reg), noSecret, now);
    expect(parsed.validation).toBe('valid (unsigned)');
    expect(validationDe(parsed.validation)).toBe('gültig (nicht signiert)');
    const p = mapPatient(parsed.registration, now);
    expect(p).toMatchObject({ zahlungsreferenz: '0b1ab67b', status: 'offen', zahlungEingegangen: false, vertraegeUnterschrieben: true, startdatum: null, offenFuerGruppentherapie: true });
    expect(p.symptome).toEqual(['Schlafstörungen', 'Ängste / Panikattacken']);
  });

  it('maps voucher bookings: V_ + 6 chars, paid, auf_der_Suche, startdatum = import day (Berlin)', () => {
    const reg = plainRegistration({ token: '0b1ab67bcafe0123', voucher: true });
    const late = new Date('2026-11-24T23:30:00Z'); // already the 25th in Berlin
    const p = mapPatient(parseRegistration(fileBytes(reg), noSecret, late).registration, late);
    expect(p).toMatchObject({ zahlungsreferenz: 'V_0b1ab6', status: 'auf_der_Suche', zahlungEingegangen: true, startdatum: '2026-11-25' });
    expect(berlinDay(late)).toBe('2026-11-25');
  });

  it('knows exactly the 30 symptoms', () => {
    expect(SYMPTOMS).toHaveLength(30);
    expect(new Set(SYMPTOMS).size).toBe(30);
    const all6 = SYMPTOMS.slice(24);
    expect(() => parseRegistration(fileBytes(patched((pd) => (pd.symptome = [...all6]))), noSecret, now)).not.toThrow();
  });

  it.each([
    ['7 symptoms', (pd: Record<string, unknown>) => (pd.symptome = SYMPTOMS.slice(0, 7)), 'patient_data.symptome: expected 1 to 6 entries, got 7'],
    ['no symptom', (pd: Record<string, unknown>) => (pd.symptome = []), 'patient_data.symptome: expected 1 to 6 entries, got 0'],
    ['symptome as a string', (pd: Record<string, unknown>) => (pd.symptome = 'Schlafstörungen'), 'patient_data.symptome: expected a list of 1 to 6 symptoms, got the string "Schlafstörungen"'],
    ['symptome missing', (pd: Record<string, unknown>) => delete pd.symptome, 'patient_data.symptome: required: a list of 1 to 6 symptoms'],
    ['misspelt symptom', (pd: Record<string, unknown>) => (pd.symptome = ['Schlafstoerungen']), 'patient_data.symptome.0: expected one of the 30 symptoms of the form (exact spelling), got the string "Schlafstoerungen"'],
    ['bad anrede', (pd: Record<string, unknown>) => (pd.anrede = 'Dr.'), 'patient_data.anrede: expected one of Herr, Frau, got the string "Dr."'],
    ['anrede missing', (pd: Record<string, unknown>) => delete pd.anrede, 'patient_data.anrede: required: one of Herr, Frau'],
    ['bad geschlecht', (pd: Record<string, unknown>) => (pd.geschlecht = 'male'), 'patient_data.geschlecht: expected one of männlich, weiblich, divers, keine_Angabe'],
    ['vorname missing', (pd: Record<string, unknown>) => delete pd.vorname, 'patient_data.vorname: required: expected text'],
    ['nachname too long', (pd: Record<string, unknown>) => (pd.nachname = 'x'.repeat(101)), 'patient_data.nachname: at most 100 characters, got 101'],
    ['plz 4 digits', (pd: Record<string, unknown>) => (pd.plz = '5206'), 'patient_data.plz: expected 5 digits, got the string "5206"'],
    ['plz as number', (pd: Record<string, unknown>) => (pd.plz = 52062), 'patient_data.plz: expected 5 digits, got a number'],
    ['bad email', (pd: Record<string, unknown>) => (pd.email = 'max@'), 'patient_data.email: expected a valid email address'],
    ['future birth date', (pd: Record<string, unknown>) => (pd.geburtsdatum = '2030-01-01'), 'patient_data.geburtsdatum: expected a date in the past, got "2030-01-01"'],
    ['impossible date', (pd: Record<string, unknown>) => (pd.geburtsdatum = '1990-02-30'), 'patient_data.geburtsdatum: expected a real calendar date, got "1990-02-30"'],
    ['german date', (pd: Record<string, unknown>) => (pd.geburtsdatum = '12.04.1990'), 'patient_data.geburtsdatum: expected a date YYYY-MM-DD'],
    ['boolean as text', (pd: Record<string, unknown>) => (pd.erfahrung_mit_psychotherapie = 'ja'), 'patient_data.erfahrung_mit_psychotherapie: expected true or false'],
    ['bad therapist gender', (pd: Record<string, unknown>) => (pd.bevorzugtes_therapeutengeschlecht = 'egal'), 'patient_data.bevorzugtes_therapeutengeschlecht: expected one of Männlich, Weiblich, Egal'],
    ['bad method', (pd: Record<string, unknown>) => (pd.bevorzugtes_therapieverfahren = 'Psychoanalyse'), 'patient_data.bevorzugtes_therapieverfahren: expected one of egal, Verhaltenstherapie, tiefenpsychologisch_fundierte_Psychotherapie'],
    ['bad time range', (pd: Record<string, unknown>) => (pd.zeitliche_verfuegbarkeit = { montag: ['9-12'] }), 'patient_data.zeitliche_verfuegbarkeit.montag.0: expected a time range HH:MM-HH:MM'],
  ])('rejects %s, naming the field and the rule', (_name, patch, message) => {
    const err = rejectOf(patched(patch));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toContain(message);
  });

  it('rejects broken JSON and a missing token', () => {
    expect(rejectOf('{"patient_data": {').code).toBe('invalid_json');
    expect(rejectOf('{"patient_data": {').message).toMatch(/^file: not valid JSON/);
    const noToken = plainRegistration({ patch: (r) => delete r.registration_token });
    expect(rejectOf(noToken).message).toContain('registration_token: required');
    const noConsent = plainRegistration({ patch: (r) => delete r.consent_metadata });
    expect(rejectOf(noConsent).message).toContain('consent_metadata: required');
  });

  it('lists unknown fields and ignores them; blank optional fields are absent', () => {
    const reg = plainRegistration({
      patch: (r) => {
        r.extra = 1;
        (r.patient_data as Record<string, unknown>).lieblingsfarbe = 'blau';
        (r.patient_data as Record<string, unknown>).telefon = '';
        (r.patient_data as Record<string, unknown>).zeitliche_verfuegbarkeit = [];
      },
    });
    const parsed = parseRegistration(fileBytes(reg), noSecret, now);
    expect(parsed.unknownFields).toEqual(['extra', 'patient_data.lieblingsfarbe']);
    const p = mapPatient(parsed.registration, now);
    expect(p.telefon).toBeNull();
    expect(p.zeitlicheVerfuegbarkeit).toEqual({});
  });
});

describe('signed registrations', () => {
  it('serialises like PHP json_encode with JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES', () => {
    expect(phpJsonEncode({ b: 'Müller/Straße', a: [1, true, null], c: 'x\u2028y', d: 'tab\t"q"' })).toBe(
      '{"b":"Müller/Straße","a":[1,true,null],"c":"x\\u2028y","d":"tab\\t\\"q\\""}',
    );
  });

  it('verifies a known HMAC computed over the PHP serialisation', () => {
    const plain = plainRegistration({ token: 'abcdef0123456789' });
    const doc = signedRegistration(plain, { secret });
    const body = { timestamp: doc.timestamp, type: doc.type, environment: doc.environment, data: doc.data };
    expect(doc.signature).toBe(createHmac('sha256', secret).update(phpJsonEncode(body)).digest('hex'));
    const parsed = parseRegistration(fileBytes(doc), signing, now);
    expect(parsed).toMatchObject({ signed: true, signatureVerified: true, validation: 'valid (signed, signature verified)' });
    expect(validationDe(parsed.validation)).toBe('gültig (signiert, Signatur geprüft)');
    expect(parsed.registration.registration_token).toBe('abcdef0123456789');
  });

  it('accepts data.data and pretty-printed files (the signature is over the content, not the layout)', () => {
    const doc = signedRegistration(plainRegistration(), { secret, nested: true });
    const parsed = parseRegistration(Buffer.from(JSON.stringify(doc, null, 2)), signing, now);
    expect(parsed.signatureVerified).toBe(true);
  });

  it('rejects a tampered, unsigned or wrong-environment file when a secret is configured', () => {
    const doc = signedRegistration(plainRegistration(), { secret });
    ((doc.data as Record<string, unknown>).patient_data as Record<string, unknown>).vorname = 'Moritz';
    expect(rejectOf(doc, signing)).toMatchObject({ code: 'bad_signature' });
    expect(rejectOf(signedRegistration(plainRegistration(), { secret: 'other' }), signing)).toMatchObject({ code: 'bad_signature' });
    expect(rejectOf(plainRegistration(), signing)).toMatchObject({ code: 'unsigned' });
    const staging = signedRegistration(plainRegistration(), { secret, environment: 'staging' });
    expect(rejectOf(staging, signing).message).toBe('environment: expected "production", got "staging"');
    const v2 = { ...signedRegistration(plainRegistration(), { secret }), signature_version: 'v2' };
    expect(rejectOf(v2, signing)).toMatchObject({ code: 'bad_signature' });
  });

  it('accepts signed files without checking when no secret is configured, and validates their data', () => {
    const doc = signedRegistration(plainRegistration(), { secret: 'whatever' });
    expect(parseRegistration(fileBytes(doc), noSecret, now).validation).toMatch(/signature not checked/);
    const bad = signedRegistration(patched((pd) => (pd.anrede = 'Dr.')), { secret });
    expect(rejectOf(bad, signing).message).toContain('data.patient_data.anrede: expected one of Herr, Frau');
  });
});

describe('file names', () => {
  it.each([
    'registrations/Mustermann_Max_20250705_0b1ab67b.json',
    'registrations/M%C3%BCller-L%C3%BCdenscheidt_Hans%20Peter_2025-07-05_0b1ab67b.json',
    'Müller_Anna-Lena_20250705T143355_0b1ab67bcafe.json',
    "O'Brien_Seán_2025-07-05-14-33-55_abc123.json",
  ])('accepts %s', (name) => {
    expect(parseFileName(name).ok).toBe(true);
  });

  it('decodes percent-encoded names', () => {
    const r = parseFileName('registrations/M%C3%BCller_Hans%20Peter_20250705_0b1ab67b.json');
    expect(r).toEqual({ ok: true, value: { nachname: 'Müller', vorname: 'Hans Peter', date: '20250705', token: '0b1ab67b' } });
  });

  it.each([
    'registrations/Mustermann_Max_0b1ab67b.json',
    'registrations/Mustermann_Max_20251305_0b1ab67b.json',
    'registrations/Mustermann_Max_20250705_0b1ab67b.txt',
    'registrations/../etc_passwd_20250705_0b1ab67b',
    'registrations/_Max_20250705_0b1ab67b.json',
    'registrations/Muster_mann_Max_20250705_0b1ab67b.json',
  ])('rejects %s with the rule', (name) => {
    const r = parseFileName(name);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/^file name: expected \{nachname\}_\{vorname\}_\{date\}_\{token\}\.json/);
  });
});

describe('normalising for duplicate checks', () => {
  it('trims, case-folds and composes (NFC)', () => {
    expect(normalise('  Max.Muster@Example.ORG ')).toBe('max.muster@example.org');
    expect(normalise('Mu\u0308ller')).toBe(normalise('MÜLLER'));
  });
});
