import { isUtf8 } from 'node:buffer';
import { parse as parseTolerant, printParseErrorCode, type ParseError } from 'jsonc-parser';
import { z } from 'zod';
import { EMAIL_ADDRESS, mayHoldUnstorableText, unstorableText } from '../../libs/text/index.js';

/**
 * The scraper's file format (DOMAIN.md section 2). The file is checked in two steps:
 * the envelope (`metadata` + a `therapists` array) decides whether the file can be read at
 * all (a file-level error); then every therapist is validated on its own, so one bad
 * therapist fails alone with its reason.
 */

export const scraperStatuses = ['new', 'modified', 'unchanged', 'deleted'] as const;
export type ScraperStatus = (typeof scraperStatuses)[number];

/**
 * Longer than the column's `max` characters as stored: text is stored in NFC, which makes a few
 * characters two or three (U+0344, Hebrew presentation forms, ...), so a value that fits in the
 * file may not fit the column (a database error would fail the whole file). NFC makes text at most
 * three times as long: shorter text is not normalised here.
 */
const tooLong = (t: string, max: number): boolean => t.length > max || (t.length * 3 > max && t.normalize('NFC').length > max);

/** The kind of a wrong value, never the value (a file's text goes into reports and emails). */
function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return 'text';
  // 1e400 reads as infinity: zod then said "expected a whole number, got a number".
  if (typeof v === 'number' && !Number.isFinite(v)) return 'a number too large to read';
  return `a ${typeof v}`;
}

const UNSAFE_NUMBER = 'a number too large to read exactly (write it as text)';

/** An id as given: text, or a number that reads exactly; null for anything else. */
const idOf = (v: unknown): string | null =>
  typeof v === 'string' || (typeof v === 'number' && (Number.isSafeInteger(v) || !Number.isInteger(v))) ? String(v).trim() || null : null;

/** `missing` when absent; otherwise what was expected and the kind of what was found. */
const missingOr = (expected: string) => (iss: { input?: unknown }) => (iss.input === undefined ? 'missing' : `expected ${expected}, got ${kindOf(iss.input)}`);

/** '' , null and missing all mean "no value"; strings are trimmed. */
const optText = (max: number) =>
  z
    .union([z.string(), z.number(), z.null()], { error: missingOr('text') })
    .optional()
    .transform((v) => (v === null || v === undefined ? null : String(v).trim() || null))
    .refine((v) => v === null || !tooLong(v, max), { error: `longer than ${max} characters` });

const requiredText = (max: number) =>
  z
    .string({ error: missingOr('text') })
    .transform((v) => v.trim())
    .refine((v) => v.length > 0, { error: 'empty' })
    .refine((v) => !tooLong(v, max), { error: `longer than ${max} characters` });

/** `strasse` holds street + " " + house number in 255 characters: the limit is of the two together. */
const STREET_MAX = 255;
const STREET_WITH_NUMBER_TOO_LONG = `longer than ${STREET_MAX} characters with the house number`;
const streetTooLong = (street: string | null, house: string | null): boolean => street !== null && house !== null && tooLong(`${street} ${house}`, STREET_MAX);

const hours = z
  .record(
    z.string(),
    z.union([z.array(z.string()), z.string(), z.null()], {
      // A list holding something else is named as such ("got a list" would contradict "a list of text").
      error: (iss) => {
        const odd = Array.isArray(iss.input) ? (iss.input as unknown[]).find((x) => typeof x !== 'string') : undefined;
        return Array.isArray(iss.input) ? `expected a list of text, got a list with ${kindOf(odd)} in it` : missingOr('text or a list of text')(iss);
      },
    }),
    { error: missingOr('an object of days and times') },
  )
  .nullable()
  .optional()
  .transform((v) => {
    if (!v) return null;
    const out: Record<string, string[]> = {};
    for (const [day, value] of Object.entries(v)) {
      const slots = (Array.isArray(value) ? value : value ? [value] : []).map((s) => s.trim()).filter(Boolean);
      if (slots.length) out[day] = slots;
    }
    return Object.keys(out).length ? out : null;
  });

const stringList = z
  .array(z.string({ error: missingOr('text') }), { error: missingOr('a list of text') })
  .nullable()
  .optional()
  .transform((v) => (v ? v.map((s) => s.trim()).filter(Boolean) : []));

