import { and, asc, desc, eq, getTableColumns, inArray, isNotNull, isNull, lte, ne, sql, type SQL } from 'drizzle-orm';
import { alias } from 'drizzle-orm/pg-core';
import type { Db, DbOrTx, Tx } from '../client.js';
import {
  therapistImportFiles,
  therapistImportRuns,
  type MetadataDisagreement,
  type ReplacedCorrection,
  type StatusMismatch,
  type TherapistFailure,
  type TherapistImportCounts,
  type TherapistImportFileStatus,
} from '../schema/fleet-therapist-import.js';
import { queueDelivery, type NewDelivery } from './deliveries.js';

/**
 * Everything the therapist import stores: the tracking rows of files and runs (this file's
 * first half) and the set-based reads and writes of `therapist_service.therapeuten`
 * (second half). Every batch write is one statement per file, never one per therapist.
 */

export type TherapistImportFileRow = typeof therapistImportFiles.$inferSelect;
export type TherapistImportRunRow = typeof therapistImportRuns.$inferSelect;

// ---------------------------------------------------------------- runs

export async function openRun(db: DbOrTx, trigger: 'watcher' | 'cli', state: 'collecting' | 'sealed' = 'collecting'): Promise<number> {
  const [row] = await db
    .insert(therapistImportRuns)
    .values({ trigger, state, ...(state === 'sealed' ? { sealedAt: new Date() } : {}) })
    .returning({ id: therapistImportRuns.id });
  return row!.id;
}

/** No more files join the run; it closes when its last file is done. */
export async function sealRun(db: DbOrTx, runId: number): Promise<void> {
  await db
    .update(therapistImportRuns)
    .set({ state: 'sealed', sealedAt: new Date() })
    .where(and(eq(therapistImportRuns.id, runId), eq(therapistImportRuns.state, 'collecting')));
}

/** Runs a previous watcher left collecting (it stopped or crashed): seal them. Returns their ids. */
export async function sealCollectingRuns(db: DbOrTx): Promise<number[]> {
  const rows = await db
    .update(therapistImportRuns)
    .set({ state: 'sealed', sealedAt: new Date() })
    .where(eq(therapistImportRuns.state, 'collecting'))
    .returning({ id: therapistImportRuns.id });
  return rows.map((r) => r.id);
}

export async function openRunIds(db: DbOrTx): Promise<number[]> {
  const rows = await db.select({ id: therapistImportRuns.id }).from(therapistImportRuns).where(ne(therapistImportRuns.state, 'closed'));
  return rows.map((r) => r.id);
}

/**
 * A run as the CLI and the pages show it. Its row's file count and files per status are written
 * when it closes, so a run not closed yet (collecting, sealed, or open again for a requeued file)
 * has its files counted now, by the files' run index: the import's transaction writes nothing
 * more for it. (Before, a run still collecting showed "0 files" above a list of its files.)
 * The outer row is named in full, as in `supersedingFileOf`.
 */
const runAsShown = () => {
  const run = 'fleet.therapist_import_runs';
  const open = `${run}.state <> 'closed'`;
  return {
    ...getTableColumns(therapistImportRuns),
    fileCount: sql<number>`(case when ${sql.raw(open)}
      then (select count(*)::int from fleet.therapist_import_files f where f.run_id = ${sql.raw(`${run}.id`)})
      else ${sql.raw(`${run}.file_count`)} end)`.mapWith(Number),
    fileStatusCounts: sql<TherapistImportRunRow['fileStatusCounts']>`(case when ${sql.raw(open)}
      then coalesce((select jsonb_object_agg(s.status, s.n) from (
        select f.status, count(*)::int as n from fleet.therapist_import_files f where f.run_id = ${sql.raw(`${run}.id`)} group by f.status) s), '{}'::jsonb)
      else ${sql.raw(`${run}.file_status_counts`)} end)`.mapWith(therapistImportRuns.fileStatusCounts),
  };
};

export async function getRun(db: DbOrTx, runId: number): Promise<TherapistImportRunRow | null> {
  const [row] = await db.select(runAsShown()).from(therapistImportRuns).where(eq(therapistImportRuns.id, runId));
  return row ?? null;
}

export async function listRuns(db: DbOrTx, limit = 20): Promise<TherapistImportRunRow[]> {
  return db.select(runAsShown()).from(therapistImportRuns).orderBy(desc(therapistImportRuns.id)).limit(limit);
}

export interface ClosedRun {
  run: TherapistImportRunRow;
  files: TherapistImportFileRow[];
  /** Of its files not imported (failed, partial, skipped): those a later file has replaced since (`supersedingFiles`), by file id. */
  replacedBy: Map<number, ReplacingFile>;
}

/** The later file that replaced a file not (or not fully) imported: nothing more to do about that one. */
export interface ReplacingFile {
  id: number;
  path: string;
  status: string;
  finishedAt: Date | null;
}

