import type postgres from 'postgres';
import type { FileOutcome, NewTherapistRow, StoredTherapist, TherapistImportFileRow } from './therapist-import.js';
import { isConnectionLost } from '../connection-lost.js';
import { outboxBatch, outboxBatchParams, type OutboxInsert } from './outbox-rows.js';

/**
 * The hot path of the therapist import: one file's transaction on a reserved connection,
 * with its statements pipelined (sent together, answered in order), so a file costs two round
 * trips instead of one per statement:
 *
 *   1. the file's claim (its own transaction; when the caller read the file before claiming it),
 *      begin, postcode locks, external ids, candidate therapists (read without row locks);
 *   2. every write and the tracking row (one statement), commit, and the run-drain check after it.
 *      The tracking row is written only while it is `importing`: when another process that also
 *      claimed the file committed first, nothing is written (SQLSTATE 40001, as for a changed therapist).
 *
 * New therapists' ids come from the table's sequence in blocks held by the process (one more
 * round trip per block of 500).
 *
 * Candidates are not locked (locking every therapist of a file would write each row on every
 * re-import): each carries its row version (`xmin`), and updates and deactivations write only
 * rows still at that version. `fleet.expect_rows` aborts the transaction when a row changed
 * meanwhile (SQLSTATE 40001); the caller then imports the file again on fresh data.
 * Plain postgres.js (no query builder): this runs for every file of a full-country drop.
 */

export interface VersionedTherapist extends StoredTherapist {
  /** Row version (`xmin`) when read. */
  version: string;
  /**
   * What is on record of the therapist's last scrape (`fleet.therapist_scraped`): its digest, and
   * its fields unless the row is still at the version the import left holding them. Null: no record.
   */
  scraped: { digest: string; fields: Record<string, unknown> | null } | null;
}

/** An external id (or tombstone key) of a scope, as read and as written. */
export interface ExternalIdMatch {
  key: string;
  therapistId: number | null;
  deleted: boolean;
}

export interface MatchData {
  externalIds: ExternalIdMatch[];
  candidates: VersionedTherapist[];
}

export interface SessionWrites {
  inserts: Array<{ id: number } & NewTherapistRow>;
  updates: Array<{ id: number; version: string } & Partial<NewTherapistRow>>;
  deactivations: Array<{ id: number; version: string }>;
  externalIds: { scope: string; fileId: number; entries: ExternalIdMatch[] };
  /**
   * What the scraper now says of these therapists (`fleet.therapist_scraped`, compact; a field
   * left out keeps the value on record, merged here). `held`:
   * the row holds these fields after this statement, at `version` (null: the row is written
   * here, so at this transaction's id).
   */
  scraped: Array<{ id: number; /** The fields as JSON (as digested). */ json: string; digest: string; held: boolean; version: string | null }>;
  /** Outbox rows; PostgreSQL makes their event ids. */
  events: Array<Omit<OutboxInsert, 'eventId'>>;
  file: { id: number; outcome: FileOutcome };
  /** The run to check after the commit (null: a file without a run). */
  runId: number | null;
  now: Date;
}

