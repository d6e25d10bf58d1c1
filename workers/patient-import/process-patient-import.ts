import { createHash } from 'node:crypto';
import { errorMessage, isPermanent, PermanentError } from '../../libs/errors/index.js';
import { parseFileName } from './file-name.js';
import { mapPatient } from './map-patient.js';
import { parseRegistration, rejectCodes } from './parse-registration.js';
import { FAILABLE_STATUSES, LedgerRowMovedOn, type CommitInput, type CommitOutcome, type ImportDeps, type ImportRow, type LedgerDeleteOutcome } from './ports.js';
import { withholdValues } from './registration-schema.js';
import { failedMail, importedMail } from './staff-mails.js';

export type ImportResult =
  | {
      outcome: 'imported' | 'duplicate';
      ledgerId: number;
      patientId: number;
      status: 'deleted' | 'superseded' | 'done';
      duplicateKind?: string;
      possibleDuplicateOf?: number | null;
    } & Pick<Extract<CommitOutcome, { kind: 'duplicate' }>, 'differingFields' | 'comparedWith'>
  | { outcome: 'replaced'; ledgerId: number; status: 'replaced' }
  | { outcome: 'already-final'; ledgerId: number; status: string }
  /** Another run of the same row (a job whose lock was lost, a second hand import) committed or ended it meanwhile: this run recorded nothing. */
  | { outcome: 'moved-on'; ledgerId: number; status: string };

const FINAL = new Set(['deleted', 'superseded', 'done', 'discarded', 'replaced']);
const ORDER = ['received', 'downloaded', 'backed_up'];

function md5Base64(bytes: Buffer): string {
  return createHash('md5').update(bytes).digest('base64');
}

/**
 * Imports the registration file of one ledger row. Idempotent at every step: a retry after
 * a crash anywhere continues where the ledger says the row is, so there is never a second
 * patient or a second email, and the object is deleted eventually.
 *
 * Throws PermanentError (after recording the failure, keeping the bytes and queueing one
 * staff email) for a file that cannot be imported; any other throw means "retry".
 */
export async function processPatientImport(
  ledgerId: number,
  deps: ImportDeps,
  /** `carried`: whether a failure with this error is retried anyway (an outage, see OutageCarry): no final bookkeeping for it. */
  opts: { finalAttempt?: boolean; carried?: (err: unknown) => boolean } = {},
): Promise<ImportResult> {
  const row = await deps.store.startAttempt(ledgerId);
  if (FINAL.has(row.status)) return { outcome: 'already-final', ledgerId, status: row.status };
  let bytes: Buffer | null = null;
  try {
    if (row.status === 'imported' || row.status === 'duplicate') return await finish(row, deps);
    // A file far larger than any registration is neither downloaded (when the listing gave its
    // size) nor parsed: parsing takes ~10 bytes of memory per byte, and a worker that runs out
    // of memory takes every job it holds down with it, again at each retry.
    if (row.size !== null) checkSize(row.size, deps);
    const got = await download(row, deps);
    if ('replacedBy' in got) return await replaced(row, got.replacedBy, deps);
    checkSize(got.length, deps);
    bytes = got;
    const backupPath = await deps.backups.save(row, bytes);
    const backedUp =
      ORDER.indexOf(row.status) < 2 || row.backupPath !== backupPath
        ? { backupPath, sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length }
        : null;
    let input: CommitInput;
    try {
      input = validate(row, bytes, deps);
    } catch (err) {
      // A file that does not validate: the backup is recorded before the failure.
      if (backedUp) await deps.store.markBackedUp(ledgerId, backedUp);
      throw err;
    }
    row.status = 'backed_up';
    row.backupPath = backupPath;
    // A file that validates: the backup record goes with the import (its own statement, committed first, same round trip).
    const result = await deps.store.commit({ ...input, backedUp });
    // Committed: from here on a failure (the email enqueue, the delete) leaves only the delete,
    // never a `failed` row for a patient that exists (the final attempt checks row.status).
    row.status = result.outcome.kind;
    row.patientId = result.outcome.patientId;
    deps.log.info({ ledgerId, outcome: result.outcome.kind, patientId: result.outcome.patientId }, 'registration committed');
    for (const id of result.deliveryIds) await deps.sendMail(id);
    await deps.afterCommit?.();
    return await finish(row, deps, result.outcome);
  } catch (err) {
    if (err instanceof LedgerRowMovedOn) return movedOn(err, deps);
    // Committed (by this run or an earlier one): only the delete is left, and a permanent error
    // there is not the registration's failure: the job fails (dead letter), the row stays committed.
    if (isPermanent(err) && (row.status === 'imported' || row.status === 'duplicate')) throw err;
    if (isPermanent(err)) {
      const recorded = await fail(row, err, bytes, deps, { finalAttempt: opts.finalAttempt === true });
      if (recorded instanceof LedgerRowMovedOn) return movedOn(recorded, deps);
      throw recorded;
    }
    if (opts.finalAttempt && row.status !== 'imported' && row.status !== 'duplicate' && !opts.carried?.(err)) {
      // No more retries: record it for staff (best effort: the store may be what is failing).
      const giveUp = new PermanentError('gave_up', `ledger ${ledgerId}: gave up after ${row.attempts} attempts: ${errorMessage(err)}`);
      const recorded = await fail(row, giveUp, bytes, deps, { finalAttempt: true }).catch((e: unknown) => deps.log.error({ err: e, ledgerId }, 'could not record the failed import'));
      if (recorded instanceof LedgerRowMovedOn) return movedOn(recorded, deps);
    }
    throw err;
  }
}

