import { and, asc, desc, eq, getTableColumns, gt, inArray, isNotNull, isNull, lt, sql } from 'drizzle-orm';
import { getTableConfig } from 'drizzle-orm/pg-core';
import type postgres from 'postgres';
import type { Db, DbOrTx } from '../client.js';
import { isConnectionLost } from '../connection-lost.js';
import { deliveries, outbox } from '../schema/fleet.js';
import {
  patientConsents,
  patientImportFinalStatuses,
  patientImportLedger,
  patientImportOpenStatuses,
  type PatientImportStatus,
  nameTokenSql,
} from '../schema/fleet-patient-import.js';
import { asciiEmailKeySql, asciiOnlySql, beyondAsciiSql, fullEmailKeySql } from '../schema/email-key.js';
import { patienten } from '../schema/platform.js';

export type LedgerRow = typeof patientImportLedger.$inferSelect;
export type LedgerPatch = Partial<Omit<typeof patientImportLedger.$inferInsert, 'id'>>;

export interface NewLedgerObject {
  source?: 'bucket' | 'file';
  bucket: string;
  objectName: string;
  generation: string;
  sourceUri: string;
  size?: number | null;
  md5Hash?: string | null;
  crc32c?: string | null;
}

/**
 * Records objects in the ledger; an object generation already recorded is skipped.
 * Returns the ids of the rows this call created (several pollers at once: each row is
 * created by exactly one of them).
 *
 * The ones recorded already are left out before the insert: an insert that meets its conflict
 * takes an id from the sequence all the same, and every poll lists every file kept in the bucket
 * (failed ones wait there for weeks), so the import numbers staff see had gaps of hundreds a day
 * (a drill: 1,900 rows, ids up to 6,366). Two pollers at once may still both try a new one;
 * the conflict clause keeps it one row.
 */
export async function insertLedgerObjects(db: DbOrTx, objects: NewLedgerObject[]): Promise<number[]> {
  return (await recordLedgerObjects(db, objects)).ids;
}

/**
 * insertLedgerObjects, also saying what the objects recorded before are: `known`, the status of
 * each one's row (the poll accounts for every object it lists: a failed or discarded file stays in
 * the bucket and is listed at every poll).
 */
export async function recordLedgerObjects(db: DbOrTx, objects: NewLedgerObject[]): Promise<{ ids: number[]; known: PatientImportStatus[] }> {
  const key = (bucket: string, objectName: string, generation: string) => JSON.stringify([bucket, objectName, generation]);
  const recorded = new Map<string, PatientImportStatus>();
  for (const bucket of new Set(objects.map((o) => o.bucket))) {
    const names = objects.filter((o) => o.bucket === bucket).map((o) => o.objectName);
    const rows = await db
      .select({ objectName: patientImportLedger.objectName, generation: patientImportLedger.generation, status: patientImportLedger.status })
      .from(patientImportLedger)
      .where(and(eq(patientImportLedger.bucket, bucket), inArray(patientImportLedger.objectName, names)));
    for (const r of rows) recorded.set(key(bucket, r.objectName, r.generation), r.status);
  }
  const known = objects.flatMap((o) => recorded.get(key(o.bucket, o.objectName, o.generation)) ?? []);
  const fresh = objects.filter((o) => !recorded.has(key(o.bucket, o.objectName, o.generation)));
  if (!fresh.length) return { ids: [], known };
  const rows = await db
    .insert(patientImportLedger)
    .values(fresh.map((o) => ({ ...o, source: o.source ?? 'bucket' })))
    .onConflictDoNothing({ target: [patientImportLedger.bucket, patientImportLedger.objectName, patientImportLedger.generation] })
    .returning({ id: patientImportLedger.id });
  return { ids: rows.map((r) => r.id).sort((a, b) => a - b), known };
}

export async function findLedgerByObject(db: DbOrTx, bucket: string, objectName: string, generation: string) {
  const [row] = await db
    .select()
    .from(patientImportLedger)
    .where(
      and(
        eq(patientImportLedger.bucket, bucket),
        eq(patientImportLedger.objectName, objectName),
        eq(patientImportLedger.generation, generation),
      ),
    );
  return row ?? null;
}

export async function getLedgerRow(db: DbOrTx, id: number): Promise<LedgerRow | null> {
  const [row] = await db.select().from(patientImportLedger).where(eq(patientImportLedger.id, id));
  return row ?? null;
}

export async function updateLedgerRow(db: DbOrTx, id: number, patch: LedgerPatch): Promise<LedgerRow> {
  const [row] = await db
    .update(patientImportLedger)
    .set({ ...patch, updatedAt: new Date() })
    .where(eq(patientImportLedger.id, id))
    .returning();
  if (!row) throw new Error(`ledger row ${id} does not exist`);
  return row;
}

/** The row as committed now, locked until the transaction ends (`FOR UPDATE`). */
export async function lockLedgerRow(tx: DbOrTx, id: number): Promise<LedgerRow> {
  const [row] = await tx.select().from(patientImportLedger).where(eq(patientImportLedger.id, id)).for('update');
  if (!row) throw new Error(`ledger row ${id} does not exist`);
  return row;
}

/** Counts one more job run on the row. */
export async function startLedgerAttempt(db: DbOrTx, id: number, at: Date): Promise<LedgerRow | null> {
  const [row] = await db
    .update(patientImportLedger)
    .set({ attempts: sql`${patientImportLedger.attempts} + 1`, lastAttemptAt: at, updatedAt: at })
    .where(eq(patientImportLedger.id, id))
    .returning();
  return row ?? null;
}

/** Rows a job still has work to do for, oldest first (crash recovery). */
export async function openLedgerIds(db: DbOrTx, opts: { source?: 'bucket' | 'file'; limit?: number; updatedBefore?: Date } = {}) {
  const rows = await db
    .select({ id: patientImportLedger.id })
    .from(patientImportLedger)
    .where(
      and(
        inArray(patientImportLedger.status, [...patientImportOpenStatuses]),
        opts.source ? eq(patientImportLedger.source, opts.source) : undefined,
        opts.updatedBefore ? lt(patientImportLedger.updatedAt, opts.updatedBefore) : undefined,
      ),
    )
    .orderBy(asc(patientImportLedger.id))
    .limit(opts.limit ?? 10_000);
  return rows.map((r) => r.id);
}