/** Rethrown with the database's message and code only: a failed statement's error carries its parameters (names, emails). */
export class ImportStatementError extends Error {
  override name = 'ImportStatementError';
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/**
 * A therapist changed between read and write (SQLSTATE 40001 from `fleet.expect_rows`), or a row
 * the file's plan inserts appeared meanwhile (23505: an external id or a scraped record another
 * import wrote): import the file again on fresh data.
 */
export function isConcurrentChange(err: unknown): boolean {
  return err instanceof ImportStatementError && (err.code === '40001' || err.code === '23505');
}

function clean(err: unknown): Error {
  if (err instanceof ImportStatementError) return err;
  const e = err as { message?: string; code?: string; name?: string };
  if (e && e.name === 'PostgresError') return new ImportStatementError(`database error: ${e.message}`, e.code);
  return err as Error;
}

/** The records' JSON parameter, their fields spliced in as they were digested (not serialised twice). */
function scrapedParam(records: SessionWrites['scraped']): string {
  return `[${records.map((r) => `{"id":${r.id},"digest":${JSON.stringify(r.digest)},"held":${r.held},"version":${JSON.stringify(r.version)},"fields":${r.json}}`).join(',')}]`;
}

/** One entry per key (one statement may write a row only once): the last therapist wins; a tombstone is never lifted. */
export function mergeExternalIdEntries(entries: ExternalIdMatch[]): ExternalIdMatch[] {
  const byKey = new Map<string, ExternalIdMatch>();
  for (const e of entries) {
    const prev = byKey.get(e.key);
    byKey.set(e.key, { key: e.key, therapistId: e.therapistId ?? prev?.therapistId ?? null, deleted: e.deleted || (prev?.deleted ?? false) });
  }
  return [...byKey.values()];
}

/**
 * Sends a query now. postgres.js sends a query when it is first awaited (`then`), and
 * `Promise.all` awaits plain promises at once but postgres.js queries a microtask later: the
 * order on the wire must not depend on that (a commit sent before the writes would commit
 * without them).
 */
function send<T extends { execute(): unknown }>(q: T): T {
  q.execute();
  return q;
}

/** A file's transaction takes `pg_advisory_xact_lock(hashtext(IMPORT_LOCK_PREFIX || key))` per key (`scope:<s>`, `plz:<p>`). */
export const IMPORT_LOCK_PREFIX = 'curavani-fleet:therapist-import:';

/** The postcode on record, as `therapist_scraped_plz_idx` indexes it (a test checks that the candidate lookup uses the index). */
export const SCRAPED_PLZ = `(fields->>'plz')`;

const CANDIDATE_COLUMNS =
  't.id, t.xmin::text, t.status, t.anrede, t.geschlecht, t.titel, t.vorname, t.nachname, t.strasse, t.plz, t.ort, t.telefon, t.fax, t.email, t.telefonische_erreichbarkeit, t.fremdsprachen, t.psychotherapieverfahren, ' +
  // The record's fields only where the row changed since the import left it holding them.
  'case when s.therapist_id is not null then json_build_array(s.digest, case when s.row_version is distinct from t.xmin::text then s.fields end) end';

/** One row of CANDIDATE_COLUMNS, in that order. */
function candidateOf(r: unknown[]): VersionedTherapist {
  return {
    id: r[0] as number,
    version: r[1] as string,
    status: r[2] as string,
    anrede: r[3] as string | null,
    geschlecht: r[4] as string | null,
    titel: r[5] as string | null,
    vorname: r[6] as string,
    nachname: r[7] as string,
    strasse: r[8] as string | null,
    plz: r[9] as string,
    ort: r[10] as string | null,
    telefon: r[11] as string | null,
    fax: r[12] as string | null,
    email: r[13] as string | null,
    telefonische_erreichbarkeit: r[14] as Record<string, string[]> | null,
    fremdsprachen: r[15] as string[] | null,
    psychotherapieverfahren: r[16] as string | null,
    scraped: r[17] === null ? null : { digest: (r[17] as [string, unknown])[0], fields: (r[17] as [string, Record<string, unknown> | null])[1] },
  };
}

const RECORD_COLUMNS =
  'anrede text, geschlecht text, titel text, vorname text, nachname text, strasse text, plz text, ort text, telefon text, fax text, email text, telefonische_erreichbarkeit jsonb, fremdsprachen jsonb, psychotherapieverfahren text';

/** What the caller knows of the file it claims: the claim takes only a row that says the same. */
export interface ClaimExpectation {
  path: string;
  contentHash: string;
  postcode: string | null;
}

/**
 * The claim: a file queued, or importing (a retry), becomes `importing` and counts an attempt;
 * no row when it is done already (or, with `expect`, when the row says otherwise).
 */
function claimQuery(sql: postgres.Sql | postgres.ReservedSql, id: number, now: Date, expect?: ClaimExpectation) {
  const matches = expect
    ? sql`and path = ${expect.path} and content_hash = ${expect.contentHash} and postcode is not distinct from ${expect.postcode}::text`
    : sql``;
  return sql<Array<Record<string, unknown>>>`
    update fleet.therapist_import_files set status = 'importing', started_at = ${now.toISOString()}::timestamptz, attempts = attempts + 1
    where id = ${id} and status in ('queued', 'importing') ${matches}
    returning id::text, run_id::text, path, postcode, date_folder, urgent, content_hash, size_bytes::text, stat_key, status, reason, file_errors,
      metadata_disagreements, failures, status_mismatches, replaced_corrections, counts, attempts, discovered_at, started_at, finished_at, duration_ms,
      error_code, dead_letter_discarded_at`;
}

/** The claimed row as `getFile` reads it (a test compares them). */
function claimedRow(r: Record<string, unknown> | undefined): TherapistImportFileRow | null {
  if (!r) return null;
  const num = (v: unknown) => (v === null ? null : Number(v));
  // Timestamps arrive as PostgreSQL's text (the query builder reads them so): parsed as the query builder does.
  const date = (v: unknown) => (v === null ? null : v instanceof Date ? v : new Date(v as string));
  return {
    id: Number(r.id),
    runId: num(r.run_id),
    path: r.path,
    postcode: r.postcode,
    dateFolder: r.date_folder,
    urgent: r.urgent,
    contentHash: r.content_hash,
    sizeBytes: num(r.size_bytes),
    statKey: r.stat_key,
    status: r.status,
    reason: r.reason,
    fileErrors: r.file_errors,
    metadataDisagreements: r.metadata_disagreements,
    failures: r.failures,
    statusMismatches: r.status_mismatches,
    replacedCorrections: r.replaced_corrections,
    counts: r.counts,
    attempts: r.attempts,
    discoveredAt: date(r.discovered_at),
    startedAt: date(r.started_at),
    finishedAt: date(r.finished_at),
    durationMs: r.duration_ms,
    errorCode: r.error_code,
    deadLetterDiscardedAt: date(r.dead_letter_discarded_at),
  } as TherapistImportFileRow;
}

/**
 * Claims a file for import (queued, or importing: a retry), counting the attempt; null when
 * it is done already. The same row as `getFile` reads, without the query builder's work for
 * every file.
 */
export async function claimFile(sql: postgres.Sql, id: number, now: Date): Promise<TherapistImportFileRow | null> {
  const [r] = await claimQuery(sql, id, now);
  return claimedRow(r);
}

export interface ImportSession extends MatchData {
  /** With `claim`: the claimed file row (null: the file is done already, or not as expected; nothing else of the session is of use then). */
  claimed?: TherapistImportFileRow | null;
  /** Ids for new therapists, in order (from the pool's block of sequence values; a round trip only when it runs dry). */
  reserveIds(n: number): Promise<number[]>;
  /** Writes everything and commits (one round trip). Returns whether the file's run may now be drained. */
  commit(writes: SessionWrites): Promise<{ runDrained: boolean }>;
  /** Ends the transaction without writing (idempotent; also after a failed commit). */
  rollback(): Promise<void>;
}

/**
 * Opens a file's transaction: takes the advisory locks (sorted, so two imports never wait on
 * each other in a circle) and loads what matching needs, in one round trip.
 */
export async function openImportSession(
  sql: postgres.Sql,
  lock: { keys: string[] },
  load: { scope: string; keys: string[]; plzs: string[] },
  ids: TherapistIdPool,
  claim?: { fileId: number; now: Date; expect: ClaimExpectation },
): Promise<ImportSession> {
  const conn = await sql.reserve();
  let open = true;
  const rollback = async () => {
    if (!open) return;
    open = false;
    try {
      await conn`rollback`;
    } catch {
      // the connection is gone: the server rolled back
    } finally {
      conn.release();
    }
  };

  let data: MatchData & { claimed?: TherapistImportFileRow | null };
  let knownKeys = new Set<string>();
  /** Therapists read with a `therapist_scraped` record. */
  let withRecord = new Set<number>();
  try {
    const sorted = [...new Set(lock.keys)].sort();
    // The claim (its own transaction, before the file's) rides in the same round trip when the
    // caller read the file before claiming it.
    const claimed = claim ? send(claimQuery(conn, claim.fileId, claim.now, claim.expect)) : Promise.resolve([]);
    const [[claimRow], , , , [match]] = await Promise.all([
      claimed,
      send(conn`begin`),
      // Plans for the table as it is now: a cached generic plan, made while the table was
      // small (a first import), scanned the whole therapist table per file, for the read as
      // for the updates.
      send(conn`set local plan_cache_mode = force_custom_plan`),
      send(conn`select count(pg_advisory_xact_lock(hashtext(${IMPORT_LOCK_PREFIX} || k))) from (select unnest(${sorted}::text[]) as k) s`),
      // The scope's external ids and the candidates in one statement, each as one JSON array of
      // arrays (no key names): two values to decode instead of 17 per therapist.
      send(conn<Array<{ ext: Array<[string, number | null, boolean]>; cand: unknown[][] }>>`
        with ext as (
          select external_id, therapist_id, deleted_at is not null as deleted
          from fleet.therapist_external_ids where scope = ${load.scope} and external_id = any(${load.keys}::text[]))
        select
          (select coalesce(json_agg(json_build_array(external_id, therapist_id, deleted)), '[]'::json) from ext) as ext,
          (select coalesce(json_agg(json_build_array(${conn.unsafe(CANDIDATE_COLUMNS)}) order by t.id), '[]'::json)
           from therapist_service.therapeuten t
           left join fleet.therapist_scraped s on s.therapist_id = t.id
           where t.plz = any(${load.plzs}::text[])
              or t.id = any(array(select therapist_id from ext where therapist_id is not null))
              -- A postcode staff corrected: the scraper's (on record) still finds the therapist
              -- (therapist_scraped_plz_idx).
              or t.id = any(array(select therapist_id from fleet.therapist_scraped where ${conn.unsafe(SCRAPED_PLZ)} = any(${load.plzs}::text[])))) as cand`),
    ]);
    data = {
      claimed: claim ? claimedRow(claimRow) : undefined,
      externalIds: match!.ext.map(([key, therapistId, deleted]) => ({ key, therapistId, deleted })),
      candidates: match!.cand.map(candidateOf),
    };
    knownKeys = new Set(data.externalIds.map((e) => e.key));
    withRecord = new Set(data.candidates.filter((c) => c.scraped !== null).map((c) => c.id));
  } catch (err) {
    if (isConnectionLost(err)) {
      // Gone: the server rolled back; there is nothing to send a rollback on.
      open = false;
      conn.release();
    } else {
      await rollback();
    }
    throw clean(err);
  }

  return {
    ...data,
    async reserveIds(n) {
      try {
        return await ids.take(n);
      } catch (err) {
        await rollback();
        throw err;
      }
    },
    async commit(w) {
      const ts = w.now.toISOString();
      // Keys the file's transaction did not find are new: a plain insert (the scope's lock
      // keeps other imports away; a row that appeared anyway fails the commit with 23505, and
      // the file is planned again on fresh data: isConcurrentChange). Known keys are updated.
      const mappings = mergeExternalIdEntries(w.externalIds.entries);
      const fresh = mappings.filter((m) => !knownKeys.has(m.key));
      const known = mappings.filter((m) => knownKeys.has(m.key));
      const [kinds, events] = outboxBatchParams(outboxBatch(w.events));
      // Records of therapists read without one (and of new therapists) are a plain insert, as
      // new external ids are (cheaper than an upsert; the postcode locks keep other imports
      // away; a row that appeared anyway fails the commit, and the file is planned again).
      const scrapedKnown = w.scraped.filter((x) => withRecord.has(x.id));
      const scrapedFresh = w.scraped.filter((x) => !withRecord.has(x.id));
      const o = w.file.outcome;
      // Every write of the file in one statement (data-modifying CTEs all run, on disjoint
      // rows): one answer to wait for instead of one per table. Update and deactivation touch
      // only rows still at the version read; `fleet.expect_rows` aborts otherwise. A field
      // absent from a row's changes is NULL in the record set and keeps its value (an import
      // never writes an empty value); only the import's own columns are named, so the
      // protected columns cannot be touched.
      const writes = send(conn`
        with
        ins as (
          insert into therapist_service.therapeuten
            (id, anrede, geschlecht, titel, vorname, nachname, strasse, plz, ort, telefon, fax, email,
             telefonische_erreichbarkeit, fremdsprachen, psychotherapieverfahren,
             status, kassensitz, potenziell_verfuegbar, created_at, updated_at)
          select r.id, r.anrede, r.geschlecht, r.titel, r.vorname, r.nachname, r.strasse, r.plz, r.ort, r.telefon, r.fax, r.email,
                 r.telefonische_erreichbarkeit, r.fremdsprachen, r.psychotherapieverfahren,
                 'aktiv', true, false, ${ts}::timestamptz, ${ts}::timestamptz
          from jsonb_to_recordset(${JSON.stringify(w.inserts)}::jsonb) as r(id int, ${conn.unsafe(RECORD_COLUMNS)})
          returning 1),
        upd as (
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
            updated_at = ${ts}::timestamptz
          from jsonb_to_recordset(${JSON.stringify(w.updates)}::jsonb) as r(id int, version xid, ${conn.unsafe(RECORD_COLUMNS)})
          where t.id = r.id and t.xmin = r.version
          returning 1),
        deact as (
          update therapist_service.therapeuten t set status = 'inaktiv', updated_at = ${ts}::timestamptz
          from jsonb_to_recordset(${JSON.stringify(w.deactivations)}::jsonb) as r(id int, version xid)
          where t.id = r.id and t.xmin = r.version
          returning 1),
        ext_new as (
          insert into fleet.therapist_external_ids (scope, external_id, therapist_id, deleted_at, first_file_id, last_file_id, created_at, updated_at)
          select ${w.externalIds.scope}, r.key, r."therapistId", case when r.deleted then ${ts}::timestamptz end,
                 ${w.externalIds.fileId}::bigint, ${w.externalIds.fileId}::bigint, ${ts}::timestamptz, ${ts}::timestamptz
          from jsonb_to_recordset(${JSON.stringify(fresh)}::jsonb) as r(key text, "therapistId" int, deleted boolean)
          returning 1),
        ext_known as (
          update fleet.therapist_external_ids e set
            therapist_id = coalesce(r."therapistId", e.therapist_id),
            deleted_at = coalesce(e.deleted_at, case when r.deleted then ${ts}::timestamptz end),
            last_file_id = ${w.externalIds.fileId}::bigint,
            updated_at = ${ts}::timestamptz
          from jsonb_to_recordset(${JSON.stringify(known)}::jsonb) as r(key text, "therapistId" int, deleted boolean)
          where e.scope = ${w.externalIds.scope} and e.external_id = r.key
          returning 1),
        scraped_new as (
          insert into fleet.therapist_scraped (therapist_id, fields, digest, row_version, last_file_id, updated_at)
          select r.id, r.fields, r.digest, case when r.held then coalesce(r.version, pg_current_xact_id()::xid::text) end, ${w.file.id}::bigint, ${ts}::timestamptz
          from json_to_recordset(${scrapedParam(scrapedFresh)}::json) as r(id int, fields json, digest text, held boolean, version text)
          returning 1),
        scraped_known as (
          -- A field the line leaves empty (absent from its fields) keeps the value on record.
          update fleet.therapist_scraped s set fields = (s.fields::jsonb || r.fields::jsonb)::json, digest = r.digest,
            row_version = case when r.held then coalesce(r.version, pg_current_xact_id()::xid::text) end,
            last_file_id = ${w.file.id}::bigint, updated_at = ${ts}::timestamptz
          from json_to_recordset(${scrapedParam(scrapedKnown)}::json) as r(id int, fields json, digest text, held boolean, version text)
          where s.therapist_id = r.id
          returning 1),
        events as (
          insert into fleet.outbox (event_id, event_type, version, topic, key, producer, payload, occurred_at)
          select gen_random_uuid(), k.event_type, k.version, k.topic, r.key, k.producer, r.payload, k.occurred_at
          from jsonb_to_recordset(${events}::jsonb) as r(kind int, key text, payload jsonb)
          join jsonb_to_recordset(${kinds}::jsonb) as k(kind int, event_type text, version int, topic text, producer text, occurred_at timestamptz)
            on k.kind = r.kind
          returning 1),
        tracked as (
          update fleet.therapist_import_files set status = ${o.status}, reason = ${o.reason}, counts = ${JSON.stringify(o.counts)}::jsonb,
            file_errors = ${JSON.stringify(o.fileErrors)}::jsonb, metadata_disagreements = ${JSON.stringify(o.metadataDisagreements)}::jsonb,
            failures = ${JSON.stringify(o.failures)}::jsonb, status_mismatches = ${JSON.stringify(o.statusMismatches)}::jsonb,
            replaced_corrections = ${JSON.stringify(o.replacedCorrections)}::jsonb,
            finished_at = ${o.finishedAt.toISOString()}::timestamptz, duration_ms = ${o.durationMs}
          where id = ${w.file.id} and status = 'importing'
          returning 1)
        select fleet.expect_rows((select count(*) from upd), ${w.updates.length}, 'therapist updates'),
               fleet.expect_rows((select count(*) from deact), ${w.deactivations.length}, 'therapist deactivations'),
               fleet.expect_rows((select count(*) from tracked), 1, 'tracking row')`);
      const commit = send(conn`commit`);
      // After the commit (same connection, so it runs once the commit is done): every file
      // committed before ours is visible, so of two last files finishing together at least
      // the later one sees the run drained. Closing it is the caller's (locked) business.
      const drained =
        w.runId === null
          ? Promise.resolve([{ drained: false }])
          : send(conn<Array<{ drained: boolean }>>`
              select exists (select 1 from fleet.therapist_import_runs where id = ${w.runId} and state = 'sealed')
                 and not exists (select 1 from fleet.therapist_import_files where run_id = ${w.runId} and status in ('queued', 'importing')) as drained`);
      open = false;
      // Behind the writes (a large statement) postgres.js may hold the commit and the check
      // back; if the connection ends meanwhile they fail with it too (our patch of postgres.js:
      // 3.4.9 dropped them unsettled, and the import waited for ever).
      const [ws, cs, ds] = await Promise.allSettled([writes, commit, drained]);
      const written = ws.status === 'fulfilled' ? ws.value : ws.reason instanceof Error ? ws.reason : new Error(String(ws.reason));
      const committed: unknown = cs.status === 'fulfilled' ? cs.value : cs.reason;
      const check: unknown = ds.status === 'fulfilled' ? ds.value : ds.reason;
      conn.release();
      if (written instanceof Error) throw clean(written);
      if (committed instanceof Error) throw clean(committed);
      if ((committed as { command?: string }).command !== 'COMMIT') throw new ImportStatementError('database error: the transaction was rolled back', undefined);
      // A failed check after a committed import: maybe drained; the caller's locked close decides.
      return { runDrained: check instanceof Error || (check as Array<{ drained: boolean }>)[0]?.drained === true };
    },
    rollback,
  };
}

export interface TherapistIdPool {
  take(n: number): Promise<number[]>;
}

/**
 * Ids for new therapists from the table's sequence, fetched `block` at a time (one round trip
 * per block instead of one per file). Values never used (the process ends with some left) are
 * skipped, as a rolled-back insert skips its value: ids stay unique, with gaps. Takes queue
 * behind a refill, so concurrent imports never fetch twice for the same shortfall.
 */
export function therapistIdPool(sql: postgres.Sql, block: number): TherapistIdPool {
  let free: number[] = [];
  let queue: Promise<unknown> = Promise.resolve();
  return {
    take(n) {
      if (n === 0) return Promise.resolve([]);
      if (free.length >= n) return Promise.resolve(free.splice(0, n));
      const taken = queue.then(async () => {
        if (free.length < n) {
          try {
            const rows = await sql<Array<{ id: number }>>`
              select nextval(pg_get_serial_sequence('therapist_service.therapeuten', 'id'))::int as id
              from generate_series(1, ${Math.max(block, n - free.length)}::int)`;
            free = free.concat(rows.map((r) => r.id));
          } catch (err) {
            throw clean(err);
          }
        }
        return free.splice(0, n);
      });
      queue = taken.catch(() => {});
      return taken;
    },
  };
}