/**
 * Closes the run when it is sealed and none of its files waits or runs any more, inside the
 * caller's transaction (the run row is locked, so two closers cannot both close it).
 * `summarize` computes the totals stored on the run. Returns null when the run stays open.
 */
export async function closeRunIfDrained(
  tx: Tx,
  runId: number,
  summarize: (files: TherapistImportFileRow[]) => { counts: TherapistImportCounts; fileStatusCounts: Record<string, number> },
): Promise<ClosedRun | null> {
  // Lock the run row first; the check is a statement of its own, sent right behind it on the
  // same connection (pipelined): it runs once the lock is held, with a fresh snapshot (READ
  // COMMITTED), so it sees files committed by an import that held the lock before us.
  const [[run], [pending]] = await Promise.all([
    tx.select({ state: therapistImportRuns.state }).from(therapistImportRuns).where(eq(therapistImportRuns.id, runId)).for('update'),
    tx
      .select({ id: therapistImportFiles.id })
      .from(therapistImportFiles)
      .where(and(eq(therapistImportFiles.runId, runId), inArray(therapistImportFiles.status, ['queued', 'importing'])))
      .limit(1),
  ]);
  if (!run || run.state !== 'sealed') return null;
  if (pending) return null;
  const files = await tx.select().from(therapistImportFiles).where(eq(therapistImportFiles.runId, runId)).orderBy(asc(therapistImportFiles.id));
  const { counts, fileStatusCounts } = summarize(files);
  const [closed] = await tx
    .update(therapistImportRuns)
    .set({ state: 'closed', closedAt: new Date(), counts, fileStatusCounts, fileCount: files.length })
    .where(eq(therapistImportRuns.id, runId))
    .returning();
  // Superseded weeks and copies of a known content are replaced by definition: not asked for (a catch-up run holds thousands).
  const notImported = files.filter((f) => f.status !== 'imported' && !skippedOnPurpose(f));
  const replacedBy = await supersedingFiles(tx, notImported.map((f) => f.id));
  return { run: closed!, files, replacedBy };
}

export async function setRunSummaryDelivery(tx: DbOrTx, runId: number, deliveryId: string): Promise<void> {
  await tx.update(therapistImportRuns).set({ summaryDeliveryId: deliveryId }).where(eq(therapistImportRuns.id, runId));
}

export { queueDelivery, type NewDelivery };

// ---------------------------------------------------------------- files

export interface NewTrackedFile {
  runId: number | null;
  path: string;
  postcode: string | null;
  dateFolder: string | null;
  urgent: boolean;
  contentHash: string;
  sizeBytes: number;
}

/**
 * Registers a file to import. A content hash that already has a live row (queued, importing,
 * imported, partial or failed) is not registered again: returns that row with created=false.
 */
export async function registerFile(db: DbOrTx, f: NewTrackedFile): Promise<{ file: TherapistImportFileRow; created: boolean }> {
  const inserted = await db
    .insert(therapistImportFiles)
    .values({ ...f, status: 'queued' })
    .onConflictDoNothing({ target: therapistImportFiles.contentHash, where: sql`${therapistImportFiles.status} <> 'skipped'` })
    .returning();
  // The run's file count is set when it closes.
  if (inserted[0]) return { file: inserted[0], created: true };
  const existing = await findLiveByHash(db, f.contentHash);
  if (!existing) throw new Error(`file with content hash ${f.contentHash} neither inserted nor found`);
  return { file: existing, created: false };
}

/**
 * A waiting file was moved (to urgent/, another folder): the row follows it to its new place,
 * while it is still queued. Returns the row, or null when it is no longer queued.
 */
export async function relocateQueuedFile(
  db: DbOrTx,
  id: number,
  to: { path: string; postcode: string | null; dateFolder: string | null; urgent: boolean },
): Promise<TherapistImportFileRow | null> {
  const [row] = await db
    .update(therapistImportFiles)
    .set(to)
    .where(and(eq(therapistImportFiles.id, id), eq(therapistImportFiles.status, 'queued')))
    .returning();
  return row ?? null;
}

export async function findLiveByHash(db: DbOrTx, contentHash: string): Promise<TherapistImportFileRow | null> {
  const [row] = await db
    .select()
    .from(therapistImportFiles)
    .where(and(eq(therapistImportFiles.contentHash, contentHash), ne(therapistImportFiles.status, 'skipped')));
  return row ?? null;
}

/** The newest YYYYMMDD folder, not after `notAfter`, registered for imports of a postcode (urgent files aside). */
export async function newestDateFolder(db: DbOrTx, postcode: string, notAfter: string): Promise<string | null> {
  const [row] = await db
    .select({ d: sql<string | null>`max(${therapistImportFiles.dateFolder})` })
    .from(therapistImportFiles)
    .where(
      and(
        eq(therapistImportFiles.postcode, postcode),
        isNotNull(therapistImportFiles.dateFolder),
        lte(therapistImportFiles.dateFolder, notAfter),
        eq(therapistImportFiles.urgent, false),
        ne(therapistImportFiles.status, 'skipped'),
      ),
    );
  return row?.d ?? null;
}