const megabytes = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

function checkSize(size: number, deps: ImportDeps): void {
  const max = deps.maxFileBytes;
  if (max === undefined || size <= max) return;
  throw new PermanentError(
    'file_too_large',
    `file: ${megabytes(size)}, more than REGISTRATION_FILE_MAX_MB=${max / 1024 / 1024} allows (a registration is a few KB), not read`,
  );
}

function movedOn(e: LedgerRowMovedOn, deps: ImportDeps): ImportResult {
  deps.log.info({ ledgerId: e.ledgerId, status: e.status }, 'another run of this import record moved it on meanwhile: this run recorded nothing');
  return { outcome: 'moved-on', ledgerId: e.ledgerId, status: e.status };
}

/**
 * A job BullMQ failed outside its processor (the worker running it died, more often than
 * allowed): recorded for staff as one out of retries is, so the row does not wait unseen with
 * only a dead letter. Nothing is downloaded or parsed (the file may be what kills the worker);
 * the durable copy, when one was made, is kept in the failed folder; the object stays in the
 * bucket. A row already imported (the delete was left) or final is left alone.
 */
export async function recordAbandonedImport(ledgerId: number, reason: string, deps: ImportDeps): Promise<void> {
  const row = await deps.store.readRow(ledgerId);
  if (!row || FINAL.has(row.status) || row.status === 'failed' || row.status === 'imported' || row.status === 'duplicate') return;
  // Reading the copy is safe; parsing it is what may not be.
  const bytes = row.backupPath ? await deps.backups.read(row.backupPath) : null;
  const recorded = await fail(row, new PermanentError('worker_died', `ledger ${ledgerId}: gave up after ${row.attempts} attempts: ${reason}`), bytes, deps, { finalAttempt: true });
  if (recorded instanceof LedgerRowMovedOn) movedOn(recorded, deps);
}

/**
 * The bytes of the row's generation, checksum verified. When the bucket no longer has that
 * generation: the durable copy of a row backed up before (a retry), else `replacedBy` when a
 * newer upload of the same name took its place (not imported: the newer upload is a row of its
 * own), else a permanent failure (someone else deleted it before the fleet downloaded it).
 */
async function download(row: ImportRow, deps: ImportDeps): Promise<Buffer | { replacedBy: string }> {
  let bytes: Buffer;
  try {
    bytes = await deps.source.download(row);
  } catch (err) {
    if (!(err instanceof PermanentError && err.code === 'object_not_found')) throw err;
    return gone(row, deps);
  }
  if (row.md5Hash && md5Base64(bytes) !== row.md5Hash) {
    throw new Error(`ledger ${row.id}: downloaded bytes do not match the listed md5 checksum`);
  }
  return bytes;
}

async function gone(row: ImportRow, deps: ImportDeps): Promise<Buffer | { replacedBy: string }> {
  if (row.status === 'backed_up' && row.backupPath) {
    const copy = await deps.backups.read(row.backupPath);
    if (copy && (!row.md5Hash || md5Base64(copy) === row.md5Hash)) {
      deps.log.info({ ledgerId: row.id }, 'registration generation gone from the bucket: importing its durable copy');
      return copy;
    }
  }
  const current = await deps.source.currentGeneration(row);
  // Listed but not served: a storage hiccup, retried.
  if (current === row.generation) throw new Error(`ledger ${row.id}: the bucket has generation ${row.generation} but did not serve it`);
  if (current !== null) return { replacedBy: current };
  // No object of that name now, but the ledger has a newer upload of it: that one replaced this
  // generation, and the fleet imported and deleted it before this row's turn (a backlog, a retry).
  const newer = await deps.store.newerGeneration(row);
  if (newer !== null) return { replacedBy: newer };
  throw new PermanentError(
    'object_not_found',
    `ledger ${row.id}: generation ${row.generation} is no longer in the bucket and no other upload of that name is: deleted before the fleet downloaded it (not by the fleet); ask for the registration to be uploaded again`,
  );
}

