import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Serialises a parsed JSON value like PHP `json_encode($v, JSON_UNESCAPED_UNICODE |
 * JSON_UNESCAPED_SLASHES)`: compact, keys in their original order, non-ASCII and `/` as is.
 * PHP still escapes U+2028 and U+2029 with these flags (JSON_UNESCAPED_LINE_TERMINATORS is
 * not set), which JSON.stringify does not; control characters are escaped the same way by
 * both (`\n`, `\u001f`). Builds signed files (fixtures, benchmarks); a file's signature is
 * checked against its own text (`phpJsonEncodeText`), which a parsed value cannot always
 * give back (a float `30.0`, integer-like keys).
 */
export function phpJsonEncode(value: unknown): string {
  return phpString(JSON.stringify(value));
}

const phpString = (json: string) => json.replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');

const WHITESPACE = /[ \t\n\r]*/y;
// JSON strings hold no raw control characters: the class has to name them.
// eslint-disable-next-line no-control-regex
const STRING = /"(?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/y;
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const LITERAL = /true|false|null/y;

/**
 * The PHP `json_encode` form (flags as `phpJsonEncode`) of a JSON text, read from the text
 * itself: layout dropped, strings escaped as PHP escapes them, numbers exactly as written (PHP
 * writes the float 30.0 as `30.0`, which JSON.parse reads back as 30), keys in the order
 * written (a JavaScript object puts integer-like keys first), the top-level members `omit`
 * left out. `text` is valid JSON (already parsed); anything else throws.
 */
export function phpJsonEncodeText(text: string, omit: readonly string[] = []): string {
  let i = 0;
  const match = (re: RegExp): string | null => {
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m) return null;
    i = re.lastIndex;
    return m[0];
  };
  const skip = () => void match(WHITESPACE);
  const expect = (c: string) => {
    skip();
    if (text[i] !== c) throw new Error(`JSON: expected ${c} at character ${i}`);
    i++;
  };
  const string = (): { raw: string; value: string } => {
    skip();
    const raw = match(STRING);
    if (raw === null) throw new Error(`JSON: expected a string at character ${i}`);
    const value = JSON.parse(raw) as string;
    return { raw: phpString(JSON.stringify(value)), value };
  };
  const value = (depth: number): string => {
    skip();
    const c = text[i];
    if (c === '"') return string().raw;
    if (c === '{') {
      i++;
      const members: string[] = [];
      skip();
      if (text[i] === '}') {
        i++;
        return '{}';
      }
      for (;;) {
        const key = string();
        expect(':');
        const v = value(depth + 1);
        if (!(depth === 0 && omit.includes(key.value))) members.push(`${key.raw}:${v}`);
        skip();
        if (text[i] === ',') {
          i++;
          continue;
        }
        expect('}');
        return `{${members.join(',')}}`;
      }
    }
    if (c === '[') {
      i++;
      const items: string[] = [];
      skip();
      if (text[i] === ']') {
        i++;
        return '[]';
      }
      for (;;) {
        items.push(value(depth + 1));
        skip();
        if (text[i] === ',') {
          i++;
          continue;
        }
        expect(']');
        return `[${items.join(',')}]`;
      }
    }
    const token = match(NUMBER) ?? match(LITERAL);
    if (token === null) throw new Error(`JSON: unexpected character at ${i}`);
    return token;
  };
  const out = value(0);
  skip();
  if (i !== text.length) throw new Error(`JSON: unexpected text after the value at character ${i}`);
  return out;
}

export const SIGNATURE_VERSION = 'hmac-sha256-v1';

/** HMAC-SHA256 (hex) over the signed object without `signature` and `signature_version`. */
export function computeSignature(signed: Record<string, unknown>, secret: string): string {
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(signed)) if (k !== 'signature' && k !== 'signature_version') rest[k] = v;
  return createHmac('sha256', secret).update(phpJsonEncode(rest), 'utf8').digest('hex');
}

/**
 * Whether `signed.signature` is the HMAC of the file: computed over `text`, the file's own JSON
 * text (see `phpJsonEncodeText`), so floats and key order are as the site serialised them.
 */
export function signatureMatches(signed: Record<string, unknown>, secret: string, text: string): boolean {
  const given = signed.signature;
  if (typeof given !== 'string' || !/^[0-9a-fA-F]{64}$/.test(given)) return false;
  let body: string;
  try {
    body = phpJsonEncodeText(text, ['signature', 'signature_version']);
  } catch {
    return false; // nested too deep to re-read (a stack overflow): no site writes that
  }
  const expected = createHmac('sha256', secret).update(body, 'utf8').digest();
  return timingSafeEqual(expected, Buffer.from(given.toLowerCase(), 'hex'));
}

/** Builds a signed file the way the registration site does (tests, fixtures, benchmarks). */
export function signRegistration(
  plain: Record<string, unknown>,
  opts: { secret: string; environment: string; timestamp?: string; nested?: boolean },
): Record<string, unknown> {
  const body: Record<string, unknown> = {
    timestamp: opts.timestamp ?? new Date().toISOString(),
    type: 'patient_registration',
    environment: opts.environment,
    data: opts.nested ? { data: plain } : plain,
  };
  return { signature: computeSignature(body, opts.secret), signature_version: SIGNATURE_VERSION, ...body };
}