/**
 * The newest import (imported or partial) of a postcode from a date folder after `after` and not
 * after `notAfter` (a misdated folder supersedes nothing, as in the watcher), urgent files
 * included: what `fleet import therapist-file` of an older scrape would write over. Null: none.
 */
export async function newerImportOfPostcode(
  db: DbOrTx,
  postcode: string,
  after: string,
  notAfter: string,
): Promise<{ id: number; path: string; dateFolder: string; status: TherapistImportFileStatus; finishedAt: Date | null } | null> {
  const f = therapistImportFiles;
  const [row] = await db
    .select({ id: f.id, path: f.path, dateFolder: f.dateFolder, status: f.status, finishedAt: f.finishedAt })
    .from(f)
    .where(and(eq(f.postcode, postcode), inArray(f.status, ['imported', 'partial']), sql`${f.dateFolder} > ${after}`, lte(f.dateFolder, notAfter)))
    .orderBy(desc(f.dateFolder), desc(f.id))
    .limit(1);
  return row ? { ...row, dateFolder: row.dateFolder! } : null;
}

export async function getFile(db: DbOrTx, id: number): Promise<TherapistImportFileRow | null> {
  const [row] = await db.select().from(therapistImportFiles).where(eq(therapistImportFiles.id, id));
  return row ?? null;
}

/** The statuses of the files `ids` (missing ids are absent), in one statement. */
export async function fileStatuses(db: DbOrTx, ids: number[]): Promise<Map<number, string>> {
  if (!ids.length) return new Map();
  const rows = await db.select({ id: therapistImportFiles.id, status: therapistImportFiles.status }).from(therapistImportFiles).where(inArray(therapistImportFiles.id, ids));
  return new Map(rows.map((r) => [r.id, r.status]));
}

/** Files registered but not finished: re-enqueued at watcher start (the job id dedupes). */
export async function unfinishedFiles(db: DbOrTx): Promise<TherapistImportFileRow[]> {
  return db
    .select()
    .from(therapistImportFiles)
    .where(inArray(therapistImportFiles.status, ['queued', 'importing']))
    .orderBy(desc(therapistImportFiles.urgent), asc(therapistImportFiles.id));
}

/**
 * What the import's gauges show (read when Prometheus scrapes): files waiting or being
 * imported, the age of the oldest of them (a stuck import grows it), and when the watcher's
 * last closed run took its last file (scraper files arrive weekly: a long gap means none came). Null: none.
 */
export async function importBacklog(db: DbOrTx, now: Date): Promise<{ queued: number; importing: number; oldestPendingAgeSeconds: number; lastWatcherRunClosedAt: Date | null }> {
  const f = therapistImportFiles;
  const r = therapistImportRuns;
  const [row] = await db
    .select({
      queued: sql<number>`count(*) filter (where ${f.status} = 'queued')::int`,
      importing: sql<number>`count(*) filter (where ${f.status} = 'importing')::int`,
      oldest: sql<number | null>`extract(epoch from min(${f.discoveredAt}))::float8`,
      // When the run stopped taking files, not when it closed: a run closes again when an operator
      // requeues one of its files, and that is not a new drop (it would hide FleetNoScraperDrop).
      // A run open again for such a file closed before (it has its summary): it still counts,
      // else the gauge fell back to an older run while the file is retried (up to an hour).
      lastClosed: sql<number | null>`(select extract(epoch from max(${r.sealedAt}))::float8 from ${r}
        where ${r.trigger} = 'watcher' and (${r.state} = 'closed' or ${r.summaryDeliveryId} is not null))`,
    })
    .from(f)
    .where(inArray(f.status, ['queued', 'importing']));
  const oldest = row?.oldest != null ? new Date(row.oldest * 1000) : null;
  return {
    queued: row?.queued ?? 0,
    importing: row?.importing ?? 0,
    oldestPendingAgeSeconds: oldest ? Math.max(0, (now.getTime() - oldest.getTime()) / 1000) : 0,
    lastWatcherRunClosedAt: row?.lastClosed != null ? new Date(row.lastClosed * 1000) : null,
  };
}

export interface FileOutcome {
  status: Exclude<TherapistImportFileStatus, 'queued' | 'importing'>;
  reason: string | null;
  counts: TherapistImportCounts | null;
  fileErrors: string[];
  metadataDisagreements: MetadataDisagreement[];
  failures: TherapistFailure[];
  statusMismatches: StatusMismatch[];
  replacedCorrections: ReplacedCorrection[];
  finishedAt: Date;
  durationMs: number;
  /** A file not imported: why, as a code (see the column). */
  errorCode?: string | null;
}

