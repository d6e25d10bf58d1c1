import { sql } from 'drizzle-orm';
import { bigint, bigserial, boolean, index, integer, json, jsonb, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { fleet } from './fleet.js';

/**
 * Therapist import from scraper file drops (DOMAIN.md section 2).
 *
 * - `therapist_import_runs`: one row per run (a batch of files picked up together by the
 *   watcher, or one CLI import); closed with totals and one staff summary when its files drain.
 * - `therapist_import_files`: one row per file (path + content hash) with status, counts,
 *   timings, file-level errors, metadata disagreements and per-therapist failures.
 * - `therapist_external_ids`: the scraper `id` -> platform therapist id (the platform table
 *   has no such column), scoped by postcode area; also the tombstone for therapists the
 *   scraper deleted, so a later `unchanged` line never re-creates them.
 * - `therapist_scraped`: per platform therapist, the import's fields as the scraper last gave
 *   them, so a re-import writes only what the scraper changed since: a value staff corrected
 *   on the platform stays while the scraper keeps listing the old one.
 */

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const therapistImportFileStatuses = ['queued', 'importing', 'imported', 'partial', 'failed', 'skipped'] as const;
export type TherapistImportFileStatus = (typeof therapistImportFileStatuses)[number];

export const therapistImportRunStates = ['collecting', 'sealed', 'closed'] as const;
export type TherapistImportRunState = (typeof therapistImportRunStates)[number];

/** The report numbers of one file or one run. created+updated+unchanged+deactivated+skipped+failed = total. */
export interface TherapistImportCounts {
  total: number;
  created: number;
  updated: number;
  unchanged: number;
  deactivated: number;
  skipped: number;
  failed: number;
  statusMismatches: number;
  metadataDisagreements: number;
  fileErrors: number;
}

export interface TherapistFailure {
  /** 0-based position in the file's `therapists` array. */
  index: number;
  externalId: string | null;
  reason: string;
}

export interface StatusMismatch {
  index: number;
  externalId: string | null;
  therapistId: number | null;
  stated: string;
  found: string;
}

/** A correction staff made on the platform that the scraper's newer value replaced (field names only). */
export interface ReplacedCorrection {
  index: number;
  externalId: string | null;
  therapistId: number | null;
  fields: string[];
}

export interface MetadataDisagreement {
  field: string;
  stated: unknown;
  found: unknown;
}

export const therapistImportRuns = fleet.table(
  'therapist_import_runs',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    /** watcher | cli */
    trigger: text('trigger').notNull(),
    state: text('state').$type<TherapistImportRunState>().notNull().default('collecting'),
    startedAt: ts('started_at').notNull().defaultNow(),
    sealedAt: ts('sealed_at'),
    closedAt: ts('closed_at'),
    fileCount: integer('file_count').notNull().default(0),
    /** Files per final status, filled when the run closes. */
    fileStatusCounts: jsonb('file_status_counts').$type<Partial<Record<TherapistImportFileStatus, number>>>().notNull().default({}),
    counts: jsonb('counts').$type<TherapistImportCounts | null>(),
    summaryDeliveryId: uuid('summary_delivery_id'),
  },
  (t) => [index('therapist_import_runs_open_idx').on(t.state).where(sql`${t.state} <> 'closed'`)],
);