export async function listLedger(db: DbOrTx, opts: { status?: PatientImportStatus[]; limit?: number } = {}) {
  return db
    .select()
    .from(patientImportLedger)
    .where(opts.status?.length ? inArray(patientImportLedger.status, opts.status) : undefined)
    .orderBy(desc(patientImportLedger.id))
    .limit(opts.limit ?? 50);
}

/** Failed rows from the bucket (of `ids` only, when given), oldest first: what a dead letter of theirs carries. */
export async function failedBucketRows(db: DbOrTx, ids?: number[]) {
  if (ids && ids.length === 0) return [];
  return db
    .select({
      id: patientImportLedger.id,
      reasonWithheld: patientImportLedger.reasonWithheld,
      errorCode: patientImportLedger.errorCode,
      attempts: patientImportLedger.attempts,
      failedAt: patientImportLedger.failedAt,
      updatedAt: patientImportLedger.updatedAt,
    })
    .from(patientImportLedger)
    .where(and(eq(patientImportLedger.status, 'failed'), eq(patientImportLedger.source, 'bucket'), ids ? inArray(patientImportLedger.id, ids) : undefined))
    .orderBy(patientImportLedger.id);
}

/**
 * Bucket rows among `ids` whose import is committed (`imported`, `duplicate`): only the delete of
 * their object is left. A dead letter of one is a job that died or ran out of retries after the
 * commit, not a registration that is missing.
 */
export async function committedBucketRows(db: DbOrTx, ids: number[]) {
  if (ids.length === 0) return [];
  return db
    .select({
      id: patientImportLedger.id,
      status: patientImportLedger.status,
      patientId: patientImportLedger.patientId,
      duplicateOfPatientId: patientImportLedger.duplicateOfPatientId,
    })
    .from(patientImportLedger)
    .where(and(inArray(patientImportLedger.status, ['imported', 'duplicate']), eq(patientImportLedger.source, 'bucket'), inArray(patientImportLedger.id, ids)))
    .orderBy(patientImportLedger.id);
}

export async function countLedgerByStatus(db: DbOrTx) {
  return db
    .select({ status: patientImportLedger.status, n: sql<number>`count(*)::int` })
    .from(patientImportLedger)
    .groupBy(patientImportLedger.status);
}

/**
 * Operator requeue: a failed row goes back to `backed_up` when the fleet kept a durable copy of
 * its generation, else to `received` (the job starts over). A row backed up before imports its
 * copy when the bucket no longer has the generation (the fleet deleted it after a corrected
 * upload of the same name, or someone else did): the retry judges the bytes the fleet received,
 * not the bucket's state since.
 */
export async function reopenFailedLedgerRow(db: DbOrTx, id: number): Promise<boolean> {
  const rows = await db
    .update(patientImportLedger)
    .set({ status: sql`case when ${patientImportLedger.backupPath} is not null then 'backed_up' else 'received' end`, updatedAt: new Date() })
    .where(and(eq(patientImportLedger.id, id), eq(patientImportLedger.status, 'failed')))
    .returning({ id: patientImportLedger.id });
  return rows.length > 0;
}

/**
 * Operator discard: the row is closed for good (the object stays in the bucket). `failedOnly`:
 * only a failed row (a hand-imported file discarded while someone imports it again stays open).
 * A committed row (imported or duplicate: only its bucket delete was left, and that is what ran
 * out of retries) is not a discarded registration: it ends `done`, its delete outcome
 * `discarded`, and keeps its patient.
 */
export async function discardLedgerRow(db: DbOrTx, id: number, at = new Date(), opts: { failedOnly?: boolean } = {}): Promise<boolean> {
  const committed = sql`${patientImportLedger.status} in ('imported', 'duplicate')`;
  const rows = await db
    .update(patientImportLedger)
    .set({
      status: sql`case when ${committed} then 'done' else 'discarded' end`,
      deleteOutcome: sql`case when ${committed} then 'discarded' else ${patientImportLedger.deleteOutcome} end`,
      discardedAt: sql`case when ${committed} then null else ${at.toISOString()}::timestamptz end`,
      finishedAt: at,
      updatedAt: at,
    })
    .where(and(eq(patientImportLedger.id, id), inArray(patientImportLedger.status, opts.failedOnly ? ['failed'] : ['failed', ...patientImportOpenStatuses])))
    .returning({ id: patientImportLedger.id });
  return rows.length > 0;
}

/** The two local copies a row can have: the durable copy (BACKUP_DIR) and the failed-folder copy (FAILED_DIR). */
export type LocalCopy = 'backup' | 'failed';

/** Every path of `copy` a ledger row records (removed or not): what a file in the folder must be to be known. */
export async function recordedCopyPaths(db: DbOrTx, copy: LocalCopy): Promise<Set<string>> {
  const column = copy === 'backup' ? patientImportLedger.backupPath : patientImportLedger.failedPath;
  const rows = await db.select({ p: column }).from(patientImportLedger).where(isNotNull(column));
  return new Set(rows.map((r) => r.p!));
}

const copyColumns = {
  backup: { path: patientImportLedger.backupPath, removedAt: patientImportLedger.backupRemovedAt, removedAtKey: 'backupRemovedAt' },
  failed: { path: patientImportLedger.failedPath, removedAt: patientImportLedger.failedRemovedAt, removedAtKey: 'failedRemovedAt' },
} as const;

/**
 * When a final row became final. `finished_at`, else (a row finished before the column existed, or
 * by a process of an older release during a rolling deploy) its discard, its delete, its last update.
 */
const finishedAtSql = sql`coalesce(${patientImportLedger.finishedAt}, ${patientImportLedger.discardedAt}, ${patientImportLedger.deletedAt}, ${patientImportLedger.updatedAt})`;

/** Final rows (never an open or a failed one) that still hold `copy` and finished before `finishedBefore`. */
function expiredCopy(copy: LocalCopy, finishedBefore: Date, afterId = 0) {
  const c = copyColumns[copy];
  return and(
    inArray(patientImportLedger.status, [...patientImportFinalStatuses]),
    isNotNull(c.path),
    isNull(c.removedAt),
    sql`${finishedAtSql} < ${finishedBefore.toISOString()}::timestamptz`,
    gt(patientImportLedger.id, afterId),
  );
}

