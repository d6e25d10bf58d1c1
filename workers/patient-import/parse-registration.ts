import { isUtf8 } from 'node:buffer';
import { parse as parseTolerant, type ParseError } from 'jsonc-parser';
import { z } from 'zod';
import { PermanentError } from '../../libs/errors/index.js';
import { mayHoldUnstorableNumber, mayHoldUnstorableText, unstorableNumber, unstorableText } from '../../libs/text/index.js';
import { berlinDay } from './map-patient.js';
import { knownKeys, registrationSchema, showValues, TOKEN_RULE, type Registration } from './registration-schema.js';
import { SIGNATURE_VERSION, signatureMatches } from './signature.js';

export interface SigningOptions {
  /** When set, only files signed with it for `environment` are accepted. */
  secret?: string | undefined;
  environment: string;
}

export interface ParsedRegistration {
  registration: Registration;
  /**
   * The `consent_metadata` object exactly as the file carried it (stored as the GDPR proof;
   * `registration.consent_metadata` holds the parsed values the import decides on).
   */
  rawConsent: Record<string, unknown>;
  signed: boolean;
  signatureVerified: boolean;
  /** Paths of fields the fleet does not know (ignored, recorded in the ledger). */
  unknownFields: string[];
  /** For staff: `valid (signed, signature verified)` etc. */
  validation: string;
}

/** Error codes of a file that cannot be imported (never retried). */
export const rejectCodes = {
  json: 'invalid_json',
  encoding: 'not_utf8',
  fileName: 'bad_file_name',
  unsigned: 'unsigned',
  signature: 'bad_signature',
  environment: 'wrong_environment',
  validation: 'validation_failed',
  token: 'token_mismatch',
} as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * `patient_data.symptome: expected 1 to 6 entries, got 7; ...`. Values quoted from the file
 * stay marked (see withholdValues); `PermanentError.details.shown` has them readable.
 */
export function describeIssues(error: z.ZodError, prefix = ''): string {
  return error.issues
    .map((i) => {
      const path = [prefix, ...i.path.map(String)].filter(Boolean).join('.');
      return `${path || '(file)'}: ${i.message}`;
    })
    .join('; ');
}

function unknownOf(obj: Record<string, unknown>, known: string[], prefix: string): string[] {
  return Object.keys(obj)
    .filter((k) => !known.includes(k))
    .map((k) => (prefix ? `${prefix}.${k}` : k));
}

/** The registration token of a file whose other fields may be wrong, when the token itself follows its rule (else null). */
function tokenOf(plain: unknown): string | null {
  const t = isObject(plain) ? plain.registration_token : undefined;
  return typeof t === 'string' && TOKEN_RULE.test(t) ? t : null;
}

let today = '';
const schema = registrationSchema(() => today);

/**
 * The file's bytes as text: UTF-8 (what the registration site writes), a leading byte order
 * mark dropped (the signature is over the parsed object, so a BOM does not change it). Bytes
 * that are not UTF-8 (a Latin-1 copy) fail the file instead of turning umlauts into U+FFFD.
 */