export const therapistImportFiles = fleet.table(
  'therapist_import_files',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    runId: bigint('run_id', { mode: 'number' }).references(() => therapistImportRuns.id),
    /** Relative to SCRAPER_DROP_DIR (posix separators), or absolute for a CLI import from elsewhere. */
    path: text('path').notNull(),
    /** Postcode from the file name (`52074.json`), when the name fits. */
    postcode: text('postcode'),
    /** YYYYMMDD folder, when under one. */
    dateFolder: text('date_folder'),
    urgent: boolean('urgent').notNull().default(false),
    contentHash: text('content_hash'),
    sizeBytes: bigint('size_bytes', { mode: 'number' }),
    /**
     * The file's size, modification and change times and inode (`size:mtimeNs:ctimeNs:ino`) when
     * its content was hashed: a catch-up that finds the file at the same path with the same key
     * takes the hash from here instead of reading the file again. Any write changes the change
     * time (which no tool sets back), so a changed file never matches.
     */
    statKey: text('stat_key'),
    status: text('status').$type<TherapistImportFileStatus>().notNull(),
    /** Why the file was skipped or failed (one line). */
    reason: text('reason'),
    fileErrors: jsonb('file_errors').$type<string[]>().notNull().default([]),
    metadataDisagreements: jsonb('metadata_disagreements').$type<MetadataDisagreement[]>().notNull().default([]),
    failures: jsonb('failures').$type<TherapistFailure[]>().notNull().default([]),
    statusMismatches: jsonb('status_mismatches').$type<StatusMismatch[]>().notNull().default([]),
    replacedCorrections: jsonb('replaced_corrections').$type<ReplacedCorrection[]>().notNull().default([]),
    counts: jsonb('counts').$type<TherapistImportCounts | null>(),
    attempts: integer('attempts').notNull().default(0),
    discoveredAt: ts('discovered_at').notNull().defaultNow(),
    startedAt: ts('started_at'),
    finishedAt: ts('finished_at'),
    durationMs: integer('duration_ms'),
    /**
     * Why a file was not imported, as a code (`gave_up`: out of retries, `worker_died`: abandoned
     * by BullMQ, `file_unreadable`, `file_missing`, ...); null for an imported or partial file.
     * `gave_up` and `worker_died` are the job's failures: their file waits for an operator
     * through a dead letter (restored after Redis lost it, unless `deadLetterDiscardedAt`).
     */
    errorCode: text('error_code'),
    /** When an operator discarded the file's dead letter (it stays `failed`, with nothing more to do). */
    deadLetterDiscardedAt: ts('dead_letter_discarded_at'),
  },
  (t) => [
    // A content hash is imported once: one live row per hash (skipped rows aside).
    uniqueIndex('therapist_import_files_hash_uq').on(t.contentHash).where(sql`${t.status} <> 'skipped'`),
    // A file whose name does not fit (or that a newer date folder superseded) is reported once.
    uniqueIndex('therapist_import_files_skipped_uq').on(t.path, sql`coalesce(${t.contentHash}, '')`).where(sql`${t.status} = 'skipped'`),
    index('therapist_import_files_run_idx').on(t.runId, t.status),
    index('therapist_import_files_postcode_idx').on(t.postcode, t.dateFolder),
    index('therapist_import_files_discovered_idx').on(t.discoveredAt),
    index('therapist_import_files_path_idx').on(t.path),
    // Files waiting or being imported (the watcher's catch-up, the backlog gauges): few at any time.
    index('therapist_import_files_pending_idx').on(t.discoveredAt).where(sql`${t.status} in ('queued', 'importing')`),
  ],
);

export const therapistExternalIds = fleet.table(
  'therapist_external_ids',
  {
    /** Postcode area the id belongs to (the scraper's ids are only known to be stable per area). */
    scope: text('scope').notNull(),
    externalId: text('external_id').notNull(),
    /** Null when the scraper deleted a therapist we never had (a tombstone only). */
    therapistId: integer('therapist_id'),
    /** Set when the scraper reported the therapist deleted: never re-created from this id. */
    deletedAt: ts('deleted_at'),
    firstFileId: bigint('first_file_id', { mode: 'number' }),
    lastFileId: bigint('last_file_id', { mode: 'number' }),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('therapist_external_ids_pk').on(t.scope, t.externalId),
    index('therapist_external_ids_therapist_idx').on(t.therapistId),
  ],
);

export const therapistScraped = fleet.table(
  'therapist_scraped',
  {
    /** The platform therapist (no foreign key: the platform's table is not the fleet's). */
    therapistId: integer('therapist_id').primaryKey(),
    /**
     * The import's fields as the scraper last gave them, mapped; a field the last line left empty
     * keeps the value an earlier line gave (left out: no line gave one).
     */
    fields: json('fields').$type<Record<string, unknown>>().notNull(),
    /** Digest of the last line's non-empty fields (a re-import compares it first: the same digest, nothing changed). */
    digest: text('digest').notNull(),
    /**
     * The platform row's version (`xmin`) when the import left it holding these fields (empty ones
     * and a kept house number aside); null when it kept a staff correction. While the row is at
     * that version, the record says nothing the row does not, and a re-import does not read it.
     */
    rowVersion: text('row_version'),
    /** The file that last changed them. */
    lastFileId: bigint('last_file_id', { mode: 'number' }),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  // The candidates of a file are also the therapists whose record has one of its postcodes (a
  // postcode staff corrected on the platform): one index scan per file.
  (t) => [index('therapist_scraped_plz_idx').on(sql`(${t.fields}->>'plz')`)],
);
