import { createHash } from 'node:crypto';
import type { Registration } from './registration-schema.js';

/** The patient row as the platform's `patient_service.patienten` wants it. */
export interface NewPatient {
  anrede: string;
  geschlecht: string;
  vorname: string;
  nachname: string;
  strasse: string | null;
  plz: string | null;
  ort: string | null;
  email: string | null;
  telefon: string | null;
  hausarzt: string | null;
  krankenkasse: string | null;
  geburtsdatum: string | null;
  symptome: string[];
  erfahrungMitPsychotherapie: boolean | null;
  letzteSitzungVorherigePsychotherapie: string | null;
  empfehlerDerUnterstuetzung: string | null;
  verkehrsmittel: string | null;
  offenFuerGruppentherapie: boolean;
  zeitlicheVerfuegbarkeit: Record<string, string[]> | null;
  raeumlicheVerfuegbarkeit: Record<string, unknown> | null;
  bevorzugtesTherapeutengeschlecht: string | null;
  bevorzugtesTherapieverfahren: string | null;
  zahlungsreferenz: string;
  vertraegeUnterschrieben: boolean;
  zahlungEingegangen: boolean;
  status: 'offen' | 'auf_der_Suche';
  startdatum: string | null;
}

/** The calendar day of `now` in Europe/Berlin (the import day for `startdatum`). */
const dayFormat = new Intl.DateTimeFormat('en-CA', { timeZone: 'Europe/Berlin', year: 'numeric', month: '2-digit', day: '2-digit' });

export function berlinDay(now: Date): string {
  return dayFormat.format(now);
}

/**
 * Maps a valid registration to the patient row, with the derived fields of DOMAIN.md:
 * zahlungsreferenz = first 8 chars of the token; vouchers: `V_` + first 6 chars, paid,
 * status auf_der_Suche, startdatum = import day.
 */
export function mapPatient(reg: Registration, now: Date): NewPatient {
  const d = reg.patient_data;
  const voucher = reg.consent_metadata.voucher_booking === true;
  const n = <T>(v: T | undefined): T | null => (v === undefined ? null : v);
  return {
    anrede: d.anrede,
    geschlecht: d.geschlecht,
    vorname: d.vorname,
    nachname: d.nachname,
    strasse: n(d.strasse),
    plz: n(d.plz),
    ort: n(d.ort),
    email: n(d.email),
    telefon: n(d.telefon),
    hausarzt: n(d.hausarzt),
    krankenkasse: n(d.krankenkasse),
    geburtsdatum: n(d.geburtsdatum),
    symptome: d.symptome,
    erfahrungMitPsychotherapie: n(d.erfahrung_mit_psychotherapie),
    letzteSitzungVorherigePsychotherapie: n(d.letzte_sitzung_vorherige_psychotherapie),
    empfehlerDerUnterstuetzung: n(d.empfehler_der_unterstuetzung),
    verkehrsmittel: n(d.verkehrsmittel),
    offenFuerGruppentherapie: d.offen_fuer_gruppentherapie,
    zeitlicheVerfuegbarkeit: n(d.zeitliche_verfuegbarkeit) as Record<string, string[]> | null,
    raeumlicheVerfuegbarkeit: n(d.raeumliche_verfuegbarkeit) as Record<string, unknown> | null,
    bevorzugtesTherapeutengeschlecht: n(d.bevorzugtes_therapeutengeschlecht),
    bevorzugtesTherapieverfahren: n(d.bevorzugtes_therapieverfahren),
    zahlungsreferenz: voucher ? `V_${reg.registration_token.slice(0, 6)}` : reg.registration_token.slice(0, 8),
    vertraegeUnterschrieben: true,
    zahlungEingegangen: voucher,
    status: voucher ? 'auf_der_Suche' : 'offen',
    startdatum: voucher ? berlinDay(now) : null,
  };
}

/** Trimmed, Unicode NFC, lower case: how email addresses are compared for duplicates (the lookup lowers stored ones the same way, whatever the database's collation). */
export function normalise(s: string | null | undefined): string {
  return (s ?? '').normalize('NFC').trim().toLocaleLowerCase('de-DE').normalize('NFC');
}

/**
 * Trimmed, Unicode NFC, case-folded: how names are compared for duplicates. Lower case alone
 * keeps "Groß" and "GROSS" apart; folding (lower, upper, lower: ß and ẞ become ss, as in
 * Unicode's full case folding) makes them equal, as a person writing their name in capitals
 * expects.
 */
export function foldName(s: string | null | undefined): string {
  return normalise(s).toUpperCase().toLowerCase().normalize('NFC');
}

