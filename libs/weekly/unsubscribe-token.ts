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

/** The patient id of a valid token, or null for anything forged, altered or malformed. */
export function verifyUnsubscribeToken(secret: string, token: string, purpose = WEEKLY_OPT_OUT): number | null {
  const m = FORMAT.exec(token);
  if (!m) return null;
  const patientId = Number(m[1]);
  if (!Number.isSafeInteger(patientId) || patientId > 2_147_483_647) return null;
  const given = Buffer.from(m[2]!, 'base64url');
  const expected = mac(secret, patientId, purpose);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  // Only the canonical spelling is accepted (base64url has no padding bits to play with).
  return given.toString('base64url') === m[2] ? patientId : null;
}
