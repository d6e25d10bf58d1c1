/**
 * Whether a stored patient email address is plausible enough to send to: after trimming
 * ASCII whitespace, one `@` between a non-empty local part and a domain with a dot, and no
 * whitespace, control characters or angle brackets. Something like `kein-gueltiger-eintrag`
 * is not an address and is never handed to the provider (it would only be rejected, every
 * week).
 *
 * Deliberately looser than the patient import's validation (zod's `z.email()`, or a stricter
 * internationalised pattern): every address the import accepts passes, so no imported
 * patient is skipped; what the import would refuse but passes here (e.g. `a@b..de`, from
 * older data) is left to the provider. The patient import may call isPlausibleEmail too; it
 * lives in libs so both sides can share it.
 *
 * The same pattern runs in PostgreSQL (`~`) for the fan-out's selection: it uses only
 * negated ASCII classes, which both engines read the same way (weekly-rules.int.test.ts
 * checks both against the same inputs). `TRIMMED_CHARS` is the set both sides trim.
 */
const PART = '[^@<>\\x00-\\x20\\x7f]+';
export const PLAUSIBLE_EMAIL_SOURCE = `^${PART}@${PART}\\.${PART}$`;
const PLAUSIBLE_EMAIL = new RegExp(PLAUSIBLE_EMAIL_SOURCE);
export const TRIMMED_CHARS = ' \t\n\r\f\v';

const EDGES = /^[ \t\n\r\f\v]+|[ \t\n\r\f\v]+$/g;

/** The address without surrounding ASCII whitespace (as it is sent). */
export function trimEmail(value: string): string {
  return value.replace(EDGES, '');
}

export function isPlausibleEmail(value: string | null | undefined): boolean {
  return Boolean(value) && PLAUSIBLE_EMAIL.test(trimEmail(value!));
}