/** The copies of `copy` the retention sweep would take now, by id after `afterId` (`fleet retention run --dry-run`; nothing locked). */
export async function listExpiredCopies(db: DbOrTx, copy: LocalCopy, q: { finishedBefore: Date; afterId: number; limit: number }): Promise<Array<{ id: number; path: string }>> {
  const c = copyColumns[copy];
  const rows = await db
    .select({ id: patientImportLedger.id, path: c.path })
    .from(patientImportLedger)
    .where(expiredCopy(copy, q.finishedBefore, q.afterId))
    .orderBy(asc(patientImportLedger.id))
    .limit(q.limit);
  return rows.map((r) => ({ id: r.id, path: r.path! }));
}

/**
 * One batch of the retention sweep: up to `limit` final rows with a `copy` past retention, by id
 * after `afterId`, locked for this transaction (`FOR UPDATE SKIP LOCKED`: rows another sweep holds
 * are its own, so two sweeps at once never handle a row twice). `remove` deletes their files and
 * returns the ids whose copy is gone; those are recorded as removed at `at` in the same transaction
 * (and the row's finish time is pinned, so it no longer moves with `updated_at`). A crash before
 * the commit leaves the rows as they were: the next sweep finds the files gone and records them.
 */
export async function sweepExpiredCopies(
  db: Db,
  copy: LocalCopy,
  q: { finishedBefore: Date; afterId: number; limit: number; at: Date },
  remove: (rows: Array<{ id: number; path: string }>) => Promise<number[]>,
): Promise<{ rows: number; lastId: number | null; recorded: number }> {
  const c = copyColumns[copy];
  return db.transaction(async (tx) => {
    const rows = await tx
      .select({ id: patientImportLedger.id, path: c.path })
      .from(patientImportLedger)
      .where(expiredCopy(copy, q.finishedBefore, q.afterId))
      .orderBy(asc(patientImportLedger.id))
      .limit(q.limit)
      .for('update', { skipLocked: true });
    if (!rows.length) return { rows: 0, lastId: null, recorded: 0 };
    const gone = await remove(rows.map((r) => ({ id: r.id, path: r.path! })));
    let recorded = 0;
    if (gone.length) {
      const done = await tx
        .update(patientImportLedger)
        .set({ [c.removedAtKey]: q.at, finishedAt: finishedAtSql, updatedAt: q.at })
        .where(and(inArray(patientImportLedger.id, gone), isNull(c.removedAt)))
        .returning({ id: patientImportLedger.id });
      recorded = done.length;
    }
    return { rows: rows.length, lastId: rows[rows.length - 1]!.id, recorded };
  });
}

/**
 * Transaction-scoped advisory locks (released at commit or rollback), taken in a fixed
 * order so two imports never deadlock. Serialises imports of the same token, payment
 * reference or email.
 */
export async function lockImportKeys(tx: DbOrTx, keys: string[]): Promise<void> {
  const sorted = [...new Set(keys)].sort();
  if (!sorted.length) return;
  // One round trip; the locks are taken one by one in the order of the array.
  const list = sql.join(sorted.map((k) => sql`${k}`), sql`, `);
  await tx.execute(
    sql`select pg_advisory_xact_lock(hashtextextended(t.k, 0)) from unnest(array[${list}]::text[]) with ordinality as t(k, n) order by t.n`,
  );
}

export async function findConsentByToken(db: DbOrTx, token: string) {
  const [row] = await db
    .select({ id: patientConsents.id, patientId: patientConsents.patientId, ledgerId: patientConsents.ledgerId })
    .from(patientConsents)
    .where(eq(patientConsents.registrationToken, token));
  return row ?? null;
}

export async function findPatientByZahlungsreferenz(db: DbOrTx, ref: string) {
  const [row] = await db.select({ id: patienten.id }).from(patienten).where(eq(patienten.zahlungsreferenz, ref));
  return row ?? null;
}

/**
 * Whether `column` is the address `param` (normalised by the import: trimmed, NFC, lower case)
 * by the import's rules, in the form the two indexes on `patienten` serve (email-key.ts): an
 * address of ASCII only by its ASCII key, any other by its full key. The full key alone (a
 * ~600-letter `translate`) read every patient at ~20 µs each.
 */
export const sameEmailSql = (column: string, param: string) =>
  `((${asciiOnlySql(column)} and ${asciiEmailKeySql(column)} = ${param}) or (${beyondAsciiSql(column)} and ${fullEmailKeySql(column)} = ${param}))`;

export type NewPatientRow = typeof patienten.$inferInsert;

export async function insertPatient(tx: DbOrTx, values: NewPatientRow, at: Date): Promise<number> {
  const [row] = await tx
    .insert(patienten)
    .values({ ...values, createdAt: at, updatedAt: at })
    .returning({ id: patienten.id });
  return row!.id;
}

export type NewConsentRow = typeof patientConsents.$inferInsert;

export async function insertConsent(tx: DbOrTx, values: NewConsentRow): Promise<number> {
  const [row] = await tx.insert(patientConsents).values(values).returning({ id: patientConsents.id });
  return row!.id;
}

export async function getConsentsOfPatient(db: DbOrTx, patientId: number) {
  return db.select().from(patientConsents).where(eq(patientConsents.patientId, patientId)).orderBy(asc(patientConsents.id));
}

// ---------------------------------------------------------------------------------------
// The import's hot path. Plain SQL on the postgres.js client under drizzle (no query
// builder per file), few statements and few round trips per file: each write below is one
// statement, and the import transaction is two round trips (begin + lock + lookups
// pipelined, then one statement that writes everything + commit pipelined). Same tables,
// columns and defaults as the builder functions above.
// ---------------------------------------------------------------------------------------

type PgClient = postgres.Sql;
type Reserved = postgres.ReservedSql;

/** The postgres.js client drizzle runs on (`drizzle(client)` keeps it as `$client`). */
function clientOf(db: Db): PgClient {
  const c = (db as unknown as { $client?: PgClient }).$client;
  if (!c) throw new Error('the drizzle database has no postgres.js client');
  return c;
}

function qualified(table: Parameters<typeof getTableConfig>[0]): string {
  const t = getTableConfig(table);
  return t.schema ? `"${t.schema}"."${t.name}"` : `"${t.name}"`;
}