function decodeRegistration(bytes: Buffer): string {
  if (!isUtf8(bytes)) {
    throw new PermanentError(rejectCodes.encoding, 'file: not UTF-8 text (the registration site writes UTF-8; was the file saved in another encoding, such as Latin-1?)');
  }
  const text = bytes.toString('utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/**
 * Where the JSON `text` broke, without quoting it (Node's message quotes a piece of the file):
 * `the file is empty`, `the file ends too early`, or `error at character N`. Node gives no
 * position for an unexpected token (`True`, `NaN`, a trailing comma in a list): those are
 * located with jsonc-parser, instead of being called "ends too early or is empty".
 */
function jsonErrorAt(text: string, err: Error): string | null {
  if (/^[ \t\n\r]*$/.test(text)) return 'the file is empty';
  const given = /position (\d+)/.exec(err.message)?.[1];
  let at = given === undefined ? undefined : Number(given);
  if (at === undefined) {
    const errors: ParseError[] = [];
    parseTolerant(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false });
    at = errors[0]?.offset;
  }
  if (at === undefined) return null;
  if (at >= text.replace(/[ \t\n\r]+$/, '').length) return 'the file ends too early';
  return `error at character ${at}`;
}

/**
 * Objects and arrays inside each other at most this deep (PHP's `json_decode` default, which the
 * registration site's JSON stays within; a registration itself is 6 levels deep at most).
 */
export const MAX_DEPTH = 512;

/** Whether the JSON `text` holds objects or arrays nested deeper than `max` (strings skipped). */
function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // a string: to its closing quote, escapes skipped
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/**
 * The first number read as infinity (`1e400`) in what is stored as the file carried it: the
 * consent (all of it) and `raeumliche_verfuegbarkeit` (numbers reach the database nowhere
 * else; every other field is text, a date or true/false). Stored, it would become `null`.
 */
function storedNumberTooLarge(plain: unknown, prefix: string): string | null {
  if (!isObject(plain)) return null;
  const at = (k: string) => (prefix ? `${prefix}.${k}` : k);
  const patient = plain.patient_data;
  return (
    unstorableNumber(plain.consent_metadata, at('consent_metadata')) ??
    (isObject(patient) ? unstorableNumber(patient.raeumliche_verfuegbarkeit, at('patient_data.raeumliche_verfuegbarkeit')) : null)
  );
}

/**
 * Reads a registration file: UTF-8, JSON, plain or signed form (`data` or `data.data`),
 * signature when a secret is configured, text PostgreSQL can store, then every field rule.
 * A file that cannot be imported throws PermanentError whose message names the field path
 * and the rule.
 */
export function parseRegistration(bytes: Buffer, signing: SigningOptions, now: Date): ParsedRegistration {
  const text = decodeRegistration(bytes);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    const at = jsonErrorAt(text, err as Error);
    throw new PermanentError(rejectCodes.json, `file: not valid JSON${at ? ` (${at})` : ''}`);
  }
  if (!isObject(doc)) throw new PermanentError(rejectCodes.json, 'file: expected a JSON object');
  // Parsing is iterative, but storing the consent (and checking text) recurses: a file nested
  // thousands of levels deep overflowed the stack at every attempt, until the import gave up.
  if (nestedDeeperThan(text, MAX_DEPTH)) throw new PermanentError(rejectCodes.json, `file: nested more than ${MAX_DEPTH} levels deep`);

  const unknownFields: string[] = [];
  let plain: unknown = doc;
  let prefix = '';
  const looksSigned = 'signature' in doc || 'signature_version' in doc || ('data' in doc && !('patient_data' in doc));
  let verified = false;

  if (looksSigned) {
    if (signing.secret) {
      if (doc.signature_version !== SIGNATURE_VERSION) {
        throw new PermanentError(
          rejectCodes.signature,
          `signature_version: expected ${SIGNATURE_VERSION}, got ${JSON.stringify(doc.signature_version ?? null)}`,
        );
      }
      if (!signatureMatches(doc, signing.secret, text)) {
        throw new PermanentError(rejectCodes.signature, 'signature: does not match the content (HMAC-SHA256 with the configured secret)');
      }
      if (doc.environment !== signing.environment) {
        throw new PermanentError(
          rejectCodes.environment,
          `environment: expected ${JSON.stringify(signing.environment)} (REGISTRATION_ENVIRONMENT), got ${JSON.stringify(doc.environment ?? null)}`,
        );
      }
      verified = true;
    }
    unknownFields.push(...unknownOf(doc, knownKeys.signed, ''));
    plain = doc.data;
    prefix = 'data';
    if (isObject(plain) && !('patient_data' in plain) && isObject(plain.data)) {
      unknownFields.push(...unknownOf(plain, knownKeys.signedInner, 'data'));
      plain = plain.data;
      prefix = 'data.data';
    }
    if (!isObject(plain)) throw new PermanentError(rejectCodes.validation, `${prefix}: required: the registration object of the signed file`);
  } else if (signing.secret) {
    throw new PermanentError(rejectCodes.unsigned, 'signature: required (a signing secret is configured), the file is unsigned');
  }

  // A NUL character or half a surrogate pair anywhere (unknown fields and consent_metadata
  // included: the consent is stored as the file carried it) would fail the insert on every retry.
  const unstorable =
    (mayHoldUnstorableText(text) ? unstorableText(doc, '', '(file)') : null) ??
    (mayHoldUnstorableNumber(text) ? storedNumberTooLarge(plain, prefix) : null);
  const unstorableField = unstorable?.slice(0, unstorable.indexOf(': '));

  // Building the zod schema costs more than using it: one schema, told today's date per parse
  // (parsing is synchronous, so concurrent imports cannot see each other's date). Today is the
  // calendar day in Europe/Berlin, where the patients register.
  today = berlinDay(now);
  const result = schema.safeParse(plain);
  if (unstorable || !result.success) {
    // Every bad field at once (the unstorable one first, then the field rules; not its own field
    // twice): staff fix the file once instead of finding the next error with each upload.
    const issues = result.success ? [] : result.error.issues.filter((i) => [prefix, ...i.path.map(String)].filter(Boolean).join('.') !== unstorableField);
    const marked = [unstorable, issues.length ? describeIssues(new z.ZodError(issues), prefix) : null].filter(Boolean).join('; ');
    throw new PermanentError(rejectCodes.validation, showValues(marked), {
      marked,
      fields: [...(unstorableField ? [unstorableField] : []), ...issues.map((i) => [prefix, ...i.path.map(String)].filter(Boolean).join('.'))],
      // For the import record only (never logged): which registration this is, when its token itself is fine.
      registrationToken: tokenOf(plain),
    });
  }
  const p = plain as Record<string, unknown>;
  const at = (k: string) => (prefix ? `${prefix}.${k}` : k);
  unknownFields.push(...unknownOf(p, knownKeys.top, prefix));
  if (isObject(p.patient_data)) unknownFields.push(...unknownOf(p.patient_data, knownKeys.patient_data, at('patient_data')));
  // Listed only: the consent is stored whole, unknown fields included, as the proof of consent (rawConsent).
  if (isObject(p.consent_metadata)) unknownFields.push(...unknownOf(p.consent_metadata, knownKeys.consent_metadata, at('consent_metadata')));

  const validation = looksSigned
    ? verified
      ? 'valid (signed, signature verified)'
      : 'valid (signed, signature not checked: no signing secret configured)'
    : 'valid (unsigned)';
  return { registration: result.data, rawConsent: p.consent_metadata as Record<string, unknown>, signed: looksSigned, signatureVerified: verified, unknownFields, validation };
}
