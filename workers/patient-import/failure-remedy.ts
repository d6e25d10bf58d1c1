import type { LaterImport } from '../../libs/db/repositories/patient-import.js';
import { rejectCodes } from './parse-registration.js';

/**
 * What staff can do about a registration file from the bucket that failed, by its error code.
 * One decision for the staff email (German) and `fleet imports show` (English), so both
 * point at the same next step.
 * - `corrected-upload`: the content is wrong; the same bytes fail at every attempt (a requeue
 *   imports the durable copy the fleet kept), so only a corrected upload helps;
 * - `rename`: the file name does not fit; same, under a fitting name;
 * - `settings`: signature or environment do not match the fleet's settings: fix them and
 *   requeue, or discard a file that is not genuine;
 * - `raise-limit`: larger than REGISTRATION_FILE_MAX_MB: raise it and requeue, or discard;
 * - `object-gone`: deleted from the bucket before the fleet had it: a new upload, then discard;
 * - `resolve-by-hand`: the payment reference derived from the registration token (its first 8
 *   characters) is held by another patient (`zahlungsreferenz_taken`): every attempt fails the
 *   same way, and a corrected upload of the same registration would too; staff settle it with
 *   the platform by hand, then discard;
 * - `requeue`: the fleet gave up (storage, database, a worker dying): requeue once fixed.
 */
export type FailureRemedy = 'corrected-upload' | 'rename' | 'settings' | 'raise-limit' | 'object-gone' | 'resolve-by-hand' | 'requeue';

/** The error code of a registration whose payment reference another patient holds (pg-store's decideImport). */
export const ZAHLUNGSREFERENZ_TAKEN = 'zahlungsreferenz_taken';

/** Where a requeue fails the same way again (one more `import.failed` each time): refused unless forced, skipped by a requeue-all. */
export function requeueIsFutile(remedy: FailureRemedy): boolean {
  return remedy === 'corrected-upload' || remedy === 'rename' || remedy === 'object-gone' || remedy === 'resolve-by-hand';
}

export function failureRemedy(code: string | null | undefined): FailureRemedy {
  switch (code) {
    case rejectCodes.json:
    case rejectCodes.encoding:
    case rejectCodes.validation:
    case rejectCodes.token:
      return 'corrected-upload';
    case rejectCodes.fileName:
      return 'rename';
    case rejectCodes.unsigned:
    case rejectCodes.signature:
    case rejectCodes.environment:
      return 'settings';
    case 'file_too_large':
      return 'raise-limit';
    case 'object_not_found':
      return 'object-gone';
    case ZAHLUNGSREFERENZ_TAKEN:
      return 'resolve-by-hand';
    default:
      return 'requeue';
  }
}

/**
 * The next step in one line, for the operator pages (`/imports`): where a requeue cannot help,
 * it says so, since `/ops` offers the button for every dead letter.
 */
export function failureNextStep(row: { id: number; source: string; errorCode: string | null }): string {
  const dlq = `patient-import.ledger.${row.id}`;
  if (row.source === 'file') return `Imported by hand (no dead letter): import the corrected file again (fleet import patient-file), or close it: fleet imports discard ${row.id} --reason "...".`;
  switch (failureRemedy(row.errorCode)) {
    case 'corrected-upload':
      return `A requeue does not help (the content is wrong): have a corrected file uploaded, then discard ${dlq}.`;
    case 'rename':
      return `A requeue does not help (the name does not fit): have it uploaded under a fitting name, then discard ${dlq}.`;
    case 'settings':
      return `If REGISTRATION_SIGNING_SECRET or REGISTRATION_ENVIRONMENT is wrong: fix it, restart, then requeue ${dlq}; a file that is not genuine: discard it.`;
    case 'raise-limit':
      return `A real registration: raise REGISTRATION_FILE_MAX_MB, restart, then requeue ${dlq}; otherwise discard it.`;
    case 'object-gone':
      return `Gone from the bucket: have it uploaded again, then discard ${dlq}.`;
    case 'resolve-by-hand':
      return `A requeue does not help: ${paymentReferenceCollision(null)}; resolve the registration by hand with the platform, then discard ${dlq}.`;
    case 'requeue':
      return `Requeue ${dlq} once the cause is fixed.`;
  }
}

