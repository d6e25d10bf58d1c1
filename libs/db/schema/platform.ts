import { sql } from 'drizzle-orm';
import {
  boolean,
  date,
  integer,
  jsonb,
  pgSchema,
  serial,
  text,
  timestamp,
  uniqueIndex,
  varchar,
  index,
} from 'drizzle-orm/pg-core';
import { asciiEmailKeySql, beyondAsciiSql, fullEmailKeySql } from './email-key.js';

/**
 * The platform's tables that the fleet writes or reads, with the platform's German names
 * (DOMAIN.md). They belong to other services: the fleet creates them only when it runs
 * standalone (PLATFORM_MIGRATIONS=true, the default and in tests). Against the platform's
 * own database the fleet checks at start that these tables and columns exist.
 */

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const patientService = pgSchema('patient_service');
export const therapistService = pgSchema('therapist_service');
export const matchingService = pgSchema('matching_service');

export const patientStatuses = [
  'offen',
  'auf_der_Suche',
  'in_Therapie',
  'Therapie_abgeschlossen',
  'Suche_abgebrochen',
  'Therapie_abgebrochen',
] as const;
export type PatientStatus = (typeof patientStatuses)[number];

export const patienten = patientService.table(
  'patienten',
  {
    id: serial('id').primaryKey(),
    anrede: varchar('anrede', { length: 20 }).notNull(),
    geschlecht: varchar('geschlecht', { length: 20 }).notNull(),
    vorname: varchar('vorname', { length: 100 }).notNull(),
    nachname: varchar('nachname', { length: 100 }).notNull(),
    strasse: varchar('strasse', { length: 255 }),
    plz: varchar('plz', { length: 10 }),
    ort: varchar('ort', { length: 100 }),
    email: varchar('email', { length: 255 }),
    telefon: varchar('telefon', { length: 50 }),
    hausarzt: varchar('hausarzt', { length: 255 }),
    krankenkasse: varchar('krankenkasse', { length: 100 }),
    geburtsdatum: date('geburtsdatum', { mode: 'string' }),
    symptome: jsonb('symptome').$type<string[]>(),
    erfahrungMitPsychotherapie: boolean('erfahrung_mit_psychotherapie'),
    letzteSitzungVorherigePsychotherapie: date('letzte_sitzung_vorherige_psychotherapie', { mode: 'string' }),
    empfehlerDerUnterstuetzung: text('empfehler_der_unterstuetzung'),
    verkehrsmittel: varchar('verkehrsmittel', { length: 50 }),
    offenFuerGruppentherapie: boolean('offen_fuer_gruppentherapie').notNull().default(false),
    zeitlicheVerfuegbarkeit: jsonb('zeitliche_verfuegbarkeit').$type<Record<string, string[]>>(),
    raeumlicheVerfuegbarkeit: jsonb('raeumliche_verfuegbarkeit').$type<Record<string, unknown>>(),
    bevorzugtesTherapeutengeschlecht: varchar('bevorzugtes_therapeutengeschlecht', { length: 20 }),
    bevorzugtesTherapieverfahren: varchar('bevorzugtes_therapieverfahren', { length: 100 }),
    zahlungsreferenz: varchar('zahlungsreferenz', { length: 20 }).notNull(),
    vertraegeUnterschrieben: boolean('vertraege_unterschrieben').notNull().default(false),
    zahlungEingegangen: boolean('zahlung_eingegangen').notNull().default(false),
    status: varchar('status', { length: 50 }).$type<PatientStatus>().notNull().default('offen'),
    startdatum: date('startdatum', { mode: 'string' }),
    weeklyUpdateOptOut: boolean('weekly_update_opt_out').notNull().default(false),
    weeklyUpdateLastSent: ts('weekly_update_last_sent'),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('patienten_zahlungsreferenz_uq').on(t.zahlungsreferenz),
    // The import's duplicate check by email (email-key.ts): addresses of ASCII only by their key, the others all.
    index('patienten_email_ascii_key_idx').on(sql.raw(asciiEmailKeySql('email'))),
    index('patienten_email_full_key_idx').on(sql.raw(fullEmailKeySql('email'))).where(sql.raw(beyondAsciiSql('email'))),
  ],
);

export const therapistStatuses = ['aktiv', 'gesperrt', 'inaktiv'] as const;
export type TherapistStatus = (typeof therapistStatuses)[number];