/**
 * Records how a file ended, unless it has ended already: only a row still `queued` or
 * `importing` is written (a failure after the file's commit must not turn an imported file into
 * a failed one). Returns whether it was written.
 */
export async function finishFile(db: DbOrTx, id: number, o: FileOutcome): Promise<boolean> {
  const rows = await db
    .update(therapistImportFiles)
    .set(o)
    .where(and(eq(therapistImportFiles.id, id), inArray(therapistImportFiles.status, ['queued', 'importing'])))
    .returning({ id: therapistImportFiles.id });
  return rows.length > 0;
}

/**
 * Dead-letter requeue: the file goes back to `queued`, and its run, closed meanwhile (its summary
 * said the file was not imported), is open again (`sealed`): it closes once more when the file
 * is done, with totals that are its files' again and a follow-up summary. One statement.
 */
export async function requeueFile(db: DbOrTx, id: number): Promise<void> {
  await db.execute(sql`
    with f as (
      update fleet.therapist_import_files set status = 'queued', reason = null, error_code = null
      where id = ${id} and status in ('failed', 'importing', 'queued')
      returning run_id)
    update fleet.therapist_import_runs r set state = 'sealed', closed_at = null
    from f where r.id = f.run_id and r.state = 'closed'`);
}

/** Dead-letter discard: the file stays `failed`, marked so that its dead letter is not restored. */
export async function markDeadLetterDiscarded(db: DbOrTx, id: number, at: Date): Promise<void> {
  await db
    .update(therapistImportFiles)
    .set({ deadLetterDiscardedAt: at })
    .where(and(eq(therapistImportFiles.id, id), eq(therapistImportFiles.status, 'failed')));
}

/** The job's failures (`gave_up`, `worker_died`) a dead letter stands for. */
export const DEAD_LETTER_CODES = ['gave_up', 'worker_died'] as const;

/**
 * Where a file that failed its job stands with its dead letter; null for any other file, and for
 * a file of a CLI run (`runTrigger` 'cli': it failed in the operator's terminal and has none).
 */
export function deadLetterStateOf(
  f: Pick<TherapistImportFileRow, 'status' | 'errorCode' | 'deadLetterDiscardedAt'>,
  runTrigger: string | null | undefined,
): 'waiting' | 'discarded' | null {
  if (runTrigger !== 'watcher') return null;
  if (f.status !== 'failed' || !DEAD_LETTER_CODES.includes(f.errorCode as (typeof DEAD_LETTER_CODES)[number])) return null;
  return f.deadLetterDiscardedAt ? 'discarded' : 'waiting';
}

/**
 * Files waiting for an operator through a dead letter: failed by their job, not discarded,
 * picked up by the watcher (a CLI import fails in the operator's terminal and has none).
 */
export async function filesAwaitingOperator(
  db: DbOrTx,
  onlyId?: number,
): Promise<Array<Pick<TherapistImportFileRow, 'id' | 'contentHash' | 'reason' | 'errorCode' | 'attempts' | 'finishedAt' | 'discoveredAt'>>> {
  const f = therapistImportFiles;
  return db
    .select({ id: f.id, contentHash: f.contentHash, reason: f.reason, errorCode: f.errorCode, attempts: f.attempts, finishedAt: f.finishedAt, discoveredAt: f.discoveredAt })
    .from(f)
    .innerJoin(therapistImportRuns, eq(therapistImportRuns.id, f.runId))
    .where(
      and(
        onlyId === undefined ? undefined : eq(f.id, onlyId),
        eq(f.status, 'failed'),
        inArray(f.errorCode, [...DEAD_LETTER_CODES]),
        isNull(f.deadLetterDiscardedAt),
        eq(therapistImportRuns.trigger, 'watcher'),
      ),
    )
    .orderBy(f.id);
}

/**
 * Discards the file does not record (made before migration 0014, or by a process of the release
 * before it during a rolling deploy): the audit table has them, under the job id the file has
 * now or the one of the releases before the row id was in it (the content hash alone). Recorded
 * on the file as they are found (one file, or every file waiting), so that no dead letter an
 * operator discarded comes back. Returns how many files it marked.
 */
export async function markDiscardsFromAudit(db: DbOrTx, id?: number): Promise<number> {
  const rows = await db.execute<{ id: string }>(sql`
    update fleet.therapist_import_files f set dead_letter_discarded_at = a.at
    from (select target, max(created_at) as at from fleet.audit_log where action = 'dlq.discard' and target like 'therapist-import/%' group by target) a
    where f.status = 'failed' and f.error_code in (${sql.join(DEAD_LETTER_CODES.map((c) => sql`${c}`), sql`, `)}) and f.dead_letter_discarded_at is null
      ${id === undefined ? sql`` : sql`and f.id = ${id}`}
      and a.target in (
        'therapist-import/therapist-import.sha256.' || coalesce(f.content_hash, 'none') || '.file.' || f.id,
        'therapist-import/therapist-import.sha256.' || coalesce(f.content_hash, 'none'))
      and (f.finished_at is null or a.at >= f.finished_at)
    returning f.id::text as id`);
  return rows.length;
}