/**
 * Why a `zahlungsreferenz_taken` registration cannot be imported by the fleet, in a few words:
 * `patientId` names the patient holding the reference where the caller knows it (the staff
 * email); else the reason, shown beside it, does.
 */
export function paymentReferenceCollision(patientId: number | null): string {
  return `its payment reference (the first 8 characters of its registration token) is already used by ${patientId === null ? 'the patient the reason names' : `patient ${patientId}`}, another registration, so every attempt fails the same way`;
}

/** What a failed registration's corrected file became since (see newerImports): re-uploaded under the same name, under another, or imported by hand. */
export type NewerImport = Pick<LaterImport, 'id' | 'status' | 'patientId' | 'duplicateOfPatientId'> & Partial<Pick<LaterImport, 'source' | 'link' | 'tokenCompared'>>;

/**
 * The next step of a failed bucket row whose registration was imported since (a corrected re-upload
 * under the same name, an upload with the same registration token under another name, or a hand
 * import of it with `fleet import patient-file`): nothing is left to import from it, only its dead
 * letter to close. `line`: one line for the operator pages (as failureNextStep); `cli`: two lines
 * with the command, for `fleet imports show`.
 */
export function newerImportNextStep(row: { id: number }, newer: NewerImport, form: 'line' | 'cli' = 'line'): string {
  const outcome = newer.patientId ? `patient ${newer.patientId}` : newer.duplicateOfPatientId ? `a duplicate of patient ${newer.duplicateOfPatientId}` : newer.status;
  const dlq = `patient-import.ledger.${row.id}`;
  const record = `import record ${newer.id} (${outcome}; fleet imports show ${newer.id})`;
  // Only the token in the file names matched (this record's file failed before its own token was read): said so, to be checked.
  const namesOnly = newer.link === 'same-token' && newer.tokenCompared === false;
  const unchecked = namesOnly ? ' This record\'s own registration token could not be read (it failed before that), so only the token in the file names matched: check that it is the same registration before you discard it.' : '';
  const imported =
    newer.source === 'file'
      ? namesOnly
        ? `A file whose name carries the same registration token was imported by hand as ${record}.${unchecked}`
        : `This registration (same registration token) was imported by hand as ${record}.`
      : newer.link === 'same-token'
        ? namesOnly
          ? `An upload under another name whose name carries the same registration token was imported: ${record}.${unchecked}`
          : `An upload of this registration (same registration token) under another name was imported: ${record}.`
        : `A newer upload of this file name was imported since: ${record}.`;
  return form === 'cli'
    ? `${imported}\nNothing is left to import from this record: close it: fleet dlq discard ${dlq} --reason "..."`
    : `${imported} Nothing is left to import from this record: discard ${dlq}.`;
}

/**
 * The dead letter of a committed import (see committedBucketRows): the patient is in; a requeue
 * only deletes the object from the bucket (the retry finds the row committed and imports nothing
 * again); a discard closes the row `done` and leaves the object in the bucket.
 */
export function deleteLeftNextStep(row: { id: number; patientId: number | null; duplicateOfPatientId: number | null }): string {
  const outcome = row.patientId ? `as patient ${row.patientId}` : row.duplicateOfPatientId ? `as a duplicate of patient ${row.duplicateOfPatientId}` : 'already';
  const dlq = `patient-import.ledger.${row.id}`;
  return `Imported ${outcome}: only removing the file from the bucket is left. A requeue of ${dlq} does that and imports nothing again; a discard leaves the file, with its personal data, in the bucket, to be deleted by hand.`;
}
