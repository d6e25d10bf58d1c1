import { z } from 'zod';
import { EMAIL_ADDRESS } from '../../libs/text/index.js';

/** The 30 symptoms of the registration form, exact spelling (DOMAIN.md section 1). */
export const SYMPTOMS = [
  'Depression / Niedergeschlagenheit',
  'Ängste / Panikattacken',
  'Burnout / Erschöpfung',
  'Schlafstörungen',
  'Stress / Überforderung',
  'Trauer / Verlust',
  'Reizbarkeit / Wutausbrüche',
  'Stimmungsschwankungen',
  'Innere Leere',
  'Einsamkeit',
  'Sorgen / Grübeln',
  'Selbstzweifel',
  'Konzentrationsprobleme',
  'Negative Gedanken',
  'Entscheidungsschwierigkeiten',
  'Psychosomatische Beschwerden',
  'Chronische Schmerzen',
  'Essstörungen',
  'Suchtprobleme (Alkohol/Drogen)',
  'Sexuelle Probleme',
  'Beziehungsprobleme',
  'Familienkonflikte',
  'Sozialer Rückzug',
  'Mobbing',
  'Trennungsschmerz',
  'Traumatische Erlebnisse',
  'Zwänge',
  'Selbstverletzung',
  'Suizidgedanken',
  'Identitätskrise',
] as const;

const symptomSet = new Set<string>(SYMPTOMS);

export const ANREDE = ['Herr', 'Frau'] as const;
export const GESCHLECHT = ['männlich', 'weiblich', 'divers', 'keine_Angabe'] as const;
export const THERAPEUTENGESCHLECHT = ['Männlich', 'Weiblich', 'Egal'] as const;
export const THERAPIEVERFAHREN = ['egal', 'Verhaltenstherapie', 'tiefenpsychologisch_fundierte_Psychotherapie'] as const;

/**
 * A value from the file quoted in an error text, marked so that it can be left out where
 * the text goes beyond the database (logs, dead letters): see `withholdValues`.
 */
export function quoted(v: string): string {
  return `\uE000${JSON.stringify(v.length > 40 ? v.slice(0, 37) + '...' : v)}\uE001`;
}

/** The error text for staff (ledger, email): the quoted values shown. */
export function showValues(text: string): string {
  return text.replace(/[\uE000\uE001]/g, '');
}

/** The error text for logs and dead letters: quoted values from the file left out. */
export function withholdValues(text: string): string {
  return text.replace(/\uE000[^\uE001]*\uE001/g, '(value not shown)');
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${quoted(v)}`;
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v}`;
}

/** Error texts name the rule and what was found (never more of the value than needed). */
const requiredOr = (rule: string) => (iss: { input?: unknown }) =>
  iss.input === undefined ? `required: ${rule}` : `${rule}, got ${typeName(iss.input)}`;

/**
 * An enum value or symptom as compared with the form's spelling: surrounding whitespace trimmed
 * (as names, plz and email are: `" Herr "` was refused), and Unicode NFC: "männlich" with a
 * combining diaeresis (as some systems write umlauts) is the same spelling as the form's
 * composed one. Case stays as written: the spelling must be exact.
 */
const composed = (v: unknown) => (typeof v === 'string' ? v.trim().normalize('NFC') : v);

const oneOf = (values: readonly string[]) =>
  z.preprocess(
    composed,
    z.enum(values as [string, ...string[]], {
      error: (iss) =>
        iss.input === undefined
          ? `required: one of ${values.join(', ')}`
          : `expected one of ${values.join(', ')}, got ${typeName(iss.input)}`,
    }),
  );

/** Empty strings from the form mean "not given". */
const blankToUndefined = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);

/**
 * Trimmed and composed (NFC): a limit of N characters counts characters, not the code points of
 * umlauts written decomposed (a 96-letter name was refused as 112), and the text is stored in
 * the one form the platform compares and searches in.
 */
const cleanText = (v: string) => v.trim().normalize('NFC');

const requiredText = (max: number) =>
  z.preprocess(
    (v) => (typeof v === 'string' ? cleanText(v) : v),
    z
      .string({ error: requiredOr('expected text') })
      .min(1, { error: 'required: must not be empty' })
      .max(max, { error: (iss) => `at most ${max} characters, got ${(iss.input as string).length}` }),
  );

