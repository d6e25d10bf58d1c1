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
