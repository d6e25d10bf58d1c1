import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Serialises a parsed JSON value like PHP `json_encode($v, JSON_UNESCAPED_UNICODE |
 * JSON_UNESCAPED_SLASHES)`: compact, keys in their original order, non-ASCII and `/` as is.
 * PHP still escapes U+2028 and U+2029 with these flags (JSON_UNESCAPED_LINE_TERMINATORS is
 * not set), which JSON.stringify does not; control characters are escaped the same way by
 * both (`\n`, `\u001f`).
 *
 * Known limits (not seen in registration files): a float written as `1.0` by PHP is read
 * back as the number 1 and serialised as `1`; integer-like object keys are reordered by
 * JavaScript objects.
 */
export function phpJsonEncode(value: unknown): string {
  return JSON.stringify(value).replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

export const SIGNATURE_VERSION = 'hmac-sha256-v1';

/** HMAC-SHA256 (hex) over the signed object without `signature` and `signature_version`. */
export function computeSignature(signed: Record<string, unknown>, secret: string): string {
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(signed)) if (k !== 'signature' && k !== 'signature_version') rest[k] = v;
  return createHmac('sha256', secret).update(phpJsonEncode(rest), 'utf8').digest('hex');
}

export function signatureMatches(signed: Record<string, unknown>, secret: string): boolean {
  const given = signed.signature;
  if (typeof given !== 'string' || !/^[0-9a-fA-F]{64}$/.test(given)) return false;
  const expected = Buffer.from(computeSignature(signed, secret), 'hex');
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
