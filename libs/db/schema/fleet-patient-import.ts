import { sql } from 'drizzle-orm';
import { bigserial, bigint, boolean, index, integer, jsonb, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { fleet } from './fleet.js';

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/**
 * The registration token part of a file name (`…_{token}.json`, see file-name.ts), lower case, as
 * SQL over the name column `column` (`object_name`, or `alias.object_name`): the ledger's records
 * of one registration across uploads under other names and hand imports. The ledger's index
 * `patient_import_ledger_name_token_idx` is built on this expression, so queries must use it as
 * it is for the index to serve them.
 */
export const nameTokenSql = (column: string) => `lower(substring(${column} from '_([A-Za-z0-9]{6,200})\\.[Jj][Ss][Oo][Nn]$'))`;

/**
 * The life story of one registration file. `received` -> `downloaded` -> `backed_up` ->
 * `imported` | `duplicate` (committed) -> `deleted` | `superseded` | `done` (final), or
 * `failed` (waits for an operator) -> `discarded`, or `replaced` (final, never imported).
 *
 * - deleted: the imported generation was deleted from the bucket.
 * - superseded: imported, but the bucket object had been replaced by a newer upload before
 *   the delete (that upload is a ledger row of its own); nothing was deleted.
 * - done: a local file imported with `fleet import patient-file` (nothing to delete).
 * - replaced: not imported: the bucket object was replaced by a newer upload of the same name
 *   before this generation was downloaded (the newer upload is a ledger row of its own).
 */
export const patientImportStatuses = [
  'received',
  'downloaded',
  'backed_up',
  'imported',
  'duplicate',
  'deleted',
  'superseded',
  'done',
  'failed',
  'discarded',
  'replaced',
] as const;
export type PatientImportStatus = (typeof patientImportStatuses)[number];

/** Statuses a job still has work to do for (crash recovery re-enqueues these). */
export const patientImportOpenStatuses = ['received', 'downloaded', 'backed_up', 'imported', 'duplicate'] as const;
export const patientImportFinalStatuses = ['deleted', 'superseded', 'done', 'discarded', 'replaced'] as const;

/**
 * One row per (bucket, object, generation): a re-upload is a new row. Object names contain
 * patient names: this table is the only place they are kept (never in logs or jobs).
 */
export const patientImportLedger = fleet.table(
  'patient_import_ledger',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    /** `bucket` (found by the poller) or `file` (imported by staff with the CLI). */
    source: text('source').$type<'bucket' | 'file'>().notNull().default('bucket'),
    bucket: text('bucket').notNull(),
    objectName: text('object_name').notNull(),
    generation: text('generation').notNull(),
    sourceUri: text('source_uri').notNull(),
    size: bigint('size', { mode: 'number' }),
    md5Hash: text('md5_hash'),
    crc32c: text('crc32c'),
    sha256: text('sha256'),
    status: text('status').$type<PatientImportStatus>().notNull().default('received'),
    /** Job runs that worked on this row. */
    attempts: integer('attempts').notNull().default(0),
    /** Human-readable reason of the last failure (names the field and the rule). */
    reason: text('reason'),
    /**
     * The same reason with every value quoted from the file replaced by `(value not shown)`:
     * what web pages show (/imports). Null on rows failed before it existed.
     */
    reasonWithheld: text('reason_withheld'),
    errorCode: text('error_code'),
    /** Validation status for staff, e.g. `valid (signed, signature verified)`. */
    validation: text('validation'),
    patientId: integer('patient_id'),
    duplicateOfPatientId: integer('duplicate_of_patient_id'),
    /** `same_token` (re-upload of an imported registration) or `same_person` (email + name). */
    duplicateKind: text('duplicate_kind'),
    /**
     * A `same_token` duplicate (the registration uploaded again) whose patient_data differs from the
     * patient of that token: the names of the fields that differ (never their values), for staff to
     * update the patient by hand. Null: none differ (a retry), or not a same_token duplicate.
     */
    differingFields: jsonb('differing_fields').$type<string[]>(),
    /**
     * What `differing_fields` was compared with: `import` (the field digests the import of that
     * registration recorded, so corrections staff made to the patient since do not count) or
     * `patient` (that import recorded none: the patient row as it was at the re-upload, which may
     * include such corrections). Null on rows recorded before the column existed: `patient`.
     */
    differingComparedWith: text('differing_compared_with').$type<'import' | 'patient'>(),
    /**
     * The import that wrote the consent of its registration token (the first import of that
     * token): per patient_data field, a short keyed digest of the value as the import normalised it
     * (field name -> 16 hex chars of SHA-256 over token, field and value), never the value itself.
     * A re-upload of the same token is compared with these, not with the patient as staff may have
     * corrected it since. Null on rows without a consent and on rows imported before the column existed.
     */
    fieldDigests: jsonb('field_digests').$type<Record<string, string>>(),
    /** Imported, but another patient has the same email with another name. */
    possibleDuplicateOfPatientId: integer('possible_duplicate_of_patient_id'),
    unknownFields: jsonb('unknown_fields').$type<string[]>().notNull().default([]),
    /**
     * The `registration_token` the file's content carries, once the import read it: recorded with
     * the import (imported or duplicate) and with a failure the content was read far enough for
     * (a field rule, the payment reference taken, ...); null when it failed before (not JSON, too
     * large, a wrong signature, the fleet gave up) and on rows recorded before the column existed.
     * The link between a failed record and a later import of the same registration compares it.
     */
    registrationToken: text('registration_token'),
    backupPath: text('backup_path'),
    failedPath: text('failed_path'),
    deleteOutcome: text('delete_outcome'),
    /**
     * When a run last sent the bucket delete of this generation (set just before it): a later run
     * that finds the object gone records `deleted_earlier` (that delete went through, its answer
     * or record was lost) instead of `not_found` (gone, no delete of the fleet sent).
     */
    deleteRequestedAt: ts('delete_requested_at'),
    staffDeliveryId: uuid('staff_delivery_id'),
    failureDeliveryId: uuid('failure_delivery_id'),
    receivedAt: ts('received_at').notNull().defaultNow(),
    downloadedAt: ts('downloaded_at'),
    backedUpAt: ts('backed_up_at'),
    importedAt: ts('imported_at'),
    deletedAt: ts('deleted_at'),
    failedAt: ts('failed_at'),
    discardedAt: ts('discarded_at'),
    /** When the row reached its final status (deleted, superseded, done, discarded, replaced): the retention of its copies counts from here. */
    finishedAt: ts('finished_at'),
    /** The retention sweep removed the durable copy (`backup_path`) / the failed-folder copy (`failed_path`); the path is kept as history. */
    backupRemovedAt: ts('backup_removed_at'),
    failedRemovedAt: ts('failed_removed_at'),
    lastAttemptAt: ts('last_attempt_at'),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('patient_import_ledger_object_uq').on(t.bucket, t.objectName, t.generation),
    index('patient_import_ledger_status_idx').on(t.status, t.id),
    index('patient_import_ledger_open_idx')
      .on(t.id)
      .where(sql`${t.status} in ('received', 'downloaded', 'backed_up', 'imported', 'duplicate')`),
    index('patient_import_ledger_name_token_idx').on(sql.raw(nameTokenSql('object_name'))),
    index('patient_import_ledger_registration_token_idx').on(t.registrationToken).where(sql`${t.registrationToken} is not null`),
    // Final rows that still hold a copy the retention sweep has not removed (they leave it once both are gone).
    index('patient_import_ledger_copies_idx')
      .on(t.id)
      .where(
        sql`${t.status} in ('deleted', 'superseded', 'done', 'discarded', 'replaced') and ((${t.backupPath} is not null and ${t.backupRemovedAt} is null) or (${t.failedPath} is not null and ${t.failedRemovedAt} is null))`,
      ),
  ],
);

/**
 * Proof of consent (GDPR): the full `consent_metadata` of a registration, linked to the
 * patient it belongs to. One row per registration token.
 */
export const patientConsents = fleet.table(
  'patient_consents',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    patientId: integer('patient_id').notNull(),
    ledgerId: bigint('ledger_id', { mode: 'number' }).notNull(),
    registrationToken: text('registration_token').notNull(),
    registrationTimestamp: text('registration_timestamp'),
    ipAddress: text('ip_address'),
    userAgent: text('user_agent'),
    consentedAt: ts('consented_at'),
    voucherBooking: boolean('voucher_booking').notNull().default(false),
    /** The consent_metadata object exactly as the file carried it. */
    metadata: jsonb('metadata').$type<Record<string, unknown>>().notNull(),
    signed: boolean('signed').notNull().default(false),
    createdAt: ts('created_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('patient_consents_token_uq').on(t.registrationToken),
    index('patient_consents_patient_idx').on(t.patientId),
  ],
);