const LEDGER = qualified(patientImportLedger);
const CONSENTS = qualified(patientConsents);
const PATIENTS = qualified(patienten);
const OUTBOX = qualified(outbox);
const DELIVERIES = qualified(deliveries);

/** What a job needs to know about its ledger row. */
export interface ImportLedgerHead {
  id: number;
  source: 'bucket' | 'file';
  bucket: string;
  objectName: string;
  generation: string;
  sourceUri: string;
  md5Hash: string | null;
  /** The object's size as listed (bytes); null when not known. */
  size: number | null;
  status: PatientImportStatus;
  attempts: number;
  patientId: number | null;
  duplicateOfPatientId: number | null;
  backupPath: string | null;
  failedPath: string | null;
  receivedAt: Date;
  /** When a run last sent the bucket delete (null: never). */
  deleteRequestedAt: Date | null;
}

const HEAD_COLUMNS =
  'id, source, bucket, object_name, generation, source_uri, md5_hash, size, status, attempts, patient_id, duplicate_of_patient_id, backup_path, failed_path, received_at, delete_requested_at';

function toHead(r: Record<string, unknown>): ImportLedgerHead {
  return {
    id: Number(r.id),
    source: r.source as 'bucket' | 'file',
    bucket: r.bucket as string,
    objectName: r.object_name as string,
    generation: r.generation as string,
    sourceUri: r.source_uri as string,
    md5Hash: (r.md5_hash as string | null) ?? null,
    size: r.size === null || r.size === undefined ? null : Number(r.size),
    status: r.status as PatientImportStatus,
    attempts: Number(r.attempts),
    patientId: r.patient_id === null ? null : Number(r.patient_id),
    duplicateOfPatientId: r.duplicate_of_patient_id === null ? null : Number(r.duplicate_of_patient_id),
    backupPath: (r.backup_path as string | null) ?? null,
    failedPath: (r.failed_path as string | null) ?? null,
    receivedAt: r.received_at as Date,
    deleteRequestedAt: (r.delete_requested_at as Date | null) ?? null,
  };
}

// A row already final is only read: a job on it does nothing, so it is no attempt.
const START_ATTEMPT = `update ${LEDGER} set attempts = attempts + 1, last_attempt_at = $2::timestamptz, updated_at = $2::timestamptz where id = $1 and status not in (${patientImportFinalStatuses.map((s) => `'${s}'`).join(', ')}) returning ${HEAD_COLUMNS}`;

/** What a job needs of the row, without counting a run (null: no such row). */
export async function readImportHead(db: Db, id: number): Promise<ImportLedgerHead | null> {
  const [r] = await clientOf(db).unsafe(`select ${HEAD_COLUMNS} from ${LEDGER} where id = $1`, [id], { prepare: true });
  return r ? toHead(r) : null;
}

/** Counts one more job run on the row and returns what the job needs (one statement; a final row is only read). */
export async function startImportAttempt(db: Db, id: number, at: Date): Promise<ImportLedgerHead | null> {
  const [r] = await clientOf(db).unsafe(START_ATTEMPT, [id, at.toISOString()], { prepare: true });
  return r ? toHead(r) : readImportHead(db, id);
}

// Only a row still waiting for its import: a second run of the row (a job whose lock was lost,
// two hand imports of one file) that started before another run committed or ended it must not
// set it back (it then sees the row as that run left it).
// A failed row (a run still going when another recorded its failure) keeps its status but
// records the copy: the retention sweep removes only copies a row points to.
const MARK_BACKED_UP = `update ${LEDGER} set status = case when status = 'failed' then status else 'backed_up' end, downloaded_at = $2::timestamptz, backed_up_at = $2::timestamptz, backup_path = $3, sha256 = $4, size = $5, updated_at = $6::timestamptz where id = $1 and status in ('received', 'downloaded', 'backed_up', 'failed')`;

/** Records the durable copy of a row still waiting for its import (a row another run has moved on is left as it is). */
export async function markImportBackedUp(db: Db, id: number, at: Date, info: { backupPath: string; sha256: string; size: number }): Promise<void> {
  const r = await clientOf(db).unsafe(MARK_BACKED_UP, [id, at.toISOString(), info.backupPath, info.sha256, info.size, new Date().toISOString()], { prepare: true });
  if (!r.count && !(await readImportHead(db, id))) throw new Error(`ledger row ${id} does not exist`);
}

const MARK_DELETE_REQUESTED = `update ${LEDGER} set delete_requested_at = $2::timestamptz, updated_at = $2::timestamptz where id = $1 and status in ('imported', 'duplicate')`;

/** Records that a run is about to send the bucket delete of a committed row (see `delete_requested_at`). */
export async function markImportDeleteRequested(db: Db, id: number, at: Date): Promise<void> {
  await clientOf(db).unsafe(MARK_DELETE_REQUESTED, [id, at.toISOString()], { prepare: true });
}

// Only a committed row: one another run of the row has finished already keeps that run's record.
const MARK_FINISHED = `update ${LEDGER} set status = $2, delete_outcome = $3, deleted_at = coalesce($4::timestamptz, deleted_at), finished_at = $6::timestamptz, updated_at = $5::timestamptz where id = $1 and status in ('imported', 'duplicate')`;

/**
 * The end of a committed row: deleted / superseded / done (deleted_at when the object is gone),
 * final since `at`. Returns null when it was recorded, else the status the row has (another run
 * of the row finished it first).
 */
export async function markImportFinished(db: Db, id: number, status: PatientImportStatus, deleteOutcome: string, deletedAt: Date | null, at: Date): Promise<PatientImportStatus | null> {
  const r = await clientOf(db).unsafe(MARK_FINISHED, [id, status, deleteOutcome, deletedAt?.toISOString() ?? null, new Date().toISOString(), at.toISOString()], { prepare: true });
  if (r.count) return null;
  const head = await readImportHead(db, id);
  if (!head) throw new Error(`ledger row ${id} does not exist`);
  return head.status;
}

/** A generation replaced in the bucket before it was downloaded: final, never imported (`reason` says by which generation). */
export async function markImportReplaced(db: Db, id: number, reason: string, at: Date): Promise<void> {
  const r = await clientOf(db).unsafe(`update ${LEDGER} set status = 'replaced', reason = $2, finished_at = $3::timestamptz, updated_at = $3::timestamptz where id = $1 and status in ('received', 'downloaded', 'backed_up')`, [id, reason, at.toISOString()]);
  if (!r.count) throw new Error(`ledger row ${id} is not waiting for its import`);
}