const optionalText = (max?: number) =>
  z.preprocess(
    (v) => (typeof v === 'string' ? blankToUndefined(cleanText(v)) : v === null ? undefined : v),
    (max === undefined
      ? z.string({ error: (iss) => `expected text, got ${typeName(iss.input)}` })
      : z
          .string({ error: (iss) => `expected text, got ${typeName(iss.input)}` })
          .max(max, { error: (iss) => `at most ${max} characters, got ${(iss.input as string).length}` })
    ).optional(),
  );

const optionalEnum = (values: readonly string[]) =>
  z.preprocess((v) => (v === null ? undefined : blankToUndefined(v)), oneOf(values).optional());


function isRealDate(s: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const dt = new Date(Date.UTC(y, mo - 1, d));
  return dt.getUTCFullYear() === y && dt.getUTCMonth() === mo - 1 && dt.getUTCDate() === d;
}

/** The earliest consent time taken: the other dates of the file begin there too. */
const EARLIEST = Date.UTC(1900, 0, 1);

/**
 * `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` naming a moment that exists. `Date.parse` alone takes
 * `2025-02-30T...` (as 2 March) and `...T24:00:00Z`, and the year 0000, which PostgreSQL refuses:
 * the insert failed at every attempt until the import gave up, as if the fleet were at fault.
 */
function isRealTimestamp(s: string): boolean {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-](\d{2}):?(\d{2}))$/.exec(s);
  if (!m || !isRealDate(m[1]!)) return false;
  if (Number(m[2]) > 23 || Number(m[3]) > 59 || Number(m[4]) > 59) return false;
  if (m[7] !== undefined && (Number(m[7]) > 23 || Number(m[8]) > 59)) return false;
  const at = Date.parse(s);
  return !Number.isNaN(at) && at >= EARLIEST;
}

/**
 * Why `registration_timestamp` (`2025-07-05 14:33:55`, as the site writes it; a `T` between and
 * no seconds are taken too) is not one, or null. The whole value: the pattern was not anchored at
 * its end and no date was checked, so `2025-13-45 99:99:99 garbage` was stored as consent proof.
 */
function registrationTimestampProblem(s: string): string | null {
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?$/.exec(s);
  if (!m) return `expected a timestamp YYYY-MM-DD HH:MM:SS, got ${typeName(s)}`;
  const real = isRealDate(m[1]!) && Number(m[2]) <= 23 && Number(m[3]) <= 59 && Number(m[4] ?? 0) <= 59;
  if (!real) return `expected a real date and time, got ${quoted(s)}`;
  if (m[1]! < '1900-01-01') return `expected a date after 1900-01-01, got ${quoted(s)}`;
  return null;
}

/** `YYYY-MM-DD`, a date that exists; `past` also demands it lies before `today`. */
const dateField = (opts: { past: boolean; today: () => string }) =>
  z.preprocess(
    (v) => (v === null ? undefined : blankToUndefined(v)),
    z
      .string({ error: (iss) => `expected a date YYYY-MM-DD, got ${typeName(iss.input)}` })
      .superRefine((s, ctx) => {
        if (!/^\d{4}-\d{2}-\d{2}$/.test(s)) {
          ctx.addIssue({ code: 'custom', message: `expected a date YYYY-MM-DD, got ${typeName(s)}` });
        } else if (!isRealDate(s)) {
          ctx.addIssue({ code: 'custom', message: `expected a real calendar date, got ${quoted(s)}` });
        } else if (opts.past && s >= opts.today()) {
          ctx.addIssue({ code: 'custom', message: `expected a date in the past, got ${quoted(s)}` });
        } else if (s < '1900-01-01') {
          ctx.addIssue({ code: 'custom', message: `expected a date after 1900-01-01, got ${quoted(s)}` });
        }
      })
      .optional(),
  );

const optionalBool = z.preprocess(
  (v) => (v === null ? undefined : v),
  z.boolean({ error: (iss) => `expected true or false, got ${typeName(iss.input)}` }).optional(),
);

