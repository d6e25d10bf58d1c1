import type { ImportLedgerHead } from '../../libs/db/repositories/patient-import.js';
import type { PatientImportStatus } from '../../libs/db/schema/fleet-patient-import.js';
import type { DeleteOutcome } from '../../libs/storage/port.js';
import type { Logger } from '../../libs/log/index.js';
import type { Clock } from '../../libs/runtime/clock.js';
import type { NewPatient } from './map-patient.js';
import type { SigningOptions } from './parse-registration.js';

/** The ledger's statuses and the row a job sees: as the repository defines them. */
export type ImportStatus = PatientImportStatus;
export type ImportRow = ImportLedgerHead;

/**
 * What the bucket delete of a committed row came to: the storage's answer, `kept` (a local file:
 * nothing to delete), or `deleted_earlier`: the object was gone and an earlier run had sent its
 * delete (that delete went through; its answer or its record was lost, e.g. in a database outage),
 * or this run's own delete got no answer and its retry found the object gone (`gone_after_retry`).
 * `not_found` is then left for an object gone without a delete of the fleet (removed by someone else).
 */
export type LedgerDeleteOutcome = Exclude<DeleteOutcome, 'gone_after_retry'> | 'kept' | 'deleted_earlier';

export interface StaffMail {
  subject: string;
  html: string;
  text: string;
}

export interface CommitInput {
  ledgerId: number;
  patient: NewPatient;
  registrationToken: string;
  registrationTimestamp: string | null;
  /** `consent_metadata` exactly as the file carried it: stored as the proof of consent (GDPR). */
  consent: Record<string, unknown>;
  /** The parsed consent the import decides on and fills the consent columns with. */
  consentValues: ConsentValues;
  signed: boolean;
  unknownFields: string[];
  validation: string;
  /** The durable backup to record first (as markBackedUp does, committed before the import transaction). */
  backedUp?: { backupPath: string; sha256: string; size: number } | null;
  /** Staff email for the outcome, or null for none (same token again, or switched off). */
  staffMail(outcome: CommitOutcome): StaffMail | null;
}

export interface ConsentValues {
  /** Trimmed; blank -> null. */
  ipAddress: string | null;
  userAgent: string | null;
  consentedAt: Date;
  /** Missing -> false. */
  voucherBooking: boolean;
}

export type CommitOutcome =
  | { kind: 'imported'; patientId: number; possibleDuplicateOf: number | null }
  /**
   * `differingFields`: same_token only, the patient_data fields the upload changes (names only; absent or empty: none);
   * `comparedWith`: with what they were compared, the import's digests (`import`) or, where that import recorded none,
   * the patient row as it is now (`patient`, the default: it may include corrections staff made since the import).
   */
  | { kind: 'duplicate'; duplicateKind: 'same_token' | 'same_person'; patientId: number; differingFields?: string[]; comparedWith?: 'import' | 'patient' };

export interface CommitResult {
  outcome: CommitOutcome;
  /** Deliveries created by this commit: enqueue `email-send` for them after the commit. */
  deliveryIds: string[];
}

/** Where a failure can be recorded: a row waiting for its import, or failed already (a retry, a second recording of one failure). */
export const FAILABLE_STATUSES: ReadonlySet<string> = new Set<ImportStatus>(['received', 'downloaded', 'backed_up', 'failed']);

/**
 * Another run of the same row (a job whose lock was lost and was handed to a second worker,
 * two hand imports of one file) moved the row on while this run worked: this run records
 * nothing and leaves the row as that run left it.
 */
export class LedgerRowMovedOn extends Error {
  override name = 'LedgerRowMovedOn';
  constructor(
    readonly ledgerId: number,
    readonly status: ImportStatus,
  ) {
    super(`ledger ${ledgerId}: another run of this import record has made it ${status} meanwhile`);
  }
}