/** Whether the file still waits for an operator (restoring its dead letter asks again under the entry's lock). */
export async function fileAwaitsOperator(db: DbOrTx, id: number): Promise<boolean> {
  await markDiscardsFromAudit(db, id);
  return (await filesAwaitingOperator(db, id)).length > 0;
}

export interface FileListFilter {
  status?: TherapistImportFileStatus[];
  runId?: number;
  limit?: number;
}

export async function listFiles(db: DbOrTx, filter: FileListFilter = {}): Promise<TherapistImportFileRow[]> {
  return db
    .select()
    .from(therapistImportFiles)
    .where(
      and(
        filter.status?.length ? inArray(therapistImportFiles.status, filter.status) : undefined,
        filter.runId !== undefined ? eq(therapistImportFiles.runId, filter.runId) : undefined,
      ),
    )
    .orderBy(desc(therapistImportFiles.id))
    .limit(filter.limit ?? 50);
}

/**
 * SQL: a later file of the same postcode that was imported, fully or partly: the newest data of
 * that postcode is on the platform, so what an older failed, partial or skipped (too large,
 * unreadable) file did not import no longer waits for anyone. A file without a postcode (a name
 * that does not fit) is replaced by a later import of the same path or of the same content (the
 * file renamed to its right name: a live misfit's content is hashed when it is recorded).
 */
// The outer row is named in full: drizzle leaves a column unqualified in a select list, where it
// would bind to the subquery's own table.
const supersedingFileOf = () => sql.raw(`(
  select l.id from fleet.therapist_import_files l
  where l.id > fleet.therapist_import_files.id and l.status in ('imported', 'partial')
    and (l.postcode = fleet.therapist_import_files.postcode
      or (fleet.therapist_import_files.postcode is null
        and (l.path = fleet.therapist_import_files.path or l.content_hash = fleet.therapist_import_files.content_hash)))
  order by l.id desc limit 1)`);

/** For failed, partial or skipped files: the newest later file that imported the same postcode (a misfit name: the same content), by file id (absent: none). */
export async function supersedingFiles(db: DbOrTx, ids: number[]): Promise<Map<number, ReplacingFile>> {
  if (ids.length === 0) return new Map();
  const f = therapistImportFiles;
  const later = alias(therapistImportFiles, 'later');
  const rows = await db
    .select({ id: f.id, later: { id: later.id, path: later.path, status: later.status, finishedAt: later.finishedAt } })
    .from(f)
    .innerJoin(later, eq(later.id, supersedingFileOf()))
    .where(inArray(f.id, ids));
  return new Map(rows.map((r) => [r.id, r.later]));
}

/** Files of a run that need staff, by kind (the /therapist-imports overview's "Needs staff" column). */
export interface RunFilesNeedingStaff {
  /** Failed or partly imported, and not replaced since by a later import of their postcode. */
  failed: number;
  partial: number;
  /**
   * Skipped, not by design: a name that does not fit, too large, unreadable, changed or removed
   * before its turn. A file superseded by a newer date folder, or a copy of a content imported
   * under another name, is skipped on purpose and left out (the reasons the watcher writes).
   */
  notImported: number;
}

/** Per run (of `runIds`, those with any): its files that need staff, in one statement. */
export async function runFilesNeedingStaff(db: DbOrTx, runIds: number[]): Promise<Map<number, RunFilesNeedingStaff>> {
  if (runIds.length === 0) return new Map();
  const f = therapistImportFiles;
  const rows = await db
    .select({
      runId: f.runId,
      failed: sql<number>`count(*) filter (where ${f.status} = 'failed' and ${supersedingFileOf()} is null)::int`,
      partial: sql<number>`count(*) filter (where ${f.status} = 'partial' and ${supersedingFileOf()} is null)::int`,
      notImported: sql<number>`count(*) filter (where ${f.status} = 'skipped'
        and coalesce(${f.reason}, '') not like ${`${SKIP_REASON_START.superseded} %`} and coalesce(${f.reason}, '') not like ${`${SKIP_REASON_START.sameContent} %`})::int`,
    })
    .from(f)
    .where(and(inArray(f.runId, runIds), inArray(f.status, ['failed', 'partial', 'skipped'])))
    .groupBy(f.runId);
  return new Map(rows.map((r) => [r.runId!, { failed: r.failed, partial: r.partial, notImported: r.notImported }]));
}