/** A generation replaced before its download: final, no staff email (the newer upload is imported and reported on its own). */
async function replaced(row: ImportRow, replacedBy: string, deps: ImportDeps): Promise<ImportResult> {
  await deps.store.markReplaced(row.id, `replaced in the bucket by generation ${replacedBy} before it was downloaded; that upload is imported on its own`);
  deps.log.info({ ledgerId: row.id }, 'registration file replaced by a newer upload before its download: not imported');
  return { outcome: 'replaced', ledgerId: row.id, status: 'replaced' };
}

/**
 * Why the content cannot be imported, when the file name already failed: the same corrected
 * upload must fix both, so staff should see both at once. Null: the content is fine.
 */
function contentProblem(bytes: Buffer, deps: ImportDeps, now: Date): { problem: { reason: string; marked: string; fields: unknown } | null; registrationToken: unknown } {
  try {
    return { problem: null, registrationToken: parseRegistration(bytes, deps.signing, now).registration.registration_token };
  } catch (err) {
    if (!(err instanceof PermanentError)) throw err;
    return {
      problem: { reason: err.message, marked: typeof err.details?.marked === 'string' ? err.details.marked : err.message, fields: err.details?.fields },
      registrationToken: err.details?.registrationToken,
    };
  }
}

function validate(row: ImportRow, bytes: Buffer, deps: ImportDeps) {
  const name = parseFileName(row.objectName);
  const now = deps.clock.now();
  if (!name.ok) {
    const { problem: content, registrationToken } = contentProblem(bytes, deps, now);
    if (!content) throw new PermanentError(rejectCodes.fileName, name.reason, { marked: name.marked, registrationToken });
    throw new PermanentError(rejectCodes.fileName, `${name.reason}; ${content.reason}`, { marked: `${name.marked}; ${content.marked}`, fields: content.fields, registrationToken });
  }
  const parsed = parseRegistration(bytes, deps.signing, now);
  const reg = parsed.registration;
  if (!reg.registration_token.toLowerCase().startsWith(name.value.token.toLowerCase())) {
    throw new PermanentError(rejectCodes.token, 'registration_token: does not match the token in the file name', { registrationToken: reg.registration_token });
  }
  const patient = mapPatient(reg, now);
  return {
    ledgerId: row.id,
    patient,
    registrationToken: reg.registration_token,
    registrationTimestamp: reg.registration_timestamp ?? null,
    consent: parsed.rawConsent,
    consentValues: {
      ipAddress: reg.consent_metadata.ip_address ?? null,
      userAgent: reg.consent_metadata.user_agent ?? null,
      consentedAt: new Date(reg.consent_metadata.timestamp_utc),
      voucherBooking: reg.consent_metadata.voucher_booking,
    },
    signed: parsed.signed,
    unknownFields: parsed.unknownFields,
    validation: parsed.validation,
    staffMail: (outcome: CommitOutcome) => {
      // The same registration again: silent when its content is the same (a retry, a second poller); staff are told what changed.
      if (outcome.kind === 'duplicate' && outcome.duplicateKind === 'same_token' && !outcome.differingFields?.length) return null;
      // Switched off: the routine notice of a new patient. A possible duplicate still needs a look.
      if (outcome.kind === 'imported' && outcome.possibleDuplicateOf === null && !deps.staffImportEmails) return null;
      return importedMail(row, outcome, {
        vorname: patient.vorname,
        nachname: patient.nachname,
        voucher: patient.zahlungEingegangen ? { zahlungsreferenz: patient.zahlungsreferenz } : null,
        validation: parsed.validation,
        unknownFields: parsed.unknownFields,
        at: now,
      });
    },
  };
}

