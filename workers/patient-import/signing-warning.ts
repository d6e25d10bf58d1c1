import type { Logger } from '../../libs/log/index.js';

/** The start's warning of a process running the patient import without a signing secret. */
export const UNCHECKED_SIGNATURES = 'registration signatures are not checked: REGISTRATION_SIGNING_SECRET is not set';
/** The start's warning when the signing secret is short. */
export const SHORT_SIGNING_SECRET = 'REGISTRATION_SIGNING_SECRET is short: a reader of any signed file could guess it offline; agree a longer one with the registration site';
/** Shorter than this, a secret is warned about (a random secret of 32 characters or more is out of reach of an offline guess). */
export const SIGNING_SECRET_MIN_CHARS = 32;

/**
 * Logs one warning line when signatures are weakly or not at all checked: no signing secret
 * (allowed: older site versions write the plain form, but it must not go unseen), or one under
 * SIGNING_SECRET_MIN_CHARS. A short secret only warns, in production too: the secret is the
 * registration site's as much as the fleet's, and refusing to start would stop every import
 * until both sides change it. Returns whether it warned.
 */
export function warnIfSignaturesUnchecked(config: { signingSecret?: string | undefined }, log: Logger): boolean {
  const w = signingWarning(config);
  if (w) log.warn({ variable: 'REGISTRATION_SIGNING_SECRET', ...w.fields }, w.message);
  return w !== null;
}

/** The warning of warnIfSignaturesUnchecked, for a terminal (fleet import patient-file) or the log; null: none. */
export function signingWarning(config: { signingSecret?: string | undefined }): { message: string; fields: Record<string, number>; text: string } | null {
  if (!config.signingSecret) return { message: UNCHECKED_SIGNATURES, fields: {}, text: UNCHECKED_SIGNATURES };
  const length = config.signingSecret.length;
  if (length < SIGNING_SECRET_MIN_CHARS) {
    return { message: SHORT_SIGNING_SECRET, fields: { length, minimum: SIGNING_SECRET_MIN_CHARS }, text: `${SHORT_SIGNING_SECRET} (${length} characters, ${SIGNING_SECRET_MIN_CHARS} or more wanted)` };
  }
  return null;
}