export const scraperTherapistSchema = z.object(
  {
    // A number beyond 2^53 is not read exactly (12345678901234567890 and …891 both come out as
    // 12345678901234567000): two therapists would share one id, and match each other's rows.
    id: z
      .union([z.string(), z.number(), z.null()], { error: missingOr('text or a number') })
      .optional()
      .refine((v) => typeof v !== 'number' || Number.isSafeInteger(v) || !Number.isInteger(v), { error: `expected text or a number, got ${UNSAFE_NUMBER}` })
      .transform((v) => (v === null || v === undefined ? null : String(v).trim() || null)),
    // The value itself is not named (it is the scraper's word, but the reason goes into emails as is).
    status: z.enum(scraperStatuses, {
      error: (iss) => (iss.input === undefined ? 'missing' : `expected one of ${scraperStatuses.join(', ')}${typeof iss.input === 'string' ? '' : `, got ${kindOf(iss.input)}`}`),
    }),
    last_modified: z.unknown().optional(),
    basic_info: z.object(
      {
        salutation: z
          .union([z.string(), z.null()], { error: missingOr('Herr, Frau or empty') })
          .optional()
          .transform((v) => salutationOf(v ?? ''))
          .refine((v) => v === '' || v === 'Herr' || v === 'Frau', { error: 'expected Herr, Frau or empty' }),
        title: optText(50),
        first_name: requiredText(100),
        last_name: requiredText(100),
      },
      { error: missingOr('an object') },
    ),
    location: z
      .object(
        {
          street: optText(STREET_MAX),
          house_number: optText(14),
          postal_code: z
            .union([z.string(), z.number()], { error: missingOr('5 digits') })
            .transform((v) => String(v).trim())
            .refine((v) => /^\d{5}$/.test(v), { error: 'expected 5 digits' }),
          city: optText(100),
        },
        { error: missingOr('an object') },
      )
      .superRefine((loc, ctx) => {
        if (streetTooLong(loc.street, loc.house_number)) ctx.addIssue({ code: 'custom', path: ['street'], message: STREET_WITH_NUMBER_TOO_LONG });
      }),
    contact: z
      .object(
        { phone: optText(50), email: optText(255).refine((v) => v === null || EMAIL_ADDRESS.test(v), { error: 'not an email address' }), fax: optText(50) },
        { error: missingOr('an object') },
      )
      .nullable()
      .optional()
      .transform((v) => v ?? { phone: null, email: null, fax: null }),
    languages: stringList,
    therapy_methods: stringList,
    telephone_hours: hours,
  },
  { error: missingOr('an object') },
);
export type ScraperTherapist = z.infer<typeof scraperTherapistSchema>;

const count = z
  .number({ error: missingOr('a whole number') })
  .int({ error: 'expected a whole number, got a fraction' })
  .min(0, { error: 'expected 0 or more, got a negative number' });
const metaText = z.string({ error: missingOr('text') });
export const metadataSchema = z.object(
  {
    scrape_id: metaText.optional(),
    scrape_date: metaText.optional(),
    postcode_area: metaText.optional(),
    total_therapists: count.optional(),
    new_therapists: count.optional(),
    modified_therapists: count.optional(),
    deleted_therapists: count.optional(),
  },
  { error: missingOr('an object') },
);
export type ScraperMetadata = z.infer<typeof metadataSchema>;

/** The name and postcode a line gives, as written (trimmed). */
export interface LineName {
  vorname: string;
  nachname: string;
  plz: string;
}

/**
 * `statedStatus` is the line's own `status` as written (for metadata checks), also for invalid
 * lines. `name`: what an invalid line says of whom it lists, when it has a first name, a last
 * name and a postcode of 5 digits (a line may fail for another field).
 */
export type ParsedLine =
  | { index: number; ok: true; externalId: string | null; statedStatus: string | null; therapist: ScraperTherapist }
  | { index: number; ok: false; externalId: string | null; statedStatus: string | null; reason: string; name?: LineName | null };

/** The name and postcode of a raw line that failed validation, when it has them as text (null otherwise). */
function lineNameOf(item: unknown): LineName | null {
  if (!isObject(item) || !isObject(item.basic_info) || !isObject(item.location)) return null;
  const { first_name: first, last_name: last } = item.basic_info;
  const plz = item.location.postal_code;
  if (typeof first !== 'string' || typeof last !== 'string' || (typeof plz !== 'string' && typeof plz !== 'number')) return null;
  const name = { vorname: first.trim(), nachname: last.trim(), plz: String(plz).trim() };
  return name.vorname && name.nachname && /^\d{5}$/.test(name.plz) ? name : null;
}

export interface ParsedFile {
  metadata: ScraperMetadata | null;
  /** Problems with the file as a whole that did not stop the import (e.g. bad metadata). */
  fileErrors: string[];
  lines: ParsedLine[];
}

export class FileFormatError extends Error {
  override name = 'FileFormatError';
}

function describe(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(therapist)'}: ${i.message}`).join('; ');
}