/** The patient_data fields of a registration: the file's name, the patient row's property and column. */
const PATIENT_DATA_FIELDS: ReadonlyArray<[field: string, prop: keyof NewPatient, column: string]> = [
  ['anrede', 'anrede', 'anrede'],
  ['geschlecht', 'geschlecht', 'geschlecht'],
  ['vorname', 'vorname', 'vorname'],
  ['nachname', 'nachname', 'nachname'],
  ['strasse', 'strasse', 'strasse'],
  ['plz', 'plz', 'plz'],
  ['ort', 'ort', 'ort'],
  ['email', 'email', 'email'],
  ['telefon', 'telefon', 'telefon'],
  ['hausarzt', 'hausarzt', 'hausarzt'],
  ['krankenkasse', 'krankenkasse', 'krankenkasse'],
  ['geburtsdatum', 'geburtsdatum', 'geburtsdatum'],
  ['symptome', 'symptome', 'symptome'],
  ['erfahrung_mit_psychotherapie', 'erfahrungMitPsychotherapie', 'erfahrung_mit_psychotherapie'],
  ['letzte_sitzung_vorherige_psychotherapie', 'letzteSitzungVorherigePsychotherapie', 'letzte_sitzung_vorherige_psychotherapie'],
  ['empfehler_der_unterstuetzung', 'empfehlerDerUnterstuetzung', 'empfehler_der_unterstuetzung'],
  ['verkehrsmittel', 'verkehrsmittel', 'verkehrsmittel'],
  ['offen_fuer_gruppentherapie', 'offenFuerGruppentherapie', 'offen_fuer_gruppentherapie'],
  ['zeitliche_verfuegbarkeit', 'zeitlicheVerfuegbarkeit', 'zeitliche_verfuegbarkeit'],
  ['raeumliche_verfuegbarkeit', 'raeumlicheVerfuegbarkeit', 'raeumliche_verfuegbarkeit'],
  ['bevorzugtes_therapeutengeschlecht', 'bevorzugtesTherapeutengeschlecht', 'bevorzugtes_therapeutengeschlecht'],
  ['bevorzugtes_therapieverfahren', 'bevorzugtesTherapieverfahren', 'bevorzugtes_therapieverfahren'],
];

/** JSON with object keys sorted (jsonb keeps its own key order) and the symptoms as a set; undefined and null alike. */
function canonical(field: string, v: unknown): string {
  if (v === undefined || v === null) return 'null';
  if (field === 'symptome' && Array.isArray(v)) return JSON.stringify([...v].map(String).sort());
  if (field === 'email' && typeof v === 'string') return JSON.stringify(normalise(v));
  const sorted = (x: unknown): unknown =>
    Array.isArray(x) ? x.map(sorted) : x && typeof x === 'object' ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, y]) => [k, sorted(y)])) : x;
  return JSON.stringify(sorted(v));
}

/**
 * The patient_data fields (their names in the file, never their values) in which a registration
 * uploaded again (same registration token) differs from the patient imported for that token
 * (`stored`: the patient row, columns by name), both as the import normalises them: text trimmed and
 * composed, blank as not given, the email compared as the duplicate check compares it (case
 * folded), the symptoms as a set, objects whatever their key order. Empty: a retry of the same
 * content. Derived fields (payment reference, status, ...) are not patient_data and not compared.
 */
export function differingPatientFields(p: NewPatient, stored: Record<string, unknown>): string[] {
  return PATIENT_DATA_FIELDS.filter(([field, prop, column]) => canonical(field, p[prop]) !== canonical(field, stored[column])).map(([field]) => field);
}

/**
 * The digests the import of a registration records on its ledger row (the import that writes the
 * consent of its token): per patient_data field (its name in the file), 16 hex chars of SHA-256 over
 * the token, the field's name and its value as the import normalises it for the comparison (see
 * differingPatientFields). Never the values: the ledger is no second copy of personal data. The
 * token in the digest keeps equal values of two registrations from having equal digests.
 */
export function patientDataDigests(p: NewPatient, registrationToken: string): Record<string, string> {
  return Object.fromEntries(PATIENT_DATA_FIELDS.map(([field, prop]) => [field, fieldDigest(registrationToken, field, p[prop])]));
}

function fieldDigest(token: string, field: string, v: unknown): string {
  return createHash('sha256').update(JSON.stringify([token, field, canonical(field, v)])).digest('hex').slice(0, 16);
}

/**
 * The patient_data fields (names only) in which a registration uploaded again differs from what the
 * import of its token read (`recorded`: that import's patientDataDigests). A field the import did
 * not record (added to the list since) is not compared. Empty: a retry of the same content, also
 * when staff corrected the patient since.
 */
export function differingFromImport(p: NewPatient, registrationToken: string, recorded: Record<string, string>): string[] {
  return PATIENT_DATA_FIELDS.filter(([field, prop]) => typeof recorded[field] === 'string' && recorded[field] !== fieldDigest(registrationToken, field, p[prop])).map(
    ([field]) => field,
  );
}