/** Files of a run per status (open runs too: the closed run's stored counts are set only at the close). */
export async function countRunFilesByStatus(db: DbOrTx, runId: number): Promise<Record<string, number>> {
  const rows = await db
    .select({ status: therapistImportFiles.status, n: sql<number>`count(*)::int` })
    .from(therapistImportFiles)
    .where(eq(therapistImportFiles.runId, runId))
    .groupBy(therapistImportFiles.status);
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

// ---------------------------------------------------------------- therapists
// The import's reads and writes of `therapist_service.therapeuten` are in
// therapist-import-session.ts (one pipelined transaction per file).

/** A platform therapist as the import reads it (only the columns it matches on and writes). */
export interface StoredTherapist {
  id: number;
  status: string;
  anrede: string | null;
  geschlecht: string | null;
  titel: string | null;
  vorname: string;
  nachname: string;
  strasse: string | null;
  plz: string;
  ort: string | null;
  telefon: string | null;
  fax: string | null;
  email: string | null;
  telefonische_erreichbarkeit: Record<string, string[]> | null;
  fremdsprachen: string[] | null;
  psychotherapieverfahren: string | null;
}

export type NewTherapistRow = Omit<StoredTherapist, 'id' | 'status'>;

export type { Db };

// ---------------------------------------------------------------- batch registration (watcher catch-up)

/** Live rows (not skipped) for many content hashes, in one query. */
export async function findLiveByHashes(db: DbOrTx, hashes: string[]): Promise<TherapistImportFileRow[]> {
  if (hashes.length === 0) return [];
  return db
    .select()
    .from(therapistImportFiles)
    .where(and(inArray(therapistImportFiles.contentHash, hashes), ne(therapistImportFiles.status, 'skipped')));
}

/** A file known by its stat key: its content hash, and whether it was recorded as skipped before (same path and content). */
export interface KnownByStat {
  contentHash: string;
  /** A skipped row holds this path and content: recording the file as skipped again is a no-op. */
  skipped: boolean;
}

/**
 * Content hashes of files at these paths recorded with the same stat key (size, times, inode):
 * path -> hash (the size is part of the key). A path whose key matches rows of different contents is left out (it
 * is read again).
 */
export async function findByStatKeys(db: DbOrTx, files: Array<{ path: string; statKey: string }>): Promise<Map<string, KnownByStat>> {
  if (files.length === 0) return new Map();
  const rows = await db.execute<{ path: string; content_hash: string; skipped: boolean }>(sql`
    select f.path, f.content_hash, bool_or(f.status = 'skipped') as skipped
    from fleet.therapist_import_files f
    join json_to_recordset(${JSON.stringify(files)}::json) as k(path text, "statKey" text)
      on f.path = k.path and f.stat_key = k."statKey"
    where f.content_hash is not null
    group by f.path, f.content_hash`);
  const found = new Map<string, KnownByStat>();
  const ambiguous = new Set<string>();
  for (const r of rows) {
    if (found.has(r.path)) ambiguous.add(r.path);
    found.set(r.path, { contentHash: r.content_hash, skipped: r.skipped });
  }
  for (const p of ambiguous) found.delete(p);
  return found;
}

/** Records the stat key of files whose content was just hashed, on their rows (path and hash), in one statement. */
export async function setStatKeys(db: DbOrTx, files: Array<{ path: string; contentHash: string; statKey: string }>): Promise<void> {
  if (files.length === 0) return;
  await db.execute(sql`
    update fleet.therapist_import_files f set stat_key = k."statKey"
    from json_to_recordset(${JSON.stringify(files)}::json) as k(path text, "contentHash" text, "statKey" text)
    where f.path = k.path and f.content_hash = k."contentHash" and f.stat_key is distinct from k."statKey"`);
}

/** The newest registered YYYYMMDD folder, not after `notAfter`, per postcode (urgent files aside), in one query. */
export async function newestDateFolders(db: DbOrTx, postcodes: string[], notAfter: string): Promise<Map<string, string>> {
  if (postcodes.length === 0) return new Map();
  const rows = await db
    .select({ postcode: therapistImportFiles.postcode, d: sql<string>`max(${therapistImportFiles.dateFolder})` })
    .from(therapistImportFiles)
    .where(
      and(
        inArray(therapistImportFiles.postcode, postcodes),
        isNotNull(therapistImportFiles.dateFolder),
        lte(therapistImportFiles.dateFolder, notAfter),
        eq(therapistImportFiles.urgent, false),
        ne(therapistImportFiles.status, 'skipped'),
      ),
    )
    .groupBy(therapistImportFiles.postcode);
  return new Map(rows.map((r) => [r.postcode!, r.d]));
}

/** Registers many files in one statement; returns the rows inserted (a hash already live is left out). */
export async function registerFiles(db: DbOrTx, files: NewTrackedFile[]): Promise<TherapistImportFileRow[]> {
  if (files.length === 0) return [];
  return db
    .insert(therapistImportFiles)
    .values(files.map((f) => ({ ...f, status: 'queued' as const })))
    .onConflictDoNothing({ target: therapistImportFiles.contentHash, where: sql`${therapistImportFiles.status} <> 'skipped'` })
    .returning();
}

/**
 * Records files that are not imported (name does not fit, superseded by a newer date folder)
 * once, in one statement; returns those recorded for the first time (a file skipped before is
 * not reported again).
 */
/** A file recorded as skipped, with why. */
export interface SkippedFile {
  path: string;
  reason: string;
  contentHash?: string | null;
  sizeBytes?: number | null;
  postcode?: string | null;
  dateFolder?: string | null;
  urgent?: boolean;
}

export async function recordSkippedFiles(db: DbOrTx, files: SkippedFile[]): Promise<Array<{ id: number; path: string }>> {
  if (files.length === 0) return [];
  const now = new Date();
  const rows = await db
    .insert(therapistImportFiles)
    .values(
      files.map((f) => ({
        path: f.path,
        reason: f.reason,
        contentHash: f.contentHash ?? null,
        sizeBytes: f.sizeBytes ?? null,
        postcode: f.postcode ?? null,
        dateFolder: f.dateFolder ?? null,
        urgent: f.urgent ?? false,
        status: 'skipped' as const,
        // One clock for both (the column default is the database's: it could read later).
        discoveredAt: now,
        finishedAt: now,
      })),
    )
    .onConflictDoNothing()
    .returning({ id: therapistImportFiles.id, path: therapistImportFiles.path });
  return rows;
}

/**
 * The skipped row that records a file already (same path and content; a file without a content,
 * such as a misfit name, by its path): what the watcher names when it sees such a file again.
 */
export async function findSkippedFile(db: DbOrTx, filePath: string, contentHash: string | null | undefined): Promise<{ id: number; runId: number | null } | null> {
  const f = therapistImportFiles;
  const [row] = await db
    .select({ id: f.id, runId: f.runId })
    .from(f)
    .where(
      and(
        eq(f.status, 'skipped'),
        eq(f.path, filePath),
        // undefined: a misfit name, recorded once whatever its content
        contentHash === undefined ? isNull(f.postcode) : sql`coalesce(${f.contentHash}, '') = ${contentHash ?? ''}`,
      ),
    )
    .orderBy(asc(f.id))
    .limit(1);
  return row ?? null;
}

/** Of these paths, those a skipped row records as a misfit name already (any content): a misfit name is reported once. */
export async function recordedMisfitPaths(db: DbOrTx, paths: string[]): Promise<Set<string>> {
  if (paths.length === 0) return new Set();
  const f = therapistImportFiles;
  const rows = await db
    .selectDistinct({ path: f.path })
    .from(f)
    .where(and(eq(f.status, 'skipped'), isNull(f.postcode), inArray(f.path, paths)));
  return new Set(rows.map((r) => r.path));
}

/** Files (skipped ones, recorded without a run) join a run: its page and staff summary list them. */
export async function attachFilesToRun(db: DbOrTx, fileIds: number[], runId: number): Promise<void> {
  if (fileIds.length === 0) return;
  await db.update(therapistImportFiles).set({ runId }).where(inArray(therapistImportFiles.id, fileIds));
}

/**
 * How the reason of a skipped file begins, by why it was skipped (the watcher's and the worker's
 * words): the views, the run summary and the run's close tell the kinds apart by them.
 */
export const SKIP_REASON_START = {
  /** Superseded by a newer date folder of its postcode: on purpose. */
  superseded: 'superseded by',
  /** A copy of a content imported before: on purpose. */
  sameContent: 'same content as',
  tooLarge: 'too large to import',
  unreadable: 'cannot read the file',
} as const;

/** A file skipped on purpose (superseded by a newer date folder, or a copy of a known content): nothing for staff. */
export function skippedOnPurpose(f: Pick<TherapistImportFileRow, 'status' | 'reason'>): boolean {
  const r = f.reason ?? '';
  return f.status === 'skipped' && (r.startsWith(SKIP_REASON_START.superseded) || r.startsWith(SKIP_REASON_START.sameContent));
}

/**
 * Skipped files that need a person: a name that does not fit (rename or move it), a file too large
 * to import (SCRAPER_FILE_MAX_MB) and one that cannot be read (permissions), known by their
 * reason's start (SKIP_REASON_START); a misfit has no postcode.
 */
export const SKIPPED_NEEDING_A_PERSON = {
  misfit: `fleet.therapist_import_files.postcode is null`,
  tooLarge: `fleet.therapist_import_files.postcode is not null and fleet.therapist_import_files.reason like '${SKIP_REASON_START.tooLarge}%'`,
  unreadable: `fleet.therapist_import_files.postcode is not null and fleet.therapist_import_files.reason like '${SKIP_REASON_START.unreadable}%'`,
} as const;
export type SkippedKind = keyof typeof SKIPPED_NEEDING_A_PERSON;
const needsAPerson = () =>
  sql.raw(`(fleet.therapist_import_files.status = 'skipped' and ((${Object.values(SKIPPED_NEEDING_A_PERSON).join(') or (')})))`);

/** The kind of a skipped file that needs a person, or null (superseded, a copy, changed or removed before its turn). */
export function skippedKindOf(f: Pick<TherapistImportFileRow, 'status' | 'postcode' | 'reason'>): SkippedKind | null {
  if (f.status !== 'skipped') return null;
  if (f.postcode === null) return 'misfit';
  if (f.reason?.startsWith(SKIP_REASON_START.tooLarge)) return 'tooLarge';
  if (f.reason?.startsWith(SKIP_REASON_START.unreadable)) return 'unreadable';
  return null;
}

/** Skipped files that need a person (`SKIPPED_NEEDING_A_PERSON`) and that no later import has replaced since, newest first. */
export async function skippedFilesNeedingAPerson(db: DbOrTx, limit: number): Promise<TherapistImportFileRow[]> {
  return db
    .select()
    .from(therapistImportFiles)
    .where(sql`${needsAPerson()} and ${supersedingFileOf()} is null`)
    .orderBy(desc(therapistImportFiles.id))
    .limit(limit);
}

/**
 * The daily health view's therapist import figures: runs closed since `since` and runs still
 * open, files finished since then per final status, and the therapists those files failed.
 */
export async function importActivity(
  db: DbOrTx,
  since: Date,
): Promise<{
  runsClosed: number;
  runsOpen: number;
  files: { imported: number; partial: number; failed: number; skipped: number };
  therapistsFailed: number;
  /** Of the failed and partial files: those a later import of the same postcode has replaced since. */
  superseded: { failed: number; partial: number };
  /** The therapists failed in the failed and partial files not replaced since (those that still need a look). */
  therapistsFailedOpen: number;
  /** Skipped files that need a person (a misfit name, too large, unreadable), not replaced since. */
  skippedOpen: Record<SkippedKind, number>;
}> {
  const f = therapistImportFiles;
  const r = therapistImportRuns;
  const s = since.toISOString();
  const [runs] = await db
    .select({
      closed: sql<number>`count(*) filter (where ${r.closedAt} >= ${s}::timestamptz)::int`,
      open: sql<number>`count(*) filter (where ${r.state} <> 'closed')::int`,
    })
    .from(r);
  const [files] = await db
    .select({
      imported: sql<number>`count(*) filter (where ${f.status} = 'imported')::int`,
      partial: sql<number>`count(*) filter (where ${f.status} = 'partial')::int`,
      failed: sql<number>`count(*) filter (where ${f.status} = 'failed')::int`,
      skipped: sql<number>`count(*) filter (where ${f.status} = 'skipped')::int`,
      therapistsFailed: sql<number>`coalesce(sum((${f.counts}->>'failed')::int), 0)::int`,
      failedSuperseded: sql<number>`count(*) filter (where ${f.status} = 'failed' and ${supersedingFileOf()} is not null)::int`,
      partialSuperseded: sql<number>`count(*) filter (where ${f.status} = 'partial' and ${supersedingFileOf()} is not null)::int`,
      therapistsFailedOpen: sql<number>`coalesce(sum((${f.counts}->>'failed')::int) filter (where ${f.status} in ('failed', 'partial') and ${supersedingFileOf()} is null), 0)::int`,
      // The subquery only for the few skipped files that need a person (a catch-up skips thousands of superseded weeks).
      ...(Object.fromEntries(
        Object.entries(SKIPPED_NEEDING_A_PERSON).map(([k, cond]) => [
          `skipped_${k}`,
          sql<number>`count(*) filter (where case when ${f.status} = 'skipped' and (${sql.raw(cond)}) then ${supersedingFileOf()} is null else false end)::int`,
        ]),
      ) as Record<`skipped_${SkippedKind}`, SQL<number>>),
    })
    .from(f)
    .where(sql`${f.finishedAt} >= ${s}::timestamptz`);
  return {
    runsClosed: runs?.closed ?? 0,
    runsOpen: runs?.open ?? 0,
    files: { imported: files?.imported ?? 0, partial: files?.partial ?? 0, failed: files?.failed ?? 0, skipped: files?.skipped ?? 0 },
    therapistsFailed: files?.therapistsFailed ?? 0,
    superseded: { failed: files?.failedSuperseded ?? 0, partial: files?.partialSuperseded ?? 0 },
    therapistsFailedOpen: files?.therapistsFailedOpen ?? 0,
    skippedOpen: { misfit: files?.skipped_misfit ?? 0, tooLarge: files?.skipped_tooLarge ?? 0, unreadable: files?.skipped_unreadable ?? 0 },
  };
}