/** A ledger row's newer generation (see newerGenerations). */
export interface NewerGeneration {
  id: number;
  generation: string;
  status: PatientImportStatus;
  patientId: number | null;
  duplicateOfPatientId: number | null;
}

/** What a failed row's corrected re-upload under the same name can have become: the import went through. */
const IMPORTED_STATUSES: readonly PatientImportStatus[] = ['imported', 'duplicate', 'deleted', 'superseded', 'done'];

/**
 * For each of the bucket rows `ids`: the ledger row of the newest generation of the same bucket
 * object recorded after its own (in one of `statuses` when given); rows without one are absent.
 * Generations of a name only grow (GCS; the local driver alike). The casts inside a CASE:
 * PostgreSQL does not promise to test the pattern first in an AND.
 */
export async function newerGenerations(db: Db, ids: number[], statuses?: readonly PatientImportStatus[]): Promise<Map<number, NewerGeneration>> {
  const out = new Map<number, NewerGeneration>();
  if (!ids.length) return out;
  const numeric = (t: string) => `(case when ${t}.generation ~ '^[0-9]+$' then ${t}.generation::numeric end)`;
  const rows = await clientOf(db).unsafe(
    `select r.id as of_id, n.id, n.generation, n.status, n.patient_id, n.duplicate_of_patient_id
       from ${LEDGER} r
       cross join lateral (
         select n.id, n.generation, n.status, n.patient_id, n.duplicate_of_patient_id from ${LEDGER} n
          where n.source = 'bucket' and n.bucket = r.bucket and n.object_name = r.object_name and n.id <> r.id
            ${statuses ? 'and n.status = any($2::text[])' : ''} and ${numeric('n')} > ${numeric('r')}
          order by ${numeric('n')} desc limit 1) n
      where r.id = any($1::int8[]) and r.source = 'bucket'`,
    [ids, ...(statuses ? [statuses as string[]] : [])],
  );
  for (const r of rows) out.set(Number(r.of_id), newerGenerationOf(r));
  return out;
}

/** A row of the newer-record queries (newerGenerations, newerImports) as a NewerGeneration. */
function newerGenerationOf(r: Record<string, unknown>): NewerGeneration {
  return {
    id: Number(r.id),
    generation: r.generation as string,
    status: r.status as PatientImportStatus,
    patientId: r.patient_id === null ? null : Number(r.patient_id),
    duplicateOfPatientId: r.duplicate_of_patient_id === null ? null : Number(r.duplicate_of_patient_id),
  };
}

/**
 * The newest generation of the same bucket object the ledger recorded after the row's (null:
 * none): a recorded newer one means the row's generation was replaced by an upload, even when
 * that upload is gone from the bucket too because the fleet imported and deleted it first.
 */
export async function newerLedgerGeneration(db: Db, row: { id: number }): Promise<string | null> {
  return (await newerGenerations(db, [row.id])).get(row.id)?.generation ?? null;
}

/** What became of a failed row's registration (see newerImports). */
export interface LaterImport extends NewerGeneration {
  source: 'bucket' | 'file';
  /** `same-name`: a newer generation of the same object; `same-token`: another file of the same registration token (a hand import, an upload under another name). */
  link: 'same-name' | 'same-token';
  /**
   * `same-token` only: false when the failed file's own registration token is not known (it failed
   * before its content was read: not JSON, too large, a wrong signature, ...; or it failed before
   * the ledger recorded tokens), so only the token in the two file names matched.
   */
  tokenCompared?: boolean;
}

/**
 * The registration token part of a file name, for rows of both sources (a hand import's
 * `object_name` is the file's base name). It is only the start of the token (8 characters on
 * the site's files), so two registrations can share it: the full tokens decide where known.
 * Indexed.
 */
const NAME_TOKEN = (t: string) => nameTokenSql(`${t}.object_name`);

/**
 * The registration token of ledger row `t`'s content: recorded on the row, or (rows imported
 * before the column existed) its consent's. Null: not known.
 */
const CONTENT_TOKEN = (t: string) =>
  `coalesce(${t}.registration_token, (select c.registration_token from ${CONSENTS} c where c.patient_id = coalesce(${t}.patient_id, ${t}.duplicate_of_patient_id) and c.ledger_id = ${t}.id limit 1))`;

/**
 * Whether failed row `f` and row `n` are records of the same registration: the failed row's full
 * registration token known and equal to `n`'s; or, only where the failed row's own token is not
 * known (it failed before its content was read), the token in their file names (`f.name_token`,
 * `n` matched through the index). A failed row whose token is known is never linked by names: the
 * first 8 characters are shared by other registrations (its payment reference is taken,
 * `zahlungsreferenz_taken`), and `n`'s token may be unknown only because `n` is an older record
 * (a duplicate from before the column existed). Nor is an older `zahlungsreferenz_taken` row
 * without a token: that failure itself says the two are different registrations.
 */
const SAME_REGISTRATION = (f: string, n: string) => `(
  (${f}.full_token is not null and ${CONTENT_TOKEN(n)} = ${f}.full_token)
  or (${NAME_TOKEN(n)} = ${f}.name_token
      and ${f}.full_token is null
      and ${f}.error_code is distinct from 'zahlungsreferenz_taken'))`;

/** The failed rows' own tokens, for SAME_REGISTRATION. */
const FAILED_TOKENS = (l: string) => `${l}.id, ${NAME_TOKEN(l)} as name_token, ${l}.registration_token as full_token, ${l}.error_code`;

/**
 * For failed bucket rows: the registration imported since, i.e. what a corrected re-upload became.
 * First the newest later upload of the same object that was imported or found a duplicate; else
 * the newest other record, from the bucket or imported by hand (`fleet import patient-file`), that
 * was imported or found a duplicate and whose file name carries the same registration token. The
 * failed row itself stays failed until an operator closes it. The token match reads the ledger
 * through its index on the name's token.
 */