export const therapeuten = therapistService.table(
  'therapeuten',
  {
    id: serial('id').primaryKey(),
    anrede: varchar('anrede', { length: 20 }).notNull(),
    geschlecht: varchar('geschlecht', { length: 20 }).notNull(),
    titel: varchar('titel', { length: 50 }),
    vorname: varchar('vorname', { length: 100 }).notNull(),
    nachname: varchar('nachname', { length: 100 }).notNull(),
    strasse: varchar('strasse', { length: 255 }),
    plz: varchar('plz', { length: 10 }).notNull(),
    ort: varchar('ort', { length: 100 }),
    telefon: varchar('telefon', { length: 50 }),
    fax: varchar('fax', { length: 50 }),
    email: varchar('email', { length: 255 }),
    telefonischeErreichbarkeit: jsonb('telefonische_erreichbarkeit').$type<Record<string, string[]>>(),
    fremdsprachen: jsonb('fremdsprachen').$type<string[]>(),
    psychotherapieverfahren: varchar('psychotherapieverfahren', { length: 100 }),
    status: varchar('status', { length: 20 }).$type<TherapistStatus>().notNull().default('aktiv'),
    sperrgrund: text('sperrgrund'),
    sperrdatum: date('sperrdatum', { mode: 'string' }),
    kassensitz: boolean('kassensitz').notNull().default(true),
    potenziellVerfuegbar: boolean('potenziell_verfuegbar').notNull().default(false),
    potenziellVerfuegbarNotizen: text('potenziell_verfuegbar_notizen'),
    ueberCuravaniInformiert: boolean('ueber_curavani_informiert').notNull().default(false),
    naechsterKontaktMoeglich: date('naechster_kontakt_moeglich', { mode: 'string' }),
    bevorzugteDiagnosen: jsonb('bevorzugte_diagnosen').$type<string[]>(),
    alterMin: integer('alter_min'),
    alterMax: integer('alter_max'),
    geschlechtspraeferenz: varchar('geschlechtspraeferenz', { length: 50 }),
    arbeitszeiten: jsonb('arbeitszeiten').$type<Record<string, unknown>>(),
    bevorzugtGruppentherapie: boolean('bevorzugt_gruppentherapie').notNull().default(false),
    letzterKontaktEmail: date('letzter_kontakt_email', { mode: 'string' }),
    letzterKontaktTelefon: date('letzter_kontakt_telefon', { mode: 'string' }),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [index('therapeuten_name_plz_idx').on(t.vorname, t.nachname, t.plz), index('therapeuten_plz_idx').on(t.plz)],
);

export const platzsucheStatuses = ['aktiv', 'erfolgreich', 'pausiert', 'abgebrochen'] as const;

export const platzsuche = matchingService.table(
  'platzsuche',
  {
    id: serial('id').primaryKey(),
    patientId: integer('patient_id').notNull(),
    status: varchar('status', { length: 20 }).$type<(typeof platzsucheStatuses)[number]>().notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [index('platzsuche_patient_idx').on(t.patientId, t.status)],
);

export const antworttypen = [
  'vollstaendige_Annahme',
  'teilweise_Annahme',
  'vollstaendige_Ablehnung',
  'keine_Antwort',
] as const;

export const therapeutenanfrage = matchingService.table('therapeutenanfrage', {
  id: serial('id').primaryKey(),
  therapistId: integer('therapist_id').notNull(),
  gesendetDatum: ts('gesendet_datum'),
  antwortDatum: ts('antwort_datum'),
  antworttyp: varchar('antworttyp', { length: 30 }).$type<(typeof antworttypen)[number]>(),
  createdAt: ts('created_at').notNull().defaultNow(),
});

export const anfragePatientStatuses = ['anstehend', 'angenommen', 'abgelehnt', 'keine_antwort'] as const;

export const therapeutAnfragePatient = matchingService.table(
  'therapeut_anfrage_patient',
  {
    id: serial('id').primaryKey(),
    therapeutenanfrageId: integer('therapeutenanfrage_id').notNull(),
    platzsucheId: integer('platzsuche_id').notNull(),
    status: varchar('status', { length: 20 }).$type<(typeof anfragePatientStatuses)[number]>().notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
  },
  (t) => [index('tap_platzsuche_idx').on(t.platzsucheId), index('tap_anfrage_idx').on(t.therapeutenanfrageId)],
);
