import { z } from 'zod';
import { PermanentError } from '../../libs/errors/index.js';
import { knownKeys, registrationSchema, showValues, type Registration } from './registration-schema.js';
import { SIGNATURE_VERSION, signatureMatches } from './signature.js';

export interface SigningOptions {
  /** When set, only files signed with it for `environment` are accepted. */
  secret?: string | undefined;
  environment: string;
}

export interface ParsedRegistration {
  registration: Registration;
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

let today = '';
const schema = registrationSchema(() => today);

function todayUtc(now: Date): string {
  return now.toISOString().slice(0, 10);
}

/**
 * Reads a registration file: JSON, plain or signed form (`data` or `data.data`), signature
 * when a secret is configured, then every field rule. A file that cannot be imported
 * throws PermanentError whose message names the field path and the rule.
 */
export function parseRegistration(bytes: Buffer, signing: SigningOptions, now: Date): ParsedRegistration {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8').replace(/^\uFEFF/, ''));
  } catch (err) {
    // Node's message quotes a piece of the file: keep only where it broke.
    const at = /position (\d+)/.exec((err as Error).message)?.[1];
    throw new PermanentError(rejectCodes.json, `file: not valid JSON${at ? ` (error at character ${at})` : ' (the file ends too early or is empty)'}`);
  }
  if (!isObject(doc)) throw new PermanentError(rejectCodes.json, 'file: expected a JSON object');

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
      if (!signatureMatches(doc, signing.secret)) {
        throw new PermanentError(rejectCodes.signature, 'signature: does not match the content (HMAC-SHA256 with the configured secret)');
      }
      if (doc.environment !== signing.environment) {
        throw new PermanentError(
          rejectCodes.environment,
          `environment: expected ${JSON.stringify(signing.environment)}, got ${JSON.stringify(doc.environment ?? null)}`,
        );
      }
      verified = true;
    }
    unknownFields.push(...unknownOf(doc, knownKeys.signed, ''));
    plain = doc.data;
    prefix = 'data';
    if (isObject(plain) && !('patient_data' in plain) && isObject(plain.data)) {
      plain = plain.data;
      prefix = 'data.data';
    }
    if (!isObject(plain)) throw new PermanentError(rejectCodes.validation, `${prefix}: required: the registration object of the signed file`);
  } else if (signing.secret) {
    throw new PermanentError(rejectCodes.unsigned, 'signature: required (a signing secret is configured), the file is unsigned');
  }

  // Building the zod schema costs more than using it: one schema, told today's date per parse
  // (parsing is synchronous, so concurrent imports cannot see each other's date).
  today = todayUtc(now);
  const result = schema.safeParse(plain);
  if (!result.success) {
    const text = describeIssues(result.error, prefix);
    throw new PermanentError(rejectCodes.validation, showValues(text), {
      marked: text,
      fields: result.error.issues.map((i) => [prefix, ...i.path.map(String)].filter(Boolean).join('.')),
    });
  }
  const p = plain as Record<string, unknown>;
  const at = (k: string) => (prefix ? `${prefix}.${k}` : k);
  unknownFields.push(...unknownOf(p, knownKeys.top, prefix));
  if (isObject(p.patient_data)) unknownFields.push(...unknownOf(p.patient_data, knownKeys.patient_data, at('patient_data')));

  const validation = looksSigned
    ? verified
      ? 'valid (signed, signature verified)'
      : 'valid (signed, signature not checked: no signing secret configured)'
    : 'valid (unsigned)';
  return { registration: result.data, signed: looksSigned, signatureVerified: verified, unknownFields, validation };
}