/** `Herr` and `Frau` in any case and spacing; anything else as written (and rejected). */
function salutationOf(v: string): string {
  const t = v.trim();
  if (t === '' || t === 'Herr' || t === 'Frau') return t;
  const lower = t.toLowerCase();
  return lower === 'herr' ? 'Herr' : lower === 'frau' ? 'Frau' : t;
}

/**
 * The file's bytes as text: UTF-8 (the scraper's encoding), a leading byte order mark
 * dropped. Bytes that are not UTF-8 fail the file instead of turning names into U+FFFD.
 */
export function decodeScraperFile(buf: Buffer): string {
  if (!isUtf8(buf)) throw new FileFormatError('not UTF-8 text (the scraper writes UTF-8; was the file saved in another encoding?)');
  const text = buf.toString('utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** jsonc-parser's error names (`printParseErrorCode`) in words. */
export const jsonErrors: Record<string, string> = {
  InvalidSymbol: 'unexpected character',
  InvalidNumberFormat: 'invalid number',
  PropertyNameExpected: 'property name (in double quotes) expected',
  ValueExpected: 'value expected',
  ColonExpected: 'colon expected',
  CommaExpected: 'comma expected',
  CloseBraceExpected: '"}" expected',
  CloseBracketExpected: '"]" expected',
  EndOfFileExpected: 'end of file expected',
  InvalidCommentToken: 'comments are not JSON',
  UnexpectedEndOfComment: 'unexpected end of comment',
  UnexpectedEndOfString: 'unexpected end of string',
  UnexpectedEndOfNumber: 'unexpected end of number',
  InvalidUnicode: 'invalid \\u escape',
  InvalidEscapeCharacter: 'invalid escape character',
  InvalidCharacter: 'control character in a string',
};

/**
 * Where and why the text is not JSON, without quoting it (JSON.parse's message shows the
 * text around the error: therapist names, which reports and emails must not hold).
 */
function jsonErrorAt(text: string): string {
  if (text.trim() === '') return 'the file is empty';
  const errors: ParseError[] = [];
  parseTolerant(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false });
  const first = errors[0];
  if (!first) return 'not valid JSON';
  const before = text.slice(0, first.offset);
  const line = before.split('\n').length;
  const column = first.offset - before.lastIndexOf('\n');
  return `line ${line}, column ${column}: ${jsonErrors[printParseErrorCode(first.error)] ?? 'syntax error'}`;
}

/** Parses the file text. Throws FileFormatError when the file as a whole cannot be read. */
export function parseScraperFile(text: string): ParsedFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new FileFormatError(`not valid JSON: ${jsonErrorAt(text)}`);
  }
  // Only a file with such an escape is searched value by value (a JSON text cannot hold them raw).
  const suspect = mayHoldUnstorableText(text);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new FileFormatError('expected a JSON object with "metadata" and "therapists"');
  }
  const obj = raw as Record<string, unknown>;
  if (!Array.isArray(obj.therapists)) {
    const t = obj.therapists;
    throw new FileFormatError(`"therapists": ${t === undefined ? 'missing' : `expected a list, got ${kindOf(t)}`}`);
  }
  const fileErrors: string[] = [];
  let metadata: ScraperMetadata | null = null;
  if (obj.metadata === undefined) {
    fileErrors.push('"metadata": missing');
  } else if (suspect && unstorableText(obj.metadata, '', '(metadata)')) {
    fileErrors.push(`"metadata": ${unstorableText(obj.metadata, '', '(metadata)')} (metadata not used)`);
  } else {
    const m = metadataSchema.safeParse(obj.metadata);
    if (m.success) metadata = m.data;
    else fileErrors.push(`"metadata": ${error(m.error)}`);
  }
  const lines: ParsedLine[] = obj.therapists.map((item, index) => {
    const externalId = typeof item === 'object' && item !== null ? idOf((item as { id?: unknown }).id) : null;
    const rawStatus = typeof item === 'object' && item !== null ? (item as { status?: unknown }).status : undefined;
    const statedStatus = typeof rawStatus === 'string' ? rawStatus : null;
    const unstorable = suspect ? unstorableText(item, '', '(therapist)') : null;
    if (unstorable) return { index, ok: false as const, externalId: externalId && unstorableText(externalId, '') ? null : externalId, statedStatus, reason: unstorable, name: lineNameOf(item) };
    const fast = wellFormedTherapist(item);
    if (fast) return { index, ok: true as const, externalId: fast.id, statedStatus, therapist: fast };
    const r = scraperTherapistSchema.safeParse(item);
    return r.success
      ? { index, ok: true as const, externalId: r.data.id, statedStatus, therapist: r.data }
      : { index, ok: false as const, externalId, statedStatus, reason: describe(r.error), name: lineNameOf(item) };
  });
  return { metadata, fileErrors, lines };
}

