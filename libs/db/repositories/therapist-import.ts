import { and, asc, desc, eq, inArray, isNotNull, ne, sql } from 'drizzle-orm';
import type { Db, DbOrTx, Tx } from '../client.js';
import {
  therapistImportFiles,
  therapistImportRuns,
  type MetadataDisagreement,
  type StatusMismatch,
  type TherapistFailure,
  type TherapistImportCounts,
  type TherapistImportFileStatus,
} from '../schema/fleet-therapist-import.js';
import { outbox } from '../schema/fleet.js';
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

export async function getRun(db: DbOrTx, runId: number): Promise<TherapistImportRunRow | null> {
  const [row] = await db.select().from(therapistImportRuns).where(eq(therapistImportRuns.id, runId));
  return row ?? null;
}

export async function listRuns(db: DbOrTx, limit = 20): Promise<TherapistImportRunRow[]> {
  return db.select().from(therapistImportRuns).orderBy(desc(therapistImportRuns.id)).limit(limit);
}

export interface ClosedRun {
  run: TherapistImportRunRow;
  files: TherapistImportFileRow[];
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
  finishingFileId?: number,
): Promise<ClosedRun | null> {
  // Lock the run row first; the check is a statement of its own, sent right behind it on the
  // same connection (pipelined): it runs once the lock is held, with a fresh snapshot (READ
  // COMMITTED), so it sees files committed by an import that held the lock before us.
  // `finishingFileId`: the caller's own file, finished in this transaction; the list of files
  // read for the totals is sent only after the lock, so it sees that file's final row.
  const [[run], [pending]] = await Promise.all([
    tx.select({ state: therapistImportRuns.state }).from(therapistImportRuns).where(eq(therapistImportRuns.id, runId)).for('update'),
    tx
      .select({ id: therapistImportFiles.id })
      .from(therapistImportFiles)
      .where(
        and(
          eq(therapistImportFiles.runId, runId),
          inArray(therapistImportFiles.status, ['queued', 'importing']),
          // The file finishing in this very transaction (its row may be written later in the same pipeline).
          finishingFileId === undefined ? undefined : ne(therapistImportFiles.id, finishingFileId),
        ),
      )
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
  return { run: closed!, files };
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

export async function findLiveByHash(db: DbOrTx, contentHash: string): Promise<TherapistImportFileRow | null> {
  const [row] = await db
    .select()
    .from(therapistImportFiles)
    .where(and(eq(therapistImportFiles.contentHash, contentHash), ne(therapistImportFiles.status, 'skipped')));
  return row ?? null;
}

/** Records a file that is not imported (name does not fit, superseded, ...) once. Returns true the first time. */
export async function recordSkippedFile(
  db: DbOrTx,
  f: { path: string; reason: string; contentHash?: string | null; sizeBytes?: number | null; postcode?: string | null; dateFolder?: string | null; urgent?: boolean },
): Promise<boolean> {
  const now = new Date();
  const rows = await db
    .insert(therapistImportFiles)
    .values({
      path: f.path,
      reason: f.reason,
      contentHash: f.contentHash ?? null,
      sizeBytes: f.sizeBytes ?? null,
      postcode: f.postcode ?? null,
      dateFolder: f.dateFolder ?? null,
      urgent: f.urgent ?? false,
      status: 'skipped',
      finishedAt: now,
    })
    .onConflictDoNothing()
    .returning({ id: therapistImportFiles.id });
  return rows.length > 0;
}

/** The newest YYYYMMDD folder registered for imports of a postcode (urgent files aside). */
export async function newestDateFolder(db: DbOrTx, postcode: string): Promise<string | null> {
  const [row] = await db
    .select({ d: sql<string | null>`max(${therapistImportFiles.dateFolder})` })
    .from(therapistImportFiles)
    .where(
      and(
        eq(therapistImportFiles.postcode, postcode),
        isNotNull(therapistImportFiles.dateFolder),
        eq(therapistImportFiles.urgent, false),
        ne(therapistImportFiles.status, 'skipped'),
      ),
    );
  return row?.d ?? null;
}

export async function getFile(db: DbOrTx, id: number): Promise<TherapistImportFileRow | null> {
  const [row] = await db.select().from(therapistImportFiles).where(eq(therapistImportFiles.id, id));
  return row ?? null;
}

/** Files registered but not finished: re-enqueued at watcher start (the job id dedupes). */
export async function unfinishedFiles(db: DbOrTx): Promise<TherapistImportFileRow[]> {
  return db
    .select()
    .from(therapistImportFiles)
    .where(inArray(therapistImportFiles.status, ['queued', 'importing']))
    .orderBy(desc(therapistImportFiles.urgent), asc(therapistImportFiles.id));
}

/** Claims a file for import: returns the row when it was queued or importing (a retry), else null. */
export async function markImporting(db: DbOrTx, id: number, now: Date): Promise<TherapistImportFileRow | null> {
  const [row] = await db
    .update(therapistImportFiles)
    .set({ status: 'importing', startedAt: now, attempts: sql`${therapistImportFiles.attempts} + 1` })
    .where(and(eq(therapistImportFiles.id, id), inArray(therapistImportFiles.status, ['queued', 'importing'])))
    .returning();
  return row ?? null;
}

export interface FileOutcome {
  status: Exclude<TherapistImportFileStatus, 'queued' | 'importing'>;
  reason: string | null;
  counts: TherapistImportCounts | null;
  fileErrors: string[];
  metadataDisagreements: MetadataDisagreement[];
  failures: TherapistFailure[];
  statusMismatches: StatusMismatch[];
  finishedAt: Date;
  durationMs: number;
}

export async function finishFile(db: DbOrTx, id: number, o: FileOutcome): Promise<void> {
  await db.update(therapistImportFiles).set(o).where(eq(therapistImportFiles.id, id));
}

/** Dead-letter requeue: the file goes back to `queued`. */
export async function requeueFile(db: DbOrTx, id: number): Promise<void> {
  await db
    .update(therapistImportFiles)
    .set({ status: 'queued', reason: null })
    .where(and(eq(therapistImportFiles.id, id), inArray(therapistImportFiles.status, ['failed', 'importing', 'queued'])));
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

// ---------------------------------------------------------------- therapists (set-based)

/**
 * Serialises imports that could touch the same therapists, across processes, for the length
 * of the transaction: one advisory lock per postcode (and per external-id scope), taken in
 * sorted order so two imports never wait on each other in a circle. Files of different
 * postcode areas import in parallel.
 */
export async function lockTherapistImport(tx: Tx, keys: string[]): Promise<void> {
  const sorted = [...new Set(keys)].sort();
  if (sorted.length === 0) return;
  await tx.execute(sql`
    select count(pg_advisory_xact_lock(hashtext('curavani-fleet:therapist-import:' || k)))
    from (select k from jsonb_array_elements_text(${JSON.stringify(sorted)}::jsonb) as k order by k) s`);
}

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

const columns = sql.raw(
  'id, status, anrede, geschlecht, titel, vorname, nachname, strasse, plz, ort, telefon, fax, email, telefonische_erreichbarkeit, fremdsprachen, psychotherapieverfahren',
);

/** Therapists a file can match: those in its postcodes and those its external ids point at (locked). */
export async function loadCandidates(tx: Tx, plzs: string[], ids: number[]): Promise<StoredTherapist[]> {
  if (plzs.length === 0 && ids.length === 0) return [];
  const rows = await tx.execute(sql`
    select ${columns} from therapist_service.therapeuten
    where plz = any(array(select jsonb_array_elements_text(${JSON.stringify(plzs)}::jsonb)))
       or id = any(array(select (jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb))::int))
    order by id
    for update`);
  return rows as unknown as StoredTherapist[];
}

export interface ExternalIdRow {
  key: string;
  therapistId: number | null;
  deleted: boolean;
}

export async function loadExternalIds(tx: DbOrTx, scope: string, keys: string[]): Promise<ExternalIdRow[]> {
  if (keys.length === 0) return [];
  const rows = await tx.execute(sql`
    select external_id as key, therapist_id as "therapistId", deleted_at is not null as deleted
    from fleet.therapist_external_ids
    where scope = ${scope} and external_id = any(array(select jsonb_array_elements_text(${JSON.stringify(keys)}::jsonb)))`);
  return rows as unknown as ExternalIdRow[];
}

/**
 * What a file needs for matching, in one statement: the external ids of its scope (and
 * tombstone keys) and the therapists it can match (its postcodes plus those its external
 * ids point at), the therapists locked for the rest of the transaction.
 */
export async function loadMatchData(
  tx: Tx,
  scope: string,
  keys: string[],
  plzs: string[],
): Promise<{ externalIds: ExternalIdRow[]; candidates: StoredTherapist[] }> {
  const rows = (await tx.execute(sql`
    with ext as (
      select external_id as key, therapist_id as "therapistId", deleted_at is not null as deleted
      from fleet.therapist_external_ids
      where scope = ${scope} and external_id = any(array(select jsonb_array_elements_text(${JSON.stringify(keys)}::jsonb)))
    ),
    cand as (
      select ${columns} from therapist_service.therapeuten
      where plz = any(array(select jsonb_array_elements_text(${JSON.stringify(plzs)}::jsonb)))
         or id = any(array(select "therapistId" from ext where "therapistId" is not null))
      for update
    )
    select 'e' as kind, to_jsonb(ext) as row from ext
    union all
    select 'c' as kind, to_jsonb(cand) as row from cand`)) as unknown as Array<{ kind: 'e' | 'c'; row: unknown }>;
  return {
    externalIds: rows.filter((r) => r.kind === 'e').map((r) => r.row as ExternalIdRow),
    candidates: rows.filter((r) => r.kind === 'c').map((r) => r.row as StoredTherapist).sort((a, b) => a.id - b.id),
  };
}

export type NewTherapistRow = Omit<StoredTherapist, 'id' | 'status'>;

/** Inserts new therapists in one statement (ids reserved first, so each row's id is known). */
export async function insertTherapists(tx: Tx, rows: NewTherapistRow[], now: Date): Promise<number[]> {
  if (rows.length === 0) return [];
  // One statement: reserve the ids (a CTE referenced twice is evaluated once), insert the
  // rows with them, and return the ids in the order of the input.
  const result = (await tx.execute(sql`
    with r as (
      select * from jsonb_to_recordset(${JSON.stringify(rows.map((r, i) => ({ ...r, ord: i })))}::jsonb) as r(
        anrede text, geschlecht text, titel text, vorname text, nachname text, strasse text, plz text, ort text,
        telefon text, fax text, email text, telefonische_erreichbarkeit jsonb, fremdsprachen jsonb, psychotherapieverfahren text, ord bigint)
    ),
    ids as materialized (
      select ord, nextval(pg_get_serial_sequence('therapist_service.therapeuten', 'id'))::int as id from r
    ),
    ins as (
      insert into therapist_service.therapeuten
        (id, anrede, geschlecht, titel, vorname, nachname, strasse, plz, ort, telefon, fax, email,
         telefonische_erreichbarkeit, fremdsprachen, psychotherapieverfahren,
         status, kassensitz, potenziell_verfuegbar, created_at, updated_at)
      select ids.id, r.anrede, r.geschlecht, r.titel, r.vorname, r.nachname, r.strasse, r.plz, r.ort, r.telefon, r.fax, r.email,
             r.telefonische_erreichbarkeit, r.fremdsprachen, r.psychotherapieverfahren,
             'aktiv', true, false, ${now.toISOString()}::timestamptz, ${now.toISOString()}::timestamptz
      from r join ids using (ord)
      returning id
    )
    select ids.id from ids where ids.id in (select id from ins) order by ids.ord`)) as unknown as Array<{ id: number }>;
  if (result.length !== rows.length) throw new Error(`inserted ${result.length} of ${rows.length} therapists`);
  return result.map((r) => r.id);
}

/**
 * Writes only the changed fields of many therapists in one statement: a field absent from
 * a row's changes is NULL in the record set and keeps its value (an import never writes an
 * empty value, so NULL can mean "unchanged"). Only the import's own columns are named here:
 * the protected columns cannot be touched.
 */
export async function updateTherapists(tx: Tx, updates: Array<{ id: number } & Partial<NewTherapistRow>>, now: Date): Promise<void> {
  if (updates.length === 0) return;
  await tx.execute(sql`
    update therapist_service.therapeuten t set
      anrede = coalesce(r.anrede, t.anrede),
      geschlecht = coalesce(r.geschlecht, t.geschlecht),
      titel = coalesce(r.titel, t.titel),
      vorname = coalesce(r.vorname, t.vorname),
      nachname = coalesce(r.nachname, t.nachname),
      strasse = coalesce(r.strasse, t.strasse),
      plz = coalesce(r.plz, t.plz),
      ort = coalesce(r.ort, t.ort),
      telefon = coalesce(r.telefon, t.telefon),
      fax = coalesce(r.fax, t.fax),
      email = coalesce(r.email, t.email),
      telefonische_erreichbarkeit = coalesce(r.telefonische_erreichbarkeit, t.telefonische_erreichbarkeit),
      fremdsprachen = coalesce(r.fremdsprachen, t.fremdsprachen),
      psychotherapieverfahren = coalesce(r.psychotherapieverfahren, t.psychotherapieverfahren),
      updated_at = ${now.toISOString()}::timestamptz
    from jsonb_to_recordset(${JSON.stringify(updates)}::jsonb) as r(
      id int, anrede text, geschlecht text, titel text, vorname text, nachname text, strasse text, plz text, ort text,
      telefon text, fax text, email text, telefonische_erreichbarkeit jsonb, fremdsprachen jsonb, psychotherapieverfahren text)
    where t.id = r.id`);
}

/** `deleted` -> status inaktiv (never a hard delete). Returns the ids that really changed. */
export async function deactivateTherapists(tx: Tx, ids: number[], now: Date): Promise<number[]> {
  if (ids.length === 0) return [];
  const rows = (await tx.execute(sql`
    update therapist_service.therapeuten set status = 'inaktiv', updated_at = ${now.toISOString()}::timestamptz
    where id = any(array(select (jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb))::int)) and status <> 'inaktiv'
    returning id`)) as unknown as Array<{ id: number }>;
  return rows.map((r) => r.id);
}

/** Upserts external id -> therapist mappings and tombstones of one scope in one statement. */
export async function upsertExternalIds(
  tx: Tx,
  scope: string,
  fileId: number,
  entries: Array<{ key: string; therapistId: number | null; deleted: boolean }>,
  now: Date,
): Promise<void> {
  if (entries.length === 0) return;
  // One row per key (the last word wins; a tombstone is never lifted).
  const byKey = new Map<string, { key: string; therapistId: number | null; deleted: boolean }>();
  for (const e of entries) {
    const prev = byKey.get(e.key);
    byKey.set(e.key, { key: e.key, therapistId: e.therapistId ?? prev?.therapistId ?? null, deleted: e.deleted || (prev?.deleted ?? false) });
  }
  await tx.execute(sql`
    insert into fleet.therapist_external_ids (scope, external_id, therapist_id, deleted_at, first_file_id, last_file_id, created_at, updated_at)
    select ${scope}, r.key, r."therapistId", case when r.deleted then ${now.toISOString()}::timestamptz end, ${fileId}::bigint, ${fileId}::bigint,
           ${now.toISOString()}::timestamptz, ${now.toISOString()}::timestamptz
    from jsonb_to_recordset(${JSON.stringify([...byKey.values()])}::jsonb) as r(key text, "therapistId" int, deleted boolean)
    on conflict (scope, external_id) do update set
      therapist_id = coalesce(excluded.therapist_id, fleet.therapist_external_ids.therapist_id),
      deleted_at = coalesce(fleet.therapist_external_ids.deleted_at, excluded.deleted_at),
      last_file_id = excluded.last_file_id,
      updated_at = excluded.updated_at`);
}

export interface OutboxInsert {
  eventId: string;
  eventType: string;
  version: number;
  topic: string;
  key: string;
  producer: string;
  payload: Record<string, unknown>;
  occurredAt: Date;
}

/** Many outbox rows in one statement (same columns as the single-row append). */
export async function insertOutboxRows(tx: DbOrTx, rows: OutboxInsert[]): Promise<void> {
  if (rows.length === 0) return;
  await tx.execute(sql`
    insert into ${outbox} (event_id, event_type, version, topic, key, producer, payload, occurred_at)
    select r.event_id, r.event_type, r.version, r.topic, r.key, r.producer, r.payload, r.occurred_at
    from jsonb_to_recordset(${JSON.stringify(
      rows.map((r) => ({ ...r, occurredAt: undefined, event_id: r.eventId, event_type: r.eventType, occurred_at: r.occurredAt.toISOString() })),
    )}::jsonb) as r(event_id uuid, event_type text, version int, topic text, key text, producer text, payload jsonb, occurred_at timestamptz)`);
}

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

/** The newest registered YYYYMMDD folder per postcode (urgent files aside), in one query. */
export async function newestDateFolders(db: DbOrTx, postcodes: string[]): Promise<Map<string, string>> {
  if (postcodes.length === 0) return new Map();
  const rows = await db
    .select({ postcode: therapistImportFiles.postcode, d: sql<string>`max(${therapistImportFiles.dateFolder})` })
    .from(therapistImportFiles)
    .where(
      and(
        inArray(therapistImportFiles.postcode, postcodes),
        isNotNull(therapistImportFiles.dateFolder),
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

/** Records many skipped files in one statement; returns the paths recorded for the first time. */
export async function recordSkippedFiles(
  db: DbOrTx,
  files: Array<{ path: string; reason: string; contentHash?: string | null; sizeBytes?: number | null; postcode?: string | null; dateFolder?: string | null; urgent?: boolean }>,
): Promise<string[]> {
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
        finishedAt: now,
      })),
    )
    .onConflictDoNothing()
    .returning({ path: therapistImportFiles.path });
  return rows.map((r) => r.path);
}