/** HH:MM-HH:MM; a range may end at 24:00 (midnight), not later (24:30 is no time of day). */
const timeRange = /^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$/;

/** PHP encodes an empty associative array as `[]`: accept it as an empty object. */
const emptyArrayAsObject = (v: unknown) => (Array.isArray(v) && v.length === 0 ? {} : v === null ? undefined : v);

const zeitlicheVerfuegbarkeit = z.preprocess(
  emptyArrayAsObject,
  z
    .record(
      z.string(),
      z.array(
        z.string({ error: (iss) => `expected a time range HH:MM-HH:MM, got ${typeName(iss.input)}` }).superRefine((s, ctx) => {
          if (!timeRange.test(s)) {
            ctx.addIssue({ code: 'custom', message: `expected a time range HH:MM-HH:MM, got ${typeName(s)}` });
          } else if (s.slice(6) <= s.slice(0, 5)) {
            // "18:00-09:00", "10:00-10:00": no time at all (a range over midnight is two, one per day).
            ctx.addIssue({ code: 'custom', message: `expected a time range that ends after it starts, got ${quoted(s)}` });
          }
        }),
        { error: (iss) => `expected a list of time ranges, got ${typeName(iss.input)}` },
      ),
      { error: (iss) => `expected an object day -> ["HH:MM-HH:MM"], got ${typeName(iss.input)}` },
    )
    .optional(),
);

const raeumlicheVerfuegbarkeit = z.preprocess(
  emptyArrayAsObject,
  z.record(z.string(), z.unknown(), { error: (iss) => `expected an object such as {"max_km": 30}, got ${typeName(iss.input)}` }).optional(),
);

const symptome = z
  .array(z.preprocess(composed, z.unknown()), {
    error: (iss) =>
      iss.input === undefined || iss.input === null
        ? 'required: a list of 1 to 6 symptoms'
        : `expected a list of 1 to 6 symptoms, got ${typeName(iss.input)}`,
  })
  .superRefine((list, ctx) => {
    if (list.length < 1 || list.length > 6) {
      ctx.addIssue({ code: 'custom', message: `expected 1 to 6 entries, got ${list.length}` });
    }
    const seen = new Set<string>();
    // A symptom listed three times is named once (at its second place), not once per repeat.
    const repeated = new Set<string>();
    list.forEach((entry, i) => {
      if (typeof entry !== 'string' || !symptomSet.has(entry)) {
        ctx.addIssue({
          code: 'custom',
          path: [i],
          message: `expected one of the 30 symptoms of the form (exact spelling), got ${typeName(entry)}`,
        });
      } else if (seen.has(entry)) {
        if (!repeated.has(entry)) ctx.addIssue({ code: 'custom', path: [i], message: `listed more than once: ${quoted(entry)}` });
        repeated.add(entry);
      } else seen.add(entry);
    });
  })
  .transform((list) => list as string[]);

export function patientDataSchema(today: () => string) {
  return z.object(
    {
      anrede: oneOf(ANREDE),
      geschlecht: oneOf(GESCHLECHT),
      vorname: requiredText(100),
      nachname: requiredText(100),
      strasse: optionalText(255),
      plz: z.preprocess(
        (v) => (v === null ? undefined : typeof v === 'string' ? blankToUndefined(v.trim()) : v),
        z
          .string({ error: (iss) => `expected 5 digits, got ${typeName(iss.input)}` })
          .regex(/^\d{5}$/, { error: (iss) => `expected 5 digits, got ${typeName(iss.input)}` })
          .optional(),
      ),
      ort: optionalText(100),
      email: z.preprocess(
        (v) => (v === null ? undefined : typeof v === 'string' ? blankToUndefined(v.trim()) : v),
        z
          .email({ pattern: EMAIL_ADDRESS, error: (iss) => `expected a valid email address, got ${typeName(iss.input)}` })
          .max(255, { error: (iss) => `at most 255 characters, got ${(iss.input as string).length}` })
          .optional(),
      ),
      telefon: optionalText(50),
      hausarzt: optionalText(255),
      krankenkasse: optionalText(100),
      geburtsdatum: dateField({ past: true, today }),
      symptome,
      erfahrung_mit_psychotherapie: optionalBool,
      letzte_sitzung_vorherige_psychotherapie: dateField({ past: false, today }),
      empfehler_der_unterstuetzung: optionalText(),
      verkehrsmittel: optionalText(50),
      offen_fuer_gruppentherapie: z.preprocess(
        (v) => (v === null ? undefined : v),
        z.boolean({ error: (iss) => `expected true or false, got ${typeName(iss.input)}` }).default(false),
      ),
      zeitliche_verfuegbarkeit: zeitlicheVerfuegbarkeit,
      raeumliche_verfuegbarkeit: raeumlicheVerfuegbarkeit,
      bevorzugtes_therapeutengeschlecht: optionalEnum(THERAPEUTENGESCHLECHT),
      bevorzugtes_therapieverfahren: optionalEnum(THERAPIEVERFAHREN),
    },
    { error: (iss) => (iss.input === undefined ? 'required: an object with the patient data' : `expected an object, got ${typeName(iss.input)}`) },
  );
}