export async function newerImports(db: Db, ids: number[]): Promise<Map<number, LaterImport>> {
  const out = new Map<number, LaterImport>();
  for (const [id, n] of await newerGenerations(db, ids, IMPORTED_STATUSES)) out.set(id, { ...n, source: 'bucket', link: 'same-name' });
  const rest = ids.filter((id) => !out.has(id));
  if (!rest.length) return out;
  // The candidates come through the two indexes (the name's token, the full token), then SAME_REGISTRATION decides.
  const rows = await clientOf(db).unsafe(
    `with r as (select ${FAILED_TOKENS('l')} from ${LEDGER} l where l.id = any($1::int8[]) and l.source = 'bucket'),
     c as (select r.id as of_id, n.id from r join ${LEDGER} n on ${NAME_TOKEN('n')} = r.name_token where r.name_token is not null
           union select r.id, n.id from r join ${LEDGER} n on n.registration_token = r.full_token where r.full_token is not null)
     select distinct on (r.id) r.id as of_id, n.id, n.source, n.generation, n.status, n.patient_id, n.duplicate_of_patient_id,
            (r.full_token is not null and ${CONTENT_TOKEN('n')} = r.full_token) as token_compared
       from r join c on c.of_id = r.id join ${LEDGER} n on n.id = c.id
      where n.id <> r.id and n.status = any($2::text[]) and ${SAME_REGISTRATION('r', 'n')}
      order by r.id, n.id desc`,
    [rest, IMPORTED_STATUSES as string[]],
  );
  for (const r of rows) {
    out.set(Number(r.of_id), { ...newerGenerationOf(r), source: r.source as 'bucket' | 'file', link: 'same-token', tokenCompared: r.token_compared === true });
  }
  return out;
}

/**
 * The failed bucket rows of the same registration as row `id` (the rule of newerImports, from the
 * other side), oldest first: what a hand import of a corrected file leaves to close.
 * `tokenCompared`: false when only the token in the file names matched (see LaterImport).
 */
export async function failedOfSameRegistration(db: Db, id: number): Promise<Array<{ id: number; tokenCompared: boolean }>> {
  const rows = await clientOf(db).unsafe(
    `with n as (select * from ${LEDGER} where id = $1),
     f as (select ${FAILED_TOKENS('l')} from n join ${LEDGER} l on ${NAME_TOKEN('l')} = ${NAME_TOKEN('n')}
           where l.source = 'bucket' and l.status = 'failed'
           union select ${FAILED_TOKENS('l')} from n join ${LEDGER} l on l.registration_token = ${CONTENT_TOKEN('n')}
           where l.source = 'bucket' and l.status = 'failed')
     select f.id, (f.full_token is not null and ${CONTENT_TOKEN('n')} = f.full_token) as token_compared
       from f, n where f.id <> n.id and ${SAME_REGISTRATION('f', 'n')} order by f.id`,
    [id],
  );
  return rows.map((r) => ({ id: Number(r.id), tokenCompared: r.token_compared === true }));
}

/** What the import transaction finds, under the advisory locks of its keys. */
export interface ImportLookup {
  /** The ledger row now (null: no such row). */
  ledger: {
    status: PatientImportStatus;
    duplicateKind: string | null;
    patientId: number | null;
    duplicateOfPatientId: number | null;
    possibleDuplicateOfPatientId: number | null;
  } | null;
  /** The patient of an earlier consent with the same registration token. */
  sameTokenPatientId: number | null;
  /**
   * The field digests the import that wrote that consent recorded (its ledger row's field_digests),
   * to compare a re-upload's content with what that import read; null: none recorded (imported
   * before they were), or no such consent.
   */
  sameTokenDigests: Record<string, string> | null;
  /** That patient's row now (columns by name), read only when no digests were recorded, to compare with (null: digests recorded, or no such patient). */
  sameTokenPatient: Record<string, unknown> | null;
  /** Patients with the same normalised email (trimmed as JavaScript trims, NFC, lower case), by id. */
  sameEmail: Array<{ id: number; vorname: string; nachname: string }>;
  /** The patient that already has the payment reference. */
  zahlungsreferenzTakenBy: number | null;
  /**
   * An id reserved from the patients' sequence for a new patient (when the row is still
   * open, no consent has the token and the reference is free), so everything the
   * transaction writes (event, staff email) can name the patient before it exists.
   */
  reservedPatientId: number | null;
}

export type NewOutboxRow = typeof outbox.$inferInsert;
export type NewDeliveryRow = typeof deliveries.$inferInsert;

/** What the import transaction writes (null parts are not written). */
export interface ImportWrites {
  patient: (NewPatientRow & { id: number }) | null;
  consent: NewConsentRow | null;
  event: NewOutboxRow | null;
  /** Recorded once per idempotency key: an existing delivery is kept and named. */
  delivery: NewDeliveryRow | null;
  ledger: {
    status: 'imported' | 'duplicate';
    importedAt: Date;
    patientId: number | null;
    duplicateOfPatientId: number | null;
    duplicateKind: string | null;
    possibleDuplicateOfPatientId: number | null;
    unknownFields: string[];
    validation: string;
    /** The registration token of the file's content (see the ledger's column). */
    registrationToken: string;
    /** A same_token duplicate: the patient_data fields that differ (names only); else null. */
    differingFields: string[] | null;
    /** With differingFields: compared with the import's digests (`import`) or with the patient row now (`patient`). */
    differingComparedWith: 'import' | 'patient' | null;
    /** The import that writes the consent of its token: the field digests of what it read (never values); else null. */
    fieldDigests: Record<string, string> | null;
  };
}

const LOCK_KEYS = 'select pg_advisory_xact_lock(hashtextextended(t.k, 0)) from unnest($1::text[]) with ordinality as t(k, n) order by t.n';
// The row itself, until the commit: an operator's discard (or a failure recorded by another run)
// either lands before the lookup, which then sees it, or waits for the commit and sees the import.
const LOCK_ROW = `select id from ${LEDGER} where id = $1 for update`;