// ---------------------------------------------------------------- fast path

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const statusSet = new Set<string>(scraperStatuses);
/** Marks a value the fast path does not take (zod then decides, with its own messages). */
const NO = Symbol('not well-formed');

function fastOptText(v: unknown, max: number): string | null | typeof NO {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'string') return NO;
  const t = v.trim();
  if (tooLong(t, max)) return NO;
  return t || null;
}

function fastRequiredText(v: unknown, max: number): string | typeof NO {
  if (typeof v !== 'string') return NO;
  const t = v.trim();
  return t.length === 0 || tooLong(t, max) ? NO : t;
}

function fastStringList(v: unknown): string[] | typeof NO {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) return NO;
  const out: string[] = [];
  for (const s of v) {
    if (typeof s !== 'string') return NO;
    const t = s.trim();
    if (t) out.push(t);
  }
  return out;
}

function fastHours(v: unknown): Record<string, string[]> | null | typeof NO {
  if (v === null || v === undefined) return null;
  if (!isObject(v) || Object.getPrototypeOf(v) !== Object.prototype) return NO;
  const out: Record<string, string[]> = {};
  let any = false;
  for (const day of Object.keys(v)) {
    const value = v[day];
    let slots: string[];
    if (value === null) slots = [];
    else if (typeof value === 'string') slots = value ? [value] : [];
    else if (Array.isArray(value)) {
      slots = [];
      for (const s of value) {
        if (typeof s !== 'string') return NO;
        slots.push(s);
      }
    } else return NO;
    const kept = slots.map((s) => s.trim()).filter(Boolean);
    if (kept.length) {
      out[day] = kept;
      any = true;
    }
  }
  return any ? out : null;
}

/**
 * The common case without zod: a therapist whose every field already has the plain expected
 * type and passes every rule gives exactly what `scraperTherapistSchema` gives (a unit test
 * compares the two on many variants). Anything else returns null and goes through zod,
 * which names the field of an error. Zod's per-object overhead was most of the import's
 * allocations (and so of its garbage collection).
 */
export function wellFormedTherapist(item: unknown): ScraperTherapist | null {
  if (!isObject(item)) return null;
  const rawId = item.id;
  let id: string | null;
  if (rawId === null || rawId === undefined) id = null;
  else if (typeof rawId === 'string') id = rawId.trim() || null;
  else return null;
  const status = item.status;
  if (typeof status !== 'string' || !statusSet.has(status)) return null;
  const b = item.basic_info;
  const l = item.location;
  if (!isObject(b) || !isObject(l)) return null;
  const sal = b.salutation;
  if (sal !== null && sal !== undefined && typeof sal !== 'string') return null;
  const salutation = salutationOf(sal ?? '');
  if (salutation !== '' && salutation !== 'Herr' && salutation !== 'Frau') return null;
  const title = fastOptText(b.title, 50);
  const first = fastRequiredText(b.first_name, 100);
  const last = fastRequiredText(b.last_name, 100);
  const street = fastOptText(l.street, STREET_MAX);
  const house = fastOptText(l.house_number, 14);
  const city = fastOptText(l.city, 100);
  if (title === NO || first === NO || last === NO || street === NO || house === NO || city === NO) return null;
  if (streetTooLong(street, house)) return null;
  if (typeof l.postal_code !== 'string') return null;
  const plz = l.postal_code.trim();
  if (!/^\d{5}$/.test(plz)) return null;
  const c = item.contact;
  let contact: { phone: string | null; email: string | null; fax: string | null };
  if (c === null || c === undefined) contact = { phone: null, email: null, fax: null };
  else if (!isObject(c)) return null;
  else {
    const phone = fastOptText(c.phone, 50);
    const email = fastOptText(c.email, 255);
    const fax = fastOptText(c.fax, 50);
    if (phone === NO || email === NO || fax === NO || (email !== null && !EMAIL_ADDRESS.test(email))) return null;
    contact = { phone, email, fax };
  }
  const languages = fastStringList(item.languages);
  const methods = fastStringList(item.therapy_methods);
  const hoursOut = fastHours(item.telephone_hours);
  if (languages === NO || methods === NO || hoursOut === NO) return null;
  const out: ScraperTherapist = {
    id,
    status: status as ScraperStatus,
    basic_info: { salutation, title, first_name: first, last_name: last },
    location: { street, house_number: house, postal_code: plz, city },
    contact,
    languages,
    therapy_methods: methods,
    telephone_hours: hoursOut,
  };
  if ('last_modified' in item) out.last_modified = item.last_modified;
  return out;
}

/** The metadata's issues; one about the metadata as a whole has no path of its own (`"metadata": expected an object, got text`). */
function error(e: z.ZodError): string {
  return e.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}