export const consentMetadataSchema = z.looseObject(
  {
    ip_address: optionalText(),
    user_agent: optionalText(),
    timestamp_utc: z
      .string({ error: requiredOr('expected a UTC timestamp such as 2025-07-05T14:33:55Z') })
      .refine(isRealTimestamp, {
        error: (iss) => `expected a UTC timestamp such as 2025-07-05T14:33:55Z, got ${typeName(iss.input)}`,
      }),
    voucher_booking: z.preprocess(
      (v) => (v === null ? undefined : v),
      z.boolean({ error: (iss) => `expected true or false, got ${typeName(iss.input)}` }).default(false),
    ),
  },
  { error: (iss) => (iss.input === undefined ? 'required: the consent given at registration (GDPR proof)' : `expected an object, got ${typeName(iss.input)}`) },
);

/** What a registration token is: at least 8 letters or digits (`_` and `-` taken too). */
export const TOKEN_RULE = /^[A-Za-z0-9_-]{8,200}$/;

export function registrationSchema(today: () => string) {
  return z.object(
    {
      patient_data: patientDataSchema(today),
      consent_metadata: consentMetadataSchema,
      registration_timestamp: z.preprocess(
        (v) => (v === null ? undefined : v),
        z
          .string({ error: (iss) => `expected a timestamp YYYY-MM-DD HH:MM:SS, got ${typeName(iss.input)}` })
          .superRefine((s, ctx) => {
            const why = registrationTimestampProblem(s);
            if (why) ctx.addIssue({ code: 'custom', message: why });
          })
          .optional(),
      ),
      registration_token: z
        .string({ error: requiredOr('expected the registration token (text)') })
        .regex(TOKEN_RULE, {
          error: (iss) => `expected at least 8 letters or digits, got ${typeName(iss.input)}`,
        }),
    },
    { error: (iss) => `expected a JSON object, got ${typeName(iss.input)}` },
  );
}

export type Registration = z.infer<ReturnType<typeof registrationSchema>>;
export type PatientData = Registration['patient_data'];

/** Known keys per object, for listing the unknown ones (ignored, recorded in the ledger). */
export const knownKeys = {
  top: ['patient_data', 'consent_metadata', 'registration_timestamp', 'registration_token'],
  patient_data: [
    'anrede', 'geschlecht', 'vorname', 'nachname', 'strasse', 'plz', 'ort', 'email', 'telefon', 'hausarzt',
    'krankenkasse', 'geburtsdatum', 'symptome', 'erfahrung_mit_psychotherapie',
    'letzte_sitzung_vorherige_psychotherapie', 'empfehler_der_unterstuetzung', 'verkehrsmittel',
    'offen_fuer_gruppentherapie', 'zeitliche_verfuegbarkeit', 'raeumliche_verfuegbarkeit',
    'bevorzugtes_therapeutengeschlecht', 'bevorzugtes_therapieverfahren',
  ],
  consent_metadata: ['ip_address', 'user_agent', 'timestamp_utc', 'voucher_booking'],
  signed: ['signature', 'signature_version', 'timestamp', 'type', 'environment', 'data'],
  /** The inner wrapper of the `data.data` form: the registration under `data`. */
  signedInner: ['data'],
};