const LOOKUP = `
select l.status, l.duplicate_kind, l.patient_id, l.duplicate_of_patient_id, l.possible_duplicate_of_patient_id,
       t.patient_id as same_token_patient_id, td.field_digests as same_token_digests,
       (select to_jsonb(sp) from ${PATIENTS} sp where sp.id = t.patient_id and td.field_digests is null) as same_token_patient,
       r.id as ref_taken_by, e.same_email,
       case when l.status not in ('imported', 'duplicate', 'deleted', 'superseded', 'done') and t.patient_id is null and r.id is null
            then nextval(pg_get_serial_sequence('${PATIENTS.replaceAll('"', '')}', 'id')) end as reserved_patient_id
  from (select 1) as one
  left join ${LEDGER} l on l.id = $1
  left join lateral (select patient_id, ledger_id from ${CONSENTS} where registration_token = $2::text limit 1) t on true
  -- the import of that token's digests; the patient row is read only where it recorded none
  left join lateral (select tl.field_digests from ${LEDGER} tl where tl.id = t.ledger_id) td on true
  left join lateral (select id from ${PATIENTS} where zahlungsreferenz = $3::text limit 1) r on true
  left join lateral (
    select coalesce(json_agg(json_build_object('id', p.id, 'vorname', p.vorname, 'nachname', p.nachname) order by p.id), '[]'::json) as same_email
      from ${PATIENTS} p
     where $4::text is not null and ${sameEmailSql('p.email', '$4::text')}
  ) e on true`;

/** Column names of a table by property name, and an insert from one JSON parameter per row. */
function jsonRecord(table: Parameters<typeof getTableColumns>[0]) {
  const columns = getTableColumns(table) as Record<string, { name: string }>;
  return (values: Record<string, unknown>): { names: string[]; json: string } => {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) continue; // left to the column default, as the builder does
      const col = columns[k];
      if (!col) throw new Error(`no column for ${k}`);
      out[col.name] = v;
    }
    return { names: Object.keys(out), json: JSON.stringify(out) };
  };
}

const patientRecord = jsonRecord(patienten);
const consentRecord = jsonRecord(patientConsents);
const outboxRecord = jsonRecord(outbox);
const deliveryRecord = jsonRecord(deliveries);

/** `insert into T (cols) select cols from json_populate_record(null::T, $n::json) where $n is not null` */
function insertFromJson(table: string, names: string[], param: number): string {
  const cols = names.map((n) => `"${n}"`).join(', ');
  return `insert into ${table} (${cols}) select ${cols} from json_populate_record(null::${table}, $${param}::json) where $${param}::json is not null`;
}

const writeStatements = new Map<string, string>();

/** The one statement that writes an import (its text depends only on which columns are set). */
function writeStatement(p: string[], c: string[], e: string[], d: string[]): string {
  const key = [p, c, e, d].map((x) => x.join(',')).join('|');
  let text = writeStatements.get(key);
  if (!text) {
    text = `
with pat as (${insertFromJson(PATIENTS, p, 1)} returning id),
     con as (${insertFromJson(CONSENTS, c, 2)} returning id),
     evt as (${insertFromJson(OUTBOX, e, 3)} returning id),
     del as (${insertFromJson(DELIVERIES, d, 4)} on conflict (idempotency_key) do nothing returning id),
     old as (select id from ${DELIVERIES} where idempotency_key = ($4::json ->> 'idempotency_key'))
update ${LEDGER}
   set status = $6, imported_at = $7::timestamptz, patient_id = $8, duplicate_of_patient_id = $9, duplicate_kind = $10,
       possible_duplicate_of_patient_id = $11, unknown_fields = $12::jsonb, validation = $13,
       staff_delivery_id = coalesce((select id from del), (select id from old)), reason = null, reason_withheld = null, error_code = null, updated_at = $14::timestamptz,
       registration_token = $15, differing_fields = $16::jsonb, differing_compared_with = $17, field_digests = $18::jsonb
 where id = $5
returning (select id from del) as created_delivery_id, staff_delivery_id,
          (select count(*) from pat)::int as patients, (select count(*) from con)::int as consents, (select count(*) from evt)::int as events`;
    writeStatements.set(key, text);
  }
  return text;
}

async function rollback(c: Reserved): Promise<void> {
  await c.unsafe('rollback').catch(() => {});
}

/**
 * The import transaction in two round trips: (the ledger's backed-up record, committed on
 * its own,) `begin`, the advisory locks of `keys` (taken
 * in sorted order, so two imports never deadlock), the ledger row's lock and the lookups are sent at once (the
 * lookups run after the locks are held, in a statement of their own, so they see what
 * the previous holder committed); `decide` turns what was found into what to write (or
 * throws: rolled back); then one statement writes it all and `commit` follows at once.
 */
