import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PermanentError } from '../../libs/errors/index.js';
import { parseFileName } from './file-name.js';
import { fileBytes, plainRegistration, signedRegistration } from './fixtures.js';
import { berlinDay, differingFromImport, differingPatientFields, foldName, mapPatient, normalise, patientDataDigests } from './map-patient.js';
import { MAX_DEPTH, parseRegistration } from './parse-registration.js';
import { SYMPTOMS, withholdValues } from './registration-schema.js';
import { validationDe } from './staff-mails.js';
import { phpJsonEncode, phpJsonEncodeText } from './signature.js';

const now = new Date('2026-11-24T10:00:00Z');
const noSecret = { environment: 'production' };
const secret = 's3cret-for-tests';
const signing = { secret, environment: 'production' };

function rejectOf(doc: unknown, opts: { secret?: string; environment: string } = noSecret): PermanentError {
  try {
    parseRegistration(Buffer.isBuffer(doc) ? doc : typeof doc === 'string' ? Buffer.from(doc) : fileBytes(doc), opts, now);
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

  it('reads umlauts written decomposed (NFD) in enum values and symptoms as the form spelling, and stores the composed one', () => {
    const reg = patched((pd) => {
      pd.geschlecht = 'männlich'.normalize('NFD');
      pd.bevorzugtes_therapeutengeschlecht = 'Männlich'.normalize('NFD');
      pd.symptome = ['Ängste / Panikattacken'.normalize('NFD'), 'Schlafstörungen'.normalize('NFD')];
    });
    const p = mapPatient(parseRegistration(fileBytes(reg), noSecret, now).registration, now);
    expect(p.geschlecht).toBe('männlich');
    expect(p.geschlecht).toHaveLength(8);
    expect(p.bevorzugtesTherapeutengeschlecht).toBe('Männlich');
    expect(p.symptome).toEqual(['Ängste / Panikattacken', 'Schlafstörungen']);
    const twice = patched((pd) => (pd.symptome = ['Schlafstörungen', 'Schlafstörungen'.normalize('NFD')]));
    expect(rejectOf(twice).message).toContain('patient_data.symptome.1: listed more than once');
    // The same symptom four times: named once, not three times.
    const four = patched((pd) => (pd.symptome = ['Schlafstörungen', 'Schlafstörungen', 'Schlafstörungen', 'Schlafstörungen']));
    expect(rejectOf(four).message.match(/listed more than once/g)).toHaveLength(1);
  });

  it.each([
    ['trailing text', '2025-07-05 14:33:55 garbage', 'registration_timestamp: expected a timestamp YYYY-MM-DD HH:MM:SS, got the string "2025-07-05 14:33:55 garbage"'],
    ['the reviewer\'s file', '2025-13-45 99:99:99 garbage', 'registration_timestamp: expected a timestamp YYYY-MM-DD HH:MM:SS, got the string "2025-13-45 99:99:99 garbage"'],
    ['month 13', '2025-13-45 99:99:99', 'registration_timestamp: expected a real date and time, got "2025-13-45 99:99:99"'],
    ['30 February', '2025-02-30 10:00:00', 'registration_timestamp: expected a real date and time, got "2025-02-30 10:00:00"'],
    ['hour 24', '2025-07-05 24:00:00', 'registration_timestamp: expected a real date and time, got "2025-07-05 24:00:00"'],
    ['the year 0000', '0000-01-01 10:00:00', 'registration_timestamp: expected a real date and time'],
  ])('rejects a registration_timestamp with %s, naming it and showing the value', (_k, value, message) => {
    const err = rejectOf(plainRegistration({ patch: (r) => (r.registration_timestamp = value) }));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toContain(message);
  });

  it('takes a registration_timestamp as the site writes it (also with a T, or without seconds) and stores it as written', () => {
    for (const value of ['2025-07-05 14:33:55', '2025-07-05T14:33:55', '2025-07-05 14:33']) {
      expect(parseRegistration(fileBytes(plainRegistration({ patch: (r) => (r.registration_timestamp = value) })), noSecret, now).registration.registration_timestamp).toBe(value);
    }
  });

  it('takes a range up to midnight and any day key (DOMAIN names none)', () => {
    const reg = patched((pd) => (pd.zeitliche_verfuegbarkeit = { montag: ['18:00-24:00', '00:00-00:01'], Wochenende: ['09:00-12:00'] }));
    expect(mapPatient(parseRegistration(fileBytes(reg), noSecret, now).registration, now).zeitlicheVerfuegbarkeit).toEqual({ montag: ['18:00-24:00', '00:00-00:01'], Wochenende: ['09:00-12:00'] });
  });

  it('trims whitespace around enum values and symptoms before the exact-spelling check, and keeps the case exact', () => {
    const reg = patched((pd) => {
      pd.anrede = ' Herr ';
      pd.geschlecht = '\tmännlich\n';
      pd.bevorzugtes_therapeutengeschlecht = ' Egal';
      pd.bevorzugtes_therapieverfahren = 'Verhaltenstherapie\u00a0';
      pd.symptome = [' Mobbing ', 'Schlafstörungen\n'];
    });
    const p = mapPatient(parseRegistration(fileBytes(reg), noSecret, now).registration, now);
    expect(p).toMatchObject({ anrede: 'Herr', geschlecht: 'männlich', bevorzugtesTherapeutengeschlecht: 'Egal', bevorzugtesTherapieverfahren: 'Verhaltenstherapie' });
    expect(p.symptome).toEqual(['Mobbing', 'Schlafstörungen']);
    expect(rejectOf(patched((pd) => (pd.anrede = ' herr '))).message).toContain('patient_data.anrede: expected one of Herr, Frau, got the string "herr"');
    expect(rejectOf(patched((pd) => (pd.symptome = [' mobbing']))).message).toContain('patient_data.symptome.0: expected one of the 30 symptoms');
    // Blank stays "not given" for the optional ones.
    expect(mapPatient(parseRegistration(fileBytes(patched((pd) => (pd.bevorzugtes_therapeutengeschlecht = '  '))), noSecret, now).registration, now).bevorzugtesTherapeutengeschlecht).toBeNull();
  });

  it('counts the characters of names and other text in their composed form (NFC), and stores that form', () => {
    // 96 characters; written decomposed (as some systems write umlauts) they are 112 code points.
    const long = 'Müller'.repeat(16);
    const reg = patched((pd) => {
      pd.nachname = long.normalize('NFD');
      pd.ort = 'Düsseldorf'.normalize('NFD');
    });
    const p = mapPatient(parseRegistration(fileBytes(reg), noSecret, now).registration, now);
    expect(p.nachname).toBe(long);
    expect(p.ort).toBe('Düsseldorf');
    expect(p.ort).toHaveLength(10);
    // 101 characters stay too many, composed or not.
    expect(rejectOf(patched((pd) => (pd.vorname = ('ü'.repeat(101)).normalize('NFD')))).message).toContain('patient_data.vorname: at most 100 characters, got 101');
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
    ['vorname as an object', (pd: Record<string, unknown>) => (pd.vorname = { text: 'Max' }), 'patient_data.vorname: expected text, got an object'],
    ['bad email', (pd: Record<string, unknown>) => (pd.email = 'max@'), 'patient_data.email: expected a valid email address'],
    // As every other length rule: how long it is (it said only "at most 255 characters").
    ['email too long', (pd: Record<string, unknown>) => (pd.email = `${'a'.repeat(250)}@example.org`), 'patient_data.email: at most 255 characters, got 262'],
    ['future birth date', (pd: Record<string, unknown>) => (pd.geburtsdatum = '2030-01-01'), 'patient_data.geburtsdatum: expected a date in the past, got "2030-01-01"'],
    ['impossible date', (pd: Record<string, unknown>) => (pd.geburtsdatum = '1990-02-30'), 'patient_data.geburtsdatum: expected a real calendar date, got "1990-02-30"'],
    ['german date', (pd: Record<string, unknown>) => (pd.geburtsdatum = '12.04.1990'), 'patient_data.geburtsdatum: expected a date YYYY-MM-DD'],
    ['boolean as text', (pd: Record<string, unknown>) => (pd.erfahrung_mit_psychotherapie = 'ja'), 'patient_data.erfahrung_mit_psychotherapie: expected true or false'],
    ['bad therapist gender', (pd: Record<string, unknown>) => (pd.bevorzugtes_therapeutengeschlecht = 'egal'), 'patient_data.bevorzugtes_therapeutengeschlecht: expected one of Männlich, Weiblich, Egal'],
    ['bad method', (pd: Record<string, unknown>) => (pd.bevorzugtes_therapieverfahren = 'Psychoanalyse'), 'patient_data.bevorzugtes_therapieverfahren: expected one of egal, Verhaltenstherapie, tiefenpsychologisch_fundierte_Psychotherapie'],
    ['bad time range', (pd: Record<string, unknown>) => (pd.zeitliche_verfuegbarkeit = { montag: ['9-12'] }), 'patient_data.zeitliche_verfuegbarkeit.montag.0: expected a time range HH:MM-HH:MM'],
    ['a time past midnight', (pd: Record<string, unknown>) => (pd.zeitliche_verfuegbarkeit = { montag: ['18:00-24:30'] }), 'patient_data.zeitliche_verfuegbarkeit.montag.0: expected a time range HH:MM-HH:MM'],
    ['an hour 24 at the start', (pd: Record<string, unknown>) => (pd.zeitliche_verfuegbarkeit = { montag: ['24:00-24:00'] }), 'patient_data.zeitliche_verfuegbarkeit.montag.0: expected a time range HH:MM-HH:MM, got the string "24:00-24:00"'],
    ['minute 60', (pd: Record<string, unknown>) => (pd.zeitliche_verfuegbarkeit = { montag: ['09:60-10:00'] }), 'patient_data.zeitliche_verfuegbarkeit.montag.0: expected a time range HH:MM-HH:MM'],
    ['a range that ends before it starts', (pd: Record<string, unknown>) => (pd.zeitliche_verfuegbarkeit = { montag: ['08:00-09:00', '18:00-09:00'] }), 'patient_data.zeitliche_verfuegbarkeit.montag.1: expected a time range that ends after it starts, got "18:00-09:00"'],
    ['a range that ends when it starts', (pd: Record<string, unknown>) => (pd.zeitliche_verfuegbarkeit = { dienstag: ['10:00-10:00'] }), 'patient_data.zeitliche_verfuegbarkeit.dienstag.0: expected a time range that ends after it starts, got "10:00-10:00"'],
  ])('rejects %s, naming the field and the rule', (_name, patch, message) => {
    const err = rejectOf(patched(patch));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toContain(message);
  });

  it('rejects broken JSON and a missing token', () => {
    expect(rejectOf('{"patient_data": {').code).toBe('invalid_json');
    expect(rejectOf('{"patient_data": {').message).toMatch(/^file: not valid JSON/);
    // Where it broke, also when JSON.parse's message gives no position (an unexpected token):
    // not "the file ends too early or is empty" for a file that does neither.
    expect(rejectOf('{"a": True}').message).toBe('file: not valid JSON (error at character 6)');
    expect(rejectOf('{"a": [1,]}').message).toBe('file: not valid JSON (error at character 9)');
    expect(rejectOf('{"a": NaN}').message).toBe('file: not valid JSON (error at character 6)');
    expect(rejectOf('{"a": 1}}').message).toBe('file: not valid JSON (error at character 8)');
    expect(rejectOf('{"a": "x').message).toBe('file: not valid JSON (the file ends too early)');
    expect(rejectOf('{"a": 1, \n').message).toBe('file: not valid JSON (the file ends too early)');
    expect(rejectOf('').message).toBe('file: not valid JSON (the file is empty)');
    expect(rejectOf(' \n\t').message).toBe('file: not valid JSON (the file is empty)');
    expect(rejectOf('\ufeff').message).toBe('file: not valid JSON (the file is empty)');
    const noToken = plainRegistration({ patch: (r) => delete r.registration_token });
    expect(rejectOf(noToken).message).toContain('registration_token: required');
    const noConsent = plainRegistration({ patch: (r) => delete r.consent_metadata });
    expect(rejectOf(noConsent).message).toContain('consent_metadata: required');
  });

  it('rejects a file nested deeper than MAX_DEPTH levels; brackets inside strings do not count', () => {
    const nested = (depth: number, inString = '') =>
      JSON.stringify(plainRegistration({ patch: (r) => ((r.consent_metadata as Record<string, unknown>).extra = inString) })).replace(
        '"extra":""',
        `"extra":${'['.repeat(depth)}${']'.repeat(depth)}`,
      );
    const err = rejectOf(nested(20_000));
    expect(err.code).toBe('invalid_json');
    expect(err.message).toBe(`file: nested more than ${MAX_DEPTH} levels deep`);
    expect(rejectOf(nested(MAX_DEPTH)).code).toBe('invalid_json'); // the consent_metadata object is a level of its own
    expect(() => parseRegistration(Buffer.from(nested(MAX_DEPTH - 2)), noSecret, now)).not.toThrow();
    const brackets = plainRegistration({ patch: (r) => (r.notiz = `Dr. "${'['.repeat(1_000)}\\`) });
    expect(() => parseRegistration(fileBytes(brackets), noSecret, now)).not.toThrow();
  });

  it('takes a vorname and a nachname of exactly 100 characters', () => {
    const reg = patched((pd) => {
      pd.vorname = 'v'.repeat(100);
      pd.nachname = 'Ä'.repeat(100);
    });
    const p = mapPatient(parseRegistration(fileBytes(reg), noSecret, now).registration, now);
    expect([p.vorname.length, p.nachname.length]).toEqual([100, 100]);
  });

  it('offen_fuer_gruppentherapie is false when the file leaves it out (or null)', () => {
    for (const patch of [(pd: Record<string, unknown>) => delete pd.offen_fuer_gruppentherapie, (pd: Record<string, unknown>) => (pd.offen_fuer_gruppentherapie = null)]) {
      expect(mapPatient(parseRegistration(fileBytes(patched(patch)), noSecret, now).registration, now).offenFuerGruppentherapie).toBe(false);
    }
  });

  it('letzte_sitzung_vorherige_psychotherapie is a real date YYYY-MM-DD (blank: not given)', () => {
    const at = (v: unknown) => patched((pd) => (pd.letzte_sitzung_vorherige_psychotherapie = v));
    expect(mapPatient(parseRegistration(fileBytes(at('2024-02-29')), noSecret, now).registration, now).letzteSitzungVorherigePsychotherapie).toBe('2024-02-29');
    expect(mapPatient(parseRegistration(fileBytes(at('')), noSecret, now).registration, now).letzteSitzungVorherigePsychotherapie).toBeNull();
    expect(rejectOf(at('03.2024')).message).toContain('patient_data.letzte_sitzung_vorherige_psychotherapie: expected a date YYYY-MM-DD');
    expect(rejectOf(at('2023-02-29')).message).toContain('patient_data.letzte_sitzung_vorherige_psychotherapie: expected a real calendar date');
  });

  it('takes a time range that ends at midnight (24:00)', () => {
    const reg = patched((pd) => (pd.zeitliche_verfuegbarkeit = { freitag: ['18:00-24:00'] }));
    expect(mapPatient(parseRegistration(fileBytes(reg), noSecret, now).registration, now).zeitlicheVerfuegbarkeit).toEqual({ freitag: ['18:00-24:00'] });
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

  it('checks the signature against the file as PHP wrote it: a float 30.0 and integer-like keys in their order', () => {
    // What the site's PHP writes: json_encode keeps the float 30.0 as `30.0` and the keys of
    // raeumliche_verfuegbarkeit in its own order; JSON.parse gives back 30 and puts "2" first.
    const plain = plainRegistration({ token: 'abcdef0123456789' });
    const data = JSON.stringify(plain).replace(/"raeumliche_verfuegbarkeit":\{[^}]*\}/, '"raeumliche_verfuegbarkeit":{"max_km":30.0,"10":"Bus","2":"Rad"}');
    expect(data).toContain('30.0');
    const body = `{"timestamp":"2026-11-24T09:00:00Z","type":"patient_registration","environment":"production","data":${data}}`;
    const signature = createHmac('sha256', secret).update(body).digest('hex');
    const file = `{"signature":"${signature}","signature_version":"hmac-sha256-v1",${body.slice(1)}`;
    const parsed = parseRegistration(Buffer.from(file), signing, now);
    expect(parsed.signatureVerified).toBe(true);
    expect(parsed.registration.patient_data.raeumliche_verfuegbarkeit).toEqual({ max_km: 30, 10: 'Bus', 2: 'Rad' });
    // Pretty-printed, signature members last: the same content.
    const pretty = `{\n  "timestamp": "2026-11-24T09:00:00Z",\n  "type": "patient_registration",\n  "environment": "production",\n  "data": ${data},\n  "signature_version": "hmac-sha256-v1",\n  "signature": "${signature}"\n}`;
    expect(parseRegistration(Buffer.from(pretty), signing, now).signatureVerified).toBe(true);
    // Another number is another content.
    expect(rejectOf(file.replace('30.0', '30.5'), signing)).toMatchObject({ code: 'bad_signature' });
    expect(rejectOf(file.replace('"10":"Bus","2":"Rad"', '"2":"Rad","10":"Bus"'), signing)).toMatchObject({ code: 'bad_signature' });
  });

  it('re-reads JSON text as PHP json_encode writes it', () => {
    expect(phpJsonEncodeText(' { "b" : "M\\u00fcller\\/Stra\u00dfe", "a": [ 1.50, -0, 2e3, true, null ], "c": "x\u2028y", "s": "drop" } ', ['s'])).toBe(
      '{"b":"Müller/Straße","a":[1.50,-0,2e3,true,null],"c":"x\\u2028y"}',
    );
    expect(phpJsonEncodeText('{"a":{"s":1}}', ['s'])).toBe('{"a":{"s":1}}');
    expect(phpJsonEncodeText('[]')).toBe('[]');
    expect(phpJsonEncodeText('{}')).toBe('{}');
  });

  it('lists unknown fields of consent_metadata and of the wrappers of the signed forms with their paths; the consent keeps them', () => {
    const consent = (r: Record<string, unknown>) => {
      const c = r.consent_metadata as Record<string, unknown>;
      c.extra_consent = true;
      c.referrer = '';
    };
    const plain = parseRegistration(fileBytes(plainRegistration({ patch: consent })), noSecret, now);
    expect(plain.unknownFields).toEqual(['consent_metadata.extra_consent', 'consent_metadata.referrer']);
    // Stored as the file carried it (GDPR proof): listing drops nothing.
    expect(plain.rawConsent).toMatchObject({ extra_consent: true, referrer: '' });
    const doc = signedRegistration(plainRegistration({ patch: consent }), { secret, nested: true }) as Record<string, unknown>;
    (doc.data as Record<string, unknown>).build = '1.2';
    doc.site = 'www';
    // Unsigned checking (no secret): the added keys would not match a signature.
    const nested = parseRegistration(fileBytes(doc), noSecret, now);
    expect(nested.unknownFields).toEqual(['site', 'data.build', 'data.data.consent_metadata.extra_consent', 'data.data.consent_metadata.referrer']);
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
    expect(rejectOf(staging, signing).message).toBe('environment: expected "production" (REGISTRATION_ENVIRONMENT), got "staging"');
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

  it('folds names fully: ß, ẞ and SS are the same letters, accents are not dropped', () => {
    expect(foldName('Groß')).toBe(foldName('GROSS'));
    expect(foldName(' groß ')).toBe(foldName('GROẞ'));
    expect(foldName('Strauß')).toBe('strauss');
    expect(foldName('Mu\u0308ller')).toBe(foldName('MÜLLER'));
    expect(foldName('Müller')).not.toBe(foldName('Muller'));
    expect(foldName('Jörg')).not.toBe(foldName('Jorg'));
  });
});

describe('file names as PHP urlencode writes them', () => {
  it('reads + as a space and %2B as a plus, and takes .json in any case', () => {
    expect(parseFileName('registrations/van+der+Berg_Anna+Maria_20250705_74de009a.json')).toEqual({
      ok: true,
      value: { nachname: 'van der Berg', vorname: 'Anna Maria', date: '20250705', token: '74de009a' },
    });
    expect(parseFileName('registrations/van%20der%20Berg_Anna_20250705_84f56991.JSON')).toMatchObject({ ok: true, value: { nachname: 'van der Berg' } });
    expect(parseFileName('registrations/Mustermann_Max_20250705_84f56991.Json').ok).toBe(true);
    expect(parseFileName('registrations/M%C3%BCller+L%C3%BCdenscheidt_Hans_20250705_0b1ab67b.json')).toMatchObject({ ok: true, value: { nachname: 'Müller Lüdenscheidt' } });
    // A literal plus is %2B: not a letter of a name.
    expect(parseFileName('registrations/A%2BB_Max_20250705_0b1ab67b.json').ok).toBe(false);
  });

  it.each([
    ['registrations/Mustermann_Max_2025075_0b1ab67b.json', 'file name: expected {nachname}_{vorname}_{date}_{token}.json (the date part "2025075" is not YYYYMMDD or YYYY-MM-DD)'],
    ['registrations/Mustermann_Max_20251305_0b1ab67b.json', '(the date part "20251305" is not a real date)'],
    ['registrations/Mustermann_Max_20250705_0b1ab67b.txt', '(not a .json file)'],
    ['registrations/Muster_mann_Max_20250705_0b1ab67b.json', '(5 parts separated by underscores, expected 4)'],
    // The name ends with its date: the plainer hint that the token is what is missing.
    ['registrations/Probe_Anna_20251201.json', '(3 parts separated by underscores, expected 4: the token part is missing after the date)'],
    ['registrations/Probe_Anna_2025-12-01.json', '(3 parts separated by underscores, expected 4: the token part is missing after the date)'],
    ['registrations/Probe_Anna_Maria.json', '(3 parts separated by underscores, expected 4)'],
    ['registrations/_Max_20250705_0b1ab67b.json', '(the nachname part "" is not a name)'],
    ['registrations/Mustermann_M4x_20250705_0b1ab67b.json', '(the vorname part "M4x" is not a name)'],
    ['registrations/Mustermann_Max_20250705_0b1.json', '(the token part "0b1" is not 6 or more letters or digits)'],
  ])('says which part of %s does not fit', (name, why) => {
    const r = parseFileName(name);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reason).toMatch(/^file name: expected \{nachname\}_\{vorname\}_\{date\}_\{token\}\.json/);
      expect(r.reason).toContain(why);
      // Logs and dead letters get the text without the parts of the name.
      expect(withholdValues(r.marked)).not.toMatch(/"[^"]+"/);
    }
  });
});

describe('text PostgreSQL cannot store', () => {
  type Reg = Record<string, unknown>;
  const pd = (r: Reg) => r.patient_data as Reg;
  const cm = (r: Reg) => r.consent_metadata as Reg;
  it.each([
    ['a NUL in telefon', (r: Reg) => (pd(r).telefon = '+49 241\u0000'), 'patient_data.telefon: contains a NUL character (\\u0000), which cannot be stored'],
    ['an unpaired surrogate in hausarzt', (r: Reg) => (pd(r).hausarzt = 'Dr. \ud800'), 'patient_data.hausarzt: contains an unpaired surrogate (not valid Unicode), which cannot be stored'],
    ['a NUL in a symptom', (r: Reg) => (pd(r).symptome = ['Mobbing', 'Zw\u0000nge']), 'patient_data.symptome.1: contains a NUL character'],
    ['a NUL in the user agent', (r: Reg) => (cm(r).user_agent = 'Mozilla\u0000'), 'consent_metadata.user_agent: contains a NUL character'],
    ['a NUL in an unknown consent field (stored as carried)', (r: Reg) => (cm(r).referrer = 'x\u0000'), 'consent_metadata.referrer: contains a NUL character'],
    ['a NUL in an unknown key (listed in the ledger)', (r: Reg) => (pd(r)['farbe\u0000'] = 'blau'), 'patient_data: a key: contains a NUL character'],
    ['a NUL in a top-level key', (r: Reg) => (r['x\u0000'] = 1), '(file): a key: contains a NUL character'],
  ])('rejects %s as validation_failed, naming the field', (_k, patch, message) => {
    const err = rejectOf(plainRegistration({ patch }));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toContain(message);
  });

  it('names the other bad fields too, so one corrected upload fixes the file', () => {
    const err = rejectOf(plainRegistration({ patch: (r) => {
      pd(r).telefon = '0241\u0000';
      pd(r).email = 'max@@example.org';
      pd(r).plz = '5207';
    } }));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toMatch(/^patient_data\.telefon: contains a NUL character \(\\u0000\), which cannot be stored; /);
    expect(err.message).toContain('patient_data.email:');
    expect(err.message).toContain('patient_data.plz: expected 5 digits');
    const fields = (err.details as { fields: string[] }).fields;
    expect(fields[0]).toBe('patient_data.telefon');
    expect([...fields].sort()).toEqual(['patient_data.email', 'patient_data.plz', 'patient_data.telefon']);
    // A symptom with a NUL is named once, for the NUL (not also as an unknown symptom).
    const symptom = rejectOf(plainRegistration({ patch: (r) => (pd(r).symptome = ['Mobbing', 'Zw\u0000nge']) }));
    expect(symptom.message).toBe('patient_data.symptome.1: contains a NUL character (\\u0000), which cannot be stored');
  });

  it.each([
    ['raeumliche_verfuegbarkeit', '"max_km": 30', '"max_km": 1e400', 'patient_data.raeumliche_verfuegbarkeit.max_km'],
    ['an unknown consent field (stored as carried)', '"voucher_booking": false', '"voucher_booking": false, "screen": [1, -1E999]', 'consent_metadata.screen.1'],
  ])('rejects a number read as infinity in %s (stored, it would be null), naming the field', (_k, from, to, field) => {
    const text = JSON.stringify(plainRegistration(), null, 1).replace(/\s*\n\s*/g, ' ');
    expect(text).toContain(from);
    const err = rejectOf(Buffer.from(text.replace(from, to)));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toBe(`${field}: a number too large to read (it reads as infinity), which cannot be stored`);
    expect((err.details as { fields: string[] }).fields).toEqual([field]);
  });

  it('rejects a long number with a short exponent read as infinity (3 and 249 zeros, e60), whatever else the file holds', () => {
    // A token without digits next to an `e`: the random one sometimes looked like an exponent (`3e456`) to the scan.
    const reg = plainRegistration({ token: 'abcdabcdabcdabcdabcdabcdabcdabcd' });
    const text = JSON.stringify(reg).replace('"max_km":30', `"max_km":3${'0'.repeat(249)}e60`);
    expect(JSON.parse(text).patient_data.raeumliche_verfuegbarkeit.max_km).toBe(Infinity);
    const err = rejectOf(Buffer.from(text));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toBe('patient_data.raeumliche_verfuegbarkeit.max_km: a number too large to read (it reads as infinity), which cannot be stored');
  });

  it('takes a large number where nothing stores it (an unknown patient field is only named)', () => {
    const text = JSON.stringify(plainRegistration()).replace('"patient_data":{', '"patient_data":{"groesse":1e400,');
    const parsed = parseRegistration(Buffer.from(text), noSecret, now);
    expect(parsed.unknownFields).toContain('patient_data.groesse');
    expect(parsed.registration.patient_data.raeumliche_verfuegbarkeit).toEqual({ max_km: 30 });
  });

  it('names the path inside a signed file', () => {
    const doc = signedRegistration(patched((p) => (p.telefon = '\u0000')), { secret, nested: true });
    expect(rejectOf(doc, signing).message).toBe('data.data.patient_data.telefon: contains a NUL character (\\u0000), which cannot be stored');
  });

  it('accepts emoji and other valid Unicode', () => {
    const reg = patched((p) => (p.hausarzt = 'Dr. Zoë 😀'));
    expect(parseRegistration(fileBytes(reg), noSecret, now).registration.patient_data.hausarzt).toBe('Dr. Zoë 😀');
  });
});

describe('file encoding', () => {
  it('rejects a file that is not UTF-8 (a Latin-1 copy) instead of garbling names', () => {
    const latin1 = Buffer.from(JSON.stringify(plainRegistration({ vorname: 'Jürgen' })), 'latin1');
    const err = rejectOf(latin1);
    expect(err.code).toBe('not_utf8');
    expect(err.message).toMatch(/^file: not UTF-8 text/);
  });

  it('drops a leading byte order mark, also of a signed file (the signature is over the object, not the bytes)', () => {
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    const plain = plainRegistration({ vorname: 'Jürgen' });
    expect(parseRegistration(Buffer.concat([bom, fileBytes(plain)]), noSecret, now).registration.patient_data.vorname).toBe('Jürgen');
    const signed = signedRegistration(plainRegistration({ vorname: 'Jürgen' }), { secret });
    expect(parseRegistration(Buffer.concat([bom, fileBytes(signed)]), signing, now).signatureVerified).toBe(true);
  });
});

describe('birth dates and the Berlin calendar day', () => {
  it('takes a birth date of yesterday in Berlin while it is still that day in UTC', () => {
    const at = new Date('2025-07-05T22:30:00Z'); // 00:30 on 6 July in Berlin
    const reg = patched((p) => (p.geburtsdatum = '2025-07-05'));
    expect(parseRegistration(fileBytes(reg), noSecret, at).registration.patient_data.geburtsdatum).toBe('2025-07-05');
    const today = patched((p) => (p.geburtsdatum = '2025-07-06'));
    expect(() => parseRegistration(fileBytes(today), noSecret, at)).toThrow('patient_data.geburtsdatum: expected a date in the past, got "2025-07-06"');
  });

  it('in winter too (UTC+1)', () => {
    const at = new Date('2025-01-05T23:10:00Z'); // 00:10 on 6 January in Berlin
    expect(() => parseRegistration(fileBytes(patched((p) => (p.geburtsdatum = '2025-01-06'))), noSecret, at)).toThrow('expected a date in the past');
    expect(() => parseRegistration(fileBytes(patched((p) => (p.geburtsdatum = '2025-01-05'))), noSecret, at)).not.toThrow();
  });
});

describe('email addresses', () => {
  it.each(['max+tag@example.org', "o'neil@example.ie", 'max@t-online.de', 'Max.Muster@Example.ORG', 'x@sub.example.co.uk', 'a@b.de', 'max@müller.de', 'jörg@example.de', 'max@xn--mller-kva.de', 'max@example.xn--p1ai', 'иван@пример.рф', 'first.last@123.de'])(
    'accepts %s',
    (email) => {
      expect(parseRegistration(fileBytes(patched((p) => (p.email = email))), noSecret, now).registration.patient_data.email).toBe(email);
    },
  );

  it.each(['max@example-.de', 'max@-example.de', 'max.@example.de', '.max@example.de', 'max@example..de', 'max@example.c', 'a@b', 'max@@example.de', 'max muster@example.de', 'max@example.de.', 'max@123.456', `${'a'.repeat(65)}@example.de`])(
    'rejects %s',
    (email) => {
      expect(rejectOf(patched((p) => (p.email = email))).message).toContain('patient_data.email: expected a valid email address');
    },
  );

  it('normalises internationalised addresses for duplicate checks (NFC, case-folded, trimmed like JavaScript)', () => {
    expect(normalise(' JÖRG@MÜLLER.DE\t')).toBe('jörg@müller.de');
    expect(normalise('jo\u0308rg@mu\u0308ller.de\u00a0')).toBe('jörg@müller.de');
  });
});

describe('the consent timestamp', () => {
  const consentAt = (t: string) => plainRegistration({ patch: (r) => ((r.consent_metadata as Record<string, unknown>).timestamp_utc = t) });

  // Date.parse takes each of these (30 February as 2 March; the year 0000, which PostgreSQL refuses,
  // so the insert failed at every attempt until the import gave up for the fleet's fault).
  it.each(['2025-02-30T14:33:55Z', '2025-07-05T24:00:00Z', '0000-01-01T00:00:00Z', '0001-01-01T00:30:00+01:00', '2025-07-05T14:33:55+24:00'])(
    'rejects %s as no real moment, naming the field',
    (t) => {
      const err = rejectOf(consentAt(t));
      expect(err.code).toBe('validation_failed');
      expect(err.message).toBe(`consent_metadata.timestamp_utc: expected a UTC timestamp such as 2025-07-05T14:33:55Z, got the string "${t}"`);
    },
  );

  it.each(['2025-07-05T14:33:55Z', '2024-02-29T23:59:59.123Z', '2025-07-05T16:33:55+02:00', '2025-07-05T16:33:55+0200'])('accepts %s', (t) => {
    expect(parseRegistration(fileBytes(consentAt(t)), noSecret, now).registration.consent_metadata.timestamp_utc).toBe(t);
  });
});

describe('consent as the file carried it', () => {
  it('keeps the raw consent_metadata beside the parsed values', () => {
    const reg = plainRegistration({
      patch: (r) => {
        const c = r.consent_metadata as Record<string, unknown>;
        c.ip_address = '';
        c.user_agent = '  Mozilla  ';
        delete c.voucher_booking;
        c.extra = { a: 1 };
      },
    });
    const parsed = parseRegistration(fileBytes(reg), noSecret, now);
    expect(parsed.rawConsent).toEqual({ ip_address: '', user_agent: '  Mozilla  ', timestamp_utc: '2025-07-05T14:33:55Z', extra: { a: 1 } });
    expect(parsed.registration.consent_metadata).toMatchObject({ ip_address: undefined, user_agent: 'Mozilla', voucher_booking: false });
  });
});

describe('a registration uploaded again (same token): what differs from its patient', () => {
  /** The patient row as PostgreSQL gives it back (to_jsonb: columns by name, jsonb keys in its own order). */
  const stored = (reg: Record<string, unknown>) => {
    const p = mapPatient(parseRegistration(fileBytes(reg), noSecret, now).registration, now);
    return {
      id: 9, anrede: p.anrede, geschlecht: p.geschlecht, vorname: p.vorname, nachname: p.nachname, strasse: p.strasse, plz: p.plz, ort: p.ort,
      email: p.email, telefon: p.telefon, hausarzt: p.hausarzt, krankenkasse: p.krankenkasse, geburtsdatum: p.geburtsdatum, symptome: p.symptome,
      erfahrung_mit_psychotherapie: p.erfahrungMitPsychotherapie, letzte_sitzung_vorherige_psychotherapie: p.letzteSitzungVorherigePsychotherapie,
      empfehler_der_unterstuetzung: p.empfehlerDerUnterstuetzung, verkehrsmittel: p.verkehrsmittel, offen_fuer_gruppentherapie: p.offenFuerGruppentherapie,
      zeitliche_verfuegbarkeit: p.zeitlicheVerfuegbarkeit, raeumliche_verfuegbarkeit: p.raeumlicheVerfuegbarkeit,
      bevorzugtes_therapeutengeschlecht: p.bevorzugtesTherapeutengeschlecht, bevorzugtes_therapieverfahren: p.bevorzugtesTherapieverfahren,
      zahlungsreferenz: p.zahlungsreferenz, status: 'in_Therapie', zahlung_eingegangen: true,
    };
  };
  const patientOf = (reg: Record<string, unknown>) => mapPatient(parseRegistration(fileBytes(reg), noSecret, now).registration, now);
  const base = plainRegistration({ token: 'feedc0de00000001', email: 'Max.Muster@example.org' });
  const again = (fn: (pd: Record<string, unknown>) => void) => {
    const copy = structuredClone(base);
    fn(copy.patient_data as Record<string, unknown>);
    return copy;
  };

  it('nothing, for the same content written differently (spaces, email case, symptom order, key order); status and payment fields are not compared', () => {
    const row = stored(base);
    const same = again((pd) => {
      pd.vorname = ' Max ';
      pd.email = ' max.muster@EXAMPLE.org';
      pd.symptome = [...(pd.symptome as string[])].reverse();
      pd.zeitliche_verfuegbarkeit = { mittwoch: ['14:00-18:00'], montag: ['09:00-12:00'] };
      pd.telefon = '+49 241 123456 ';
    });
    expect(differingPatientFields(patientOf(same), row)).toEqual([]);
    expect(differingPatientFields(patientOf(base), { ...row, zeitliche_verfuegbarkeit: { mittwoch: ['14:00-18:00'], montag: ['09:00-12:00'] } })).toEqual([]);
  });

  it('the names of the fields that differ, a field given or left out too', () => {
    const row = stored(base);
    const changed = again((pd) => {
      pd.telefon = '+49 170 1234567';
      pd.symptome = ['Mobbing'];
      pd.raeumliche_verfuegbarkeit = { max_km: 10 };
      delete pd.hausarzt;
    });
    expect(differingPatientFields(patientOf(changed), row)).toEqual(['telefon', 'hausarzt', 'symptome', 'raeumliche_verfuegbarkeit']);
  });

  it('the import records a digest per field, never the value; a re-upload is compared with them as with the patient', () => {
    const token = base.registration_token as string;
    const digests = patientDataDigests(patientOf(base), token);
    expect(Object.keys(digests)).toHaveLength(22);
    expect(Object.values(digests).every((d) => /^[0-9a-f]{16}$/.test(d))).toBe(true);
    expect(JSON.stringify(digests)).not.toMatch(/Muster|123456|52062|Aachen/i);
    // Equal values of two registrations do not have equal digests.
    expect(patientDataDigests(patientOf(base), 'other0000000000').plz).not.toBe(digests.plz);
    const same = again((pd) => {
      pd.email = ' max.muster@EXAMPLE.org';
      pd.symptome = [...(pd.symptome as string[])].reverse();
    });
    expect(differingFromImport(patientOf(same), token, digests)).toEqual([]);
    const changed = again((pd) => {
      pd.telefon = '+49 170 1234567';
      delete pd.hausarzt;
    });
    expect(differingFromImport(patientOf(changed), token, digests)).toEqual(['telefon', 'hausarzt']);
    // A field the import did not record is not compared.
    const { telefon: _, ...older } = digests;
    expect(differingFromImport(patientOf(changed), token, older)).toEqual(['hausarzt']);
  });
});
