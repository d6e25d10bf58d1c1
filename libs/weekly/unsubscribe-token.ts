import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Signed unsubscribe tokens: `<patientId>.<HMAC-SHA256(secret, v1|purpose|patientId)>`
 * (base64url). The signature binds patient and purpose, so a token cannot be forged,
 * altered to name another patient, or used for another kind of opt-out.
 */
export const WEEKLY_OPT_OUT = 'weekly-update-opt-out';

const FORMAT = /^([1-9][0-9]{0,9})\.([A-Za-z0-9_-]{43})$/;

function mac(secret: string, patientId: number, purpose: string): Buffer {
  return createHmac('sha256', secret).update(`v1|${purpose}|${patientId}`).digest();
}

export function signUnsubscribeToken(secret: string, patientId: number, purpose = WEEKLY_OPT_OUT): string {
  if (!Number.isInteger(patientId) || patientId <= 0) throw new RangeError('patientId must be a positive integer');
  return `${patientId}.${mac(secret, patientId, purpose).toString('base64url')}`;
}

/**
 * The patient id of a valid token, or null for anything forged, altered or malformed. `secret`
 * may be several: the current one first, then earlier ones still accepted after a rotation
 * (UNSUBSCRIBE_SECRET_PREVIOUS), so links in emails patients already have keep working. Each is
 * compared in constant time; a token is signed with the current one only (signUnsubscribeToken).
 */
export function verifyUnsubscribeToken(secret: string | readonly string[], token: string, purpose = WEEKLY_OPT_OUT): number | null {
  const m = FORMAT.exec(token);
  if (!m) return null;
  const patientId = Number(m[1]);
  if (!Number.isSafeInteger(patientId) || patientId > 2_147_483_647) return null;
  const given = Buffer.from(m[2]!, 'base64url');
  // Only the canonical spelling is accepted (base64url has no padding bits to play with).
  if (given.toString('base64url') !== m[2]) return null;
  let valid = false;
  for (const s of typeof secret === 'string' ? [secret] : secret) {
    const expected = mac(s, patientId, purpose);
    // every secret is tried (no early exit): the time taken does not tell which one matched
    if (given.length === expected.length && timingSafeEqual(given, expected)) valid = true;
  }
  return valid ? patientId : null;
}