export async function runImportTransaction<T>(
  db: Db,
  q: {
    keys: string[];
    ledgerId: number;
    registrationToken: string;
    zahlungsreferenz: string;
    normalisedEmail: string | null;
    /** Records the durable backup first (its own statement, committed on its own), in the same round trip. */
    backedUp?: { at: Date; backupPath: string; sha256: string; size: number } | null;
  },
  decide: (found: ImportLookup) => { writes: ImportWrites | null; result: T },
): Promise<{ result: T; delivery: { id: string; created: boolean } | null }> {
  const keys = [...new Set(q.keys)].sort();
  const c = await clientOf(db).reserve();
  try {
    const b = q.backedUp;
    // The backed-up record changes nothing when the row is gone (the lookup finds none) or
    // another run moved it on (the lookup sees how).
    const [, , , , rows] = await Promise.all([
      b ? c.unsafe(MARK_BACKED_UP, [q.ledgerId, b.at.toISOString(), b.backupPath, b.sha256, b.size, new Date().toISOString()], { prepare: true }) : null,
      c.unsafe('begin'),
      c.unsafe(LOCK_KEYS, [c.array(keys, 25)] as never[], { prepare: true }),
      c.unsafe(LOCK_ROW, [q.ledgerId], { prepare: true }),
      c.unsafe(LOOKUP, [q.ledgerId, q.registrationToken, q.zahlungsreferenz, q.normalisedEmail], { prepare: true }),
    ]);
    const r = rows[0]!;
    const found: ImportLookup = {
      ledger:
        r.status === null
          ? null
          : {
              status: r.status as PatientImportStatus,
              duplicateKind: r.duplicate_kind as string | null,
              patientId: r.patient_id === null ? null : Number(r.patient_id),
              duplicateOfPatientId: r.duplicate_of_patient_id === null ? null : Number(r.duplicate_of_patient_id),
              possibleDuplicateOfPatientId: r.possible_duplicate_of_patient_id === null ? null : Number(r.possible_duplicate_of_patient_id),
            },
      sameTokenPatientId: r.same_token_patient_id === null ? null : Number(r.same_token_patient_id),
      sameTokenDigests: (r.same_token_digests as Record<string, string> | null) ?? null,
      sameTokenPatient: (r.same_token_patient as Record<string, unknown> | null) ?? null,
      sameEmail: (r.same_email as Array<{ id: number; vorname: string; nachname: string }>) ?? [],
      zahlungsreferenzTakenBy: r.ref_taken_by === null ? null : Number(r.ref_taken_by),
      reservedPatientId: r.reserved_patient_id === null ? null : Number(r.reserved_patient_id),
    };
    const { writes, result } = decide(found);
    if (!writes) {
      await c.unsafe('commit');
      return { result, delivery: null };
    }
    const p = writes.patient ? patientRecord(writes.patient) : null;
    const cn = writes.consent ? consentRecord(writes.consent) : null;
    const e = writes.event ? outboxRecord(writes.event) : null;
    const d = writes.delivery ? deliveryRecord(writes.delivery) : null;
    const l = writes.ledger;
    const text = writeStatement(p?.names ?? ['id'], cn?.names ?? ['id'], e?.names ?? ['id'], d?.names ?? ['id']);
    const params = [
      p?.json ?? null,
      cn?.json ?? null,
      e?.json ?? null,
      d?.json ?? null,
      q.ledgerId,
      l.status,
      l.importedAt.toISOString(),
      l.patientId,
      l.duplicateOfPatientId,
      l.duplicateKind,
      l.possibleDuplicateOfPatientId,
      JSON.stringify(l.unknownFields),
      l.validation,
      new Date().toISOString(),
      l.registrationToken,
      l.differingFields === null ? null : JSON.stringify(l.differingFields),
      l.differingComparedWith,
      l.fieldDigests === null ? null : JSON.stringify(l.fieldDigests),
    ];
    // A failed write leaves the transaction aborted: the commit then only rolls it back.
    // Behind the write (with the staff email it can fill the socket's buffer) postgres.js may
    // hold the commit back; if the connection ends meanwhile it fails with it too (our patch of
    // postgres.js: 3.4.9 dropped it unsettled).
    const [written, committed] = await Promise.allSettled([c.unsafe(text, params as never[], { prepare: true }), c.unsafe('commit')]);
    if (written.status === 'rejected') throw written.reason;
    if (committed.status === 'rejected') throw committed.reason;
    const w = written.value[0];
    if (!w) throw new Error(`ledger row ${q.ledgerId} does not exist`);
    if ((w.patients as number) !== (writes.patient ? 1 : 0) || (w.consents as number) !== (writes.consent ? 1 : 0) || (w.events as number) !== (writes.event ? 1 : 0)) {
      throw new Error(`ledger row ${q.ledgerId}: the import statement wrote an unexpected number of rows`);
    }
    const deliveryId = (w.staff_delivery_id as string | null) ?? null;
    return { result, delivery: d && deliveryId ? { id: deliveryId, created: w.created_delivery_id !== null } : null };
  } catch (err) {
    // A lost connection was rolled back by the server; there is nothing to send a rollback on.
    if (!isConnectionLost(err)) await rollback(c);
    throw err;
  } finally {
    c.release();
  }
}

/**
 * The daily health view's figures (`fleet daily`, /daily): registrations imported or found
 * duplicate since `since`, those that failed since then and are still failed, every failed one
 * still waiting for an operator, and the rows a job still has work to do for with the age of
 * the oldest (counts only: object names contain patient names).
 */
export async function ledgerActivity(
  db: DbOrTx,
  since: Date,
  now: Date,
): Promise<{ imported: number; duplicate: number; failed: number; discarded: number; replaced: number; failedWaiting: number; open: number; oldestOpenAgeSeconds: number | null }> {
  const l = patientImportLedger;
  const s = since.toISOString();
  const open = sql.join(
    patientImportOpenStatuses.map((st) => sql`${st}`),
    sql`, `,
  );
  const [row] = await db
    .select({
      imported: sql<number>`count(*) filter (where ${l.importedAt} >= ${s}::timestamptz and ${l.duplicateKind} is null)::int`,
      duplicate: sql<number>`count(*) filter (where ${l.importedAt} >= ${s}::timestamptz and ${l.duplicateKind} is not null)::int`,
      failed: sql<number>`count(*) filter (where ${l.status} = 'failed' and ${l.failedAt} >= ${s}::timestamptz)::int`,
      // Failed in the window (or discarded there while still open) and discarded since: without it
      // the window's failures vanished from the counts once an operator discarded them.
      discarded: sql<number>`count(*) filter (where ${l.status} = 'discarded' and coalesce(${l.failedAt}, ${l.discardedAt}) >= ${s}::timestamptz)::int`,
      // Never imported: a newer upload of the same name replaced it in the bucket first.
      replaced: sql<number>`count(*) filter (where ${l.status} = 'replaced' and coalesce(${l.finishedAt}, ${l.updatedAt}) >= ${s}::timestamptz)::int`,
      failedWaiting: sql<number>`count(*) filter (where ${l.status} = 'failed')::int`,
      open: sql<number>`count(*) filter (where ${l.status} in (${open}))::int`,
      oldestOpen: sql<number | null>`extract(epoch from min(${l.receivedAt}) filter (where ${l.status} in (${open})))::float8`,
    })
    .from(l);
  const oldest = row?.oldestOpen ?? null;
  return {
    imported: row?.imported ?? 0,
    duplicate: row?.duplicate ?? 0,
    failed: row?.failed ?? 0,
    discarded: row?.discarded ?? 0,
    replaced: row?.replaced ?? 0,
    failedWaiting: row?.failedWaiting ?? 0,
    open: row?.open ?? 0,
    oldestOpenAgeSeconds: oldest === null ? null : Math.max(0, now.getTime() / 1000 - oldest),
  };
}

/** When the newest patient import record was received (by id, the primary key: cheap on any size); null when there is none. */
export async function newestLedgerReceivedAt(db: DbOrTx): Promise<Date | null> {
  const [row] = await db.select({ at: patientImportLedger.receivedAt }).from(patientImportLedger).orderBy(desc(patientImportLedger.id)).limit(1);
  return row?.at ?? null;
}