export interface FailInput {
  ledgerId: number;
  code: string;
  reason: string;
  /** `reason` without the values quoted from the file (for web pages, logs, dead letters). */
  reasonWithheld: string;
  failedPath: string | null;
  mail: StaffMail;
  /** The registration token of the file's content, when the import read it before it failed (null: not read). */
  registrationToken?: string | null;
}

/** The import ledger and the one transaction of an import (PostgreSQL in production). */
export interface ImportStore {
  /** Counts one more job run on the row and returns it (PermanentError when there is no such row). */
  startAttempt(ledgerId: number): Promise<ImportRow>;
  /** The row as it is, without counting a run (null: no such row). */
  readRow(ledgerId: number): Promise<ImportRow | null>;
  /**
   * Downloaded (checksum verified) and backed up durably: one update with both timestamps.
   * (A file that validates passes the same record to `commit` as `backedUp` instead.)
   */
  markBackedUp(ledgerId: number, info: { backupPath: string; sha256: string; size: number }): Promise<void>;
  /**
   * ONE transaction: duplicate checks, patient, consent, ledger status, event, staff email.
   * `input.backedUp` is recorded first, committed on its own whatever the transaction does.
   */
  commit(input: CommitInput): Promise<CommitResult>;
  /**
   * One transaction: ledger row failed, one failure email (idempotency key per ledger row) and,
   * when the row was not failed already, one `import.failed` event (ids and codes only).
   */
  /** Throws LedgerRowMovedOn (records nothing) when the row is committed or final already. */
  markFailed(input: FailInput): Promise<{ deliveryId: string; created: boolean }>;
  /** Records that this run is about to send the bucket delete of the committed row (`delete_requested_at`). */
  markDeleteRequested(ledgerId: number): Promise<void>;
  /** Throws LedgerRowMovedOn when another run of the row finished it first (its record stays). */
  markFinished(ledgerId: number, status: 'deleted' | 'superseded' | 'done', deleteOutcome: LedgerDeleteOutcome): Promise<void>;
  /** Not imported: the bucket object was replaced by a newer upload before this generation was downloaded (final). */
  markReplaced(ledgerId: number, reason: string): Promise<void>;
  /**
   * A newer generation of the row's object that the ledger recorded (null: none): the row's own
   * was replaced by it, even when the fleet has imported and deleted that one from the bucket already.
   */
  newerGeneration(row: ImportRow): Promise<string | null>;
}

/** Where a row's bytes come from and how its object is deleted. */
export interface ImportSource {
  /** The bytes of the row's generation; throws PermanentError `object_not_found` when it is gone. */
  download(row: ImportRow): Promise<Buffer>;
  /** The generation the source holds now under the row's name (null: none), asked when the row's own is gone. */
  currentGeneration(row: ImportRow): Promise<string | null>;
  delete(row: ImportRow): Promise<DeleteOutcome | 'kept'>;
}

/** Durable local copies (write, fsync, rename, fsync dir). */
export interface FileKeeper {
  save(row: ImportRow, bytes: Buffer): Promise<string>;
  /** A copy saved before (by its path), or null when it is not there. */
  read(savedPath: string): Promise<Buffer | null>;
}

export interface ImportDeps {
  store: ImportStore;
  source: ImportSource;
  backups: FileKeeper;
  failed: FileKeeper;
  /** Enqueues `email-send` for a delivery (after the commit). */
  sendMail(deliveryId: string): Promise<void>;
  signing: SigningOptions;
  staffImportEmails: boolean;
  /** A file larger than this (bytes) is not parsed (REGISTRATION_FILE_MAX_MB); unset: no limit. */
  maxFileBytes?: number;
  /** The operator pages (DASHBOARD_URL), named in staff emails; unset: only the CLI commands. */
  dashboardUrl?: string | undefined;
  clock: Clock;
  log: Logger;
  /** Test hook: runs right after the import transaction committed, before the delete. */
  afterCommit?: () => void | Promise<void>;
}