async function finish(row: ImportRow, deps: ImportDeps, outcome?: CommitOutcome): Promise<ImportResult> {
  // Recorded before the request is sent, so a later run that finds the object gone knows the
  // fleet deleted it. Sent together (to save the round trip), a process killed after the delete
  // went out but before the record was committed left the row saying `not_found`, removed by
  // someone else (the crash drill, scripts/drill/crash-steps.ts: 1 row in 2,000 under 10 kills).
  const requestedBefore = row.deleteRequestedAt !== null;
  if (row.source === 'bucket') await deps.store.markDeleteRequested(row.id);
  const answer = await deps.source.delete(row);
  const deleted: LedgerDeleteOutcome =
    (answer === 'not_found' && requestedBefore) || answer === 'gone_after_retry' ? 'deleted_earlier' : answer;
  const status = deleted === 'kept' ? 'done' : deleted === 'precondition_failed' ? 'superseded' : 'deleted';
  await deps.store.markFinished(row.id, status, deleted);
  deps.log.info({ ledgerId: row.id, status, deleteOutcome: deleted }, 'import finished');
  const patientId = outcome?.patientId ?? row.patientId ?? row.duplicateOfPatientId ?? 0;
  const kind = outcome?.kind ?? (row.status === 'duplicate' ? 'duplicate' : 'imported');
  return {
    outcome: kind,
    ledgerId: row.id,
    patientId,
    status,
    ...(outcome?.kind === 'duplicate' ? { duplicateKind: outcome.duplicateKind } : {}),
    ...(outcome?.kind === 'duplicate' && outcome.differingFields?.length ? { differingFields: outcome.differingFields, comparedWith: outcome.comparedWith ?? 'patient' } : {}),
    ...(outcome?.kind === 'imported' ? { possibleDuplicateOf: outcome.possibleDuplicateOf } : {}),
  };
}

/**
 * Records the failure (ledger, kept bytes, one staff email); returns the error to throw, or
 * LedgerRowMovedOn when another run of the row imported or ended it meanwhile (nothing recorded,
 * no copy kept in the failed folder).
 *
 * A failed folder that cannot take the copy (full, read-only) fails the attempt, which is
 * retried; on the last attempt the failure is recorded without the copy (the reason says so; the
 * object stays in the bucket): else a full disk, which also failed the backup, left the row
 * waiting unseen behind a dead letter, without the one staff email.
 */
async function fail(row: ImportRow, err: PermanentError, bytes: Buffer | null, deps: ImportDeps, opts: { finalAttempt: boolean }): Promise<PermanentError | LedgerRowMovedOn> {
  const now = await deps.store.readRow(row.id);
  if (now && !FAILABLE_STATUSES.has(now.status)) return new LedgerRowMovedOn(row.id, now.status);
  const prefix = `ledger ${row.id}: `;
  let failedPath: string | null = null;
  let notKept = '';
  if (bytes) {
    try {
      failedPath = await deps.failed.save(row, bytes);
    } catch (e) {
      if (!opts.finalAttempt) throw e;
      // A FolderError names the errno, the operation and the folder, never the file (the patient's name).
      notKept = `; failed folder: the original bytes could not be kept there (${errorMessage(e)}), the file stays in the bucket`;
      deps.log.error({ err: e, ledgerId: row.id }, 'could not keep the failed file in the failed folder: the failure is recorded without it');
    }
  }
  const marked = typeof err.details?.marked === 'string' ? err.details.marked : err.message;
  const reason = `${err.message.startsWith(prefix) ? err.message : `${prefix}${err.message}`}${notKept}`;
  // Logs and dead letters get the text without values quoted from the file (personal data).
  const safe = `${prefix}${withholdValues(marked.startsWith(prefix) ? marked.slice(prefix.length) : marked)}${notKept}`;
  const at = deps.clock.now();
  const heldBy = err.details?.patientId;
  const mail = failedMail(row, { code: err.code, reason, failedPath, at, dashboardUrl: deps.dashboardUrl, referenceHeldBy: typeof heldBy === 'number' ? heldBy : null });
  let recorded: { deliveryId: string; created: boolean };
  try {
    const token = err.details?.registrationToken;
    recorded = await deps.store.markFailed({ ledgerId: row.id, code: err.code, reason, reasonWithheld: safe, failedPath, mail, registrationToken: typeof token === 'string' ? token : null });
  } catch (e) {
    // Moved on between the check above and the row's lock: the copy just saved is reported by `fleet retention run` as unrecorded.
    if (e instanceof LedgerRowMovedOn) return e;
    throw e;
  }
  const { deliveryId, created } = recorded;
  if (created) await deps.sendMail(deliveryId);
  deps.log.warn({ ledgerId: row.id, code: err.code, emailQueued: created }, 'registration file failed: kept for an operator');
  return new PermanentError(err.code, safe, { fields: err.details?.fields });
}
