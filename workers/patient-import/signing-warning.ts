import type { Logger } from '../../libs/log/index.js';

/** The start's warning of a process running the patient import without a signing secret. */
export const UNCHECKED_SIGNATURES = 'registration signatures are not checked: REGISTRATION_SIGNING_SECRET is not set';

/**
 * Logs one warning line when no signing secret is configured: signatures are then not checked
 * at all, which is allowed (older site versions write the plain form) but must not go unseen.
 * Returns whether it warned.
 */
export function warnIfSignaturesUnchecked(config: { signingSecret?: string | undefined }, log: Logger): boolean {
  if (config.signingSecret) return false;
  log.warn({ variable: 'REGISTRATION_SIGNING_SECRET' }, UNCHECKED_SIGNATURES);
  return true;
}
