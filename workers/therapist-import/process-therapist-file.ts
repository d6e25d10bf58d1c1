import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type {
  MetadataDisagreement,
  ReplacedCorrection,
  StatusMismatch,
  TherapistFailure,
  TherapistImportCounts,
} from '../../libs/db/schema/fleet-therapist-import.js';
import type { FileOutcome, ReplacingFile, TherapistImportFileRow, TherapistImportRunRow } from '../../libs/db/repositories/therapist-import.js';
import type { SessionWrites, VersionedTherapist } from '../../libs/db/repositories/therapist-import-session.js';
import { PermanentError } from '../../libs/errors/index.js';
import type { NewEvent } from '../../libs/events/index.js';
import type { Logger } from '../../libs/log/index.js';
import type { Clock } from '../../libs/runtime/clock.js';
import type { TherapistImportMetrics } from './metrics.js';
import { planFile, type ExternalIdEntry, nameTombstoneKey } from './plan.js';
import { assertCountsAddUp, countLines, emptyCounts, failuresOf, metadataDisagreements, mismatchesOf, replacedCorrectionsOf } from './report.js';
import { renderRunSummary, summarizeRunFiles } from './run-summary.js';
import { decodeScraperFile, FileFormatError, parseScraperFile } from './scraper-file.js';
import { FileTooLargeError, NOT_REGULAR_REASON, NotRegularFileError, tooLargeReason } from './file-size.js';

/** A therapist as loaded for matching, with its row version (writes are checked against it). */
export type LoadedTherapist = VersionedTherapist;

/** One file's import transaction (implemented over PostgreSQL in store.ts): open, plan, commit. */
export interface ImportSession {
  /** With `claim`: the claimed tracking row; null when the file is done already. */
  claimed?: TherapistImportFileRow | null;
  /** External ids of the scope (and tombstone keys) and the therapists the file can match. */
  externalIds: Map<string, ExternalIdEntry>;
  candidates: LoadedTherapist[];
  /** Ids for new therapists, in order. */
  reserveIds(n: number): Promise<number[]>;
  /**
   * Writes the plan, the events and the tracking row, and commits. Throws (nothing written)
   * when a therapist changed since it was loaded, or the file is no longer `importing` (another
   * process imported it meanwhile): `isConcurrentChange` tells. Returns
   * whether the run may now be drained (the caller then closes it under the run's lock).
   */
  commit(writes: Omit<SessionWrites, 'events'> & { events: Array<NewEvent<Record<string, unknown>>> }): Promise<{ runDrained: boolean }>;
  /** Ends the transaction without writing (after any failure; idempotent). */
  rollback(): Promise<void>;
}

/** What the less frequent transactions (a file not imported, a run closing) can do. */
export interface ImportTx {
  appendEvent(event: NewEvent<Record<string, unknown>>): Promise<void>;
  /** Records the outcome of a file still queued or importing; false (nothing written) when it has ended already. */
  finishFile(id: number, outcome: FileOutcome): Promise<boolean>;
  /** Closes the run when sealed and drained (under the run's row lock); null when it stays open. */
  closeRunIfDrained(runId: number, summarize: typeof summarizeRunFiles): Promise<{ run: TherapistImportRunRow; files: TherapistImportFileRow[]; replacedBy?: Map<number, ReplacingFile> } | null>;
  /** `followUpOf`: the run closed before (a file of it was requeued), this summary is the one of its close at that time. */
  queueSummary(runId: number, message: { subject: string; html: string; text: string }, followUpOf?: Date): Promise<string>;
}

export interface TherapistImportStore {
  getFile(id: number): Promise<TherapistImportFileRow | null>;
  markImporting(id: number, now: Date): Promise<TherapistImportFileRow | null>;
  /**
   * Begins a file's transaction: takes the advisory locks on `lockKeys` and loads the match
   * data; with `claim`, claims the file first in the same round trip (see `markImporting`).
   */
  openSession(
    lockKeys: string[],
    load: { scope: string; keys: string[]; plzs: string[] },
    claim?: { fileId: number; now: Date; expect: FileHint },
  ): Promise<ImportSession>;
  /** True for the error a commit throws when a therapist changed meanwhile. */
  isConcurrentChange(err: unknown): boolean;
  transaction<T>(fn: (tx: ImportTx) => Promise<T>): Promise<T>;
}

export interface TherapistImportDeps {
  store: TherapistImportStore;
  /** Reads a tracked file; `path` as stored on the tracking row. Rejects with code ENOENT when it is gone. */
  readFile(path: string): Promise<Buffer>;
  /** After commit: send the staff summary (enqueue `email-send`). */
  sendEmail(deliveryId: string): Promise<void>;
  /** The address of a run's report page, linked from its staff summary (none without DASHBOARD_URL). */
  runPageUrl?(runId: number): string;
  /** Counts finished files and their therapists (Prometheus). */
  metrics?: TherapistImportMetrics;
  clock: Clock;
  log: Logger;
}

export interface FileReport {
  fileId: number;
  runId: number | null;
  path: string;
  status: FileOutcome['status'] | 'queued' | 'importing';
  reason: string | null;
  counts: TherapistImportCounts;
  failures: TherapistFailure[];
  statusMismatches: StatusMismatch[];
  /** Staff corrections the scraper's newer values replaced (field names). */
  replacedCorrections: ReplacedCorrection[];
  metadataDisagreements: MetadataDisagreement[];
  fileErrors: string[];
  durationMs: number | null;
  /** True when this call did not import (the file was done before). */
  alreadyDone?: boolean;
}

export function reportOf(row: TherapistImportFileRow): FileReport {
  return {
    fileId: row.id,
    runId: row.runId,
    path: row.path,
    status: row.status,
    reason: row.reason,
    counts: row.counts ?? emptyCounts(),
    failures: row.failures,
    statusMismatches: row.statusMismatches,
    replacedCorrections: row.replacedCorrections,
    metadataDisagreements: row.metadataDisagreements,
    fileErrors: row.fileErrors,
    durationMs: row.durationMs,
  };
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/**
 * What a job may say of its file besides the tracking row id (the watcher knows it when it
 * enqueues): the file is then read and parsed before it is claimed, and the claim rides in the
 * same round trip as the import's reads. The claim takes only a row that says the same; without
 * a hint, or when anything differs, the file is claimed first and read by the row.
 */
export interface FileHint {
  path: string;
  contentHash: string;
  postcode: string | null;
}

/**
 * Imports one tracked scraper file: parse, validate each therapist on its own, map, match,
 * write only what changed (set-based), events in the same transaction, report on the
 * tracking row; closes the run when this was its last file and queues the staff summary.
 */
export async function processTherapistFile(
  input: { fileId: number; file?: FileHint },
  deps: TherapistImportDeps,
  /** `carried`: whether a failure with this error is retried anyway (an outage, see OutageCarry): no final bookkeeping for it. */
  opts: { isFinalAttempt?: boolean; carried?: (err: unknown) => boolean } = {},
): Promise<FileReport> {
  const started = performance.now();
  const early = input.file ? await claimWithReads(input.fileId, input.file, deps) : null;
  const file = early?.file ?? (await deps.store.markImporting(input.fileId, deps.clock.now()));
  if (!file) {
    const existing = await deps.store.getFile(input.fileId);
    if (!existing) throw new PermanentError('file_not_tracked', `therapist import: no tracking row ${input.fileId}`);
    // A retry of a file that was committed: its run may have missed closing (crash after commit).
    if (existing.runId !== null && existing.status !== 'queued' && existing.status !== 'importing') await closeRunIfDrained(existing.runId, deps);
    return { ...reportOf(existing), alreadyDone: true };
  }
  const log = deps.log.child({ fileId: file.id, runId: file.runId });

  try {
    const report = await importFile(file, deps, log, started, early ?? undefined);
    if (!report.alreadyDone) deps.metrics?.fileFinished(report.status, report.counts);
    return report;
  } catch (err) {
    if (!opts.isFinalAttempt || opts.carried?.(err)) throw err;
    // Out of retries: record the failure so the run still closes and staff hear of it.
    // A failure after the file's commit (closing its run, queueing the summary) leaves its record as it is.
    const reason = `import failed after retries: ${(err as Error).message ?? String(err)}`;
    await finishWithoutImport(file, deps, { status: 'failed', code: 'gave_up', reason, fileErrors: [reason] }, started).then(
      (failed) => failed.alreadyDone || deps.metrics?.fileFinished(failed.status, failed.counts),
      (e: unknown) => log.error({ err: e }, 'could not record the failed therapist file'),
    );
    throw err;
  }
}

/**
 * A job BullMQ failed outside its processor (the worker running it died, more often than
 * allowed): the file is recorded as failed, as one out of retries is, so its run still closes
 * and staff hear of it. The file is not read (it may be what kills the worker).
 */
export async function recordAbandonedFile(fileId: number, reason: string, deps: TherapistImportDeps): Promise<void> {
  const file = await deps.store.getFile(fileId);
  if (!file || (file.status !== 'queued' && file.status !== 'importing')) return;
  const why = `import abandoned: ${reason}`;
  const failed = await finishWithoutImport(file, deps, { status: 'failed', code: 'worker_died', reason: why, fileErrors: [why] }, performance.now());
  if (!failed.alreadyDone) deps.metrics?.fileFinished(failed.status, failed.counts);
}

interface Prepared {
  parsed: ReturnType<typeof parseScraperFile>;
  disagreements: MetadataDisagreement[];
  match: MatchParams;
}

interface MatchParams {
  scope: string;
  lockKeys: string[];
  keys: string[];
  plzs: string[];
}

/**
 * The fast path of a job that names its file: read, check and parse it, then claim it together
 * with the import's reads. Null when anything is off (file missing or changed, not parseable,
 * row different from the hint, file done): the caller then claims first and takes the usual
 * path, which reports each of those cases.
 */
async function claimWithReads(fileId: number, hint: FileHint, deps: TherapistImportDeps): Promise<(Prepared & { file: TherapistImportFileRow; session: ImportSession }) | null> {
  const prepared = await readPrepared(hint, deps);
  if ('problem' in prepared) return null;
  const m = prepared.match;
  const session = await deps.store.openSession(m.lockKeys, { scope: m.scope, keys: m.keys, plzs: m.plzs }, { fileId, now: deps.clock.now(), expect: hint });
  const file = session.claimed;
  if (!file) {
    await session.rollback();
    return null;
  }
  return { ...prepared, file, session };
}

/** Why a tracked file cannot be imported, as its tracking row will say. */
type FileProblem = { problem: { status: 'failed' | 'skipped'; code: string; reason: string; fileErrors: string[] } };

/** Reads the file, checks it is the content registered, parses it and prepares its transaction. */
async function readPrepared(f: { path: string; contentHash: string | null; postcode: string | null }, deps: TherapistImportDeps): Promise<Prepared | FileProblem> {
  let buf: Buffer;
  try {
    buf = await deps.readFile(f.path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      // Skipped, not failed: its content was never judged, and a failed row would hold the hash
      // (one live row per content), so the same file dropped again would never be imported.
      return { problem: { status: 'skipped', code: 'file_missing', reason: `file ${f.path} was removed before it was imported; dropped again, it is imported`, fileErrors: [] } };
    }
    // Skipped, not failed, for the same reason: with the limit raised, the same content is imported.
    if (err instanceof FileTooLargeError) return { problem: { status: 'skipped', code: 'file_too_large', reason: tooLargeReason(err), fileErrors: [] } };
    // Replaced by a named pipe, device or folder after it was registered: nothing to read (as the watcher reports such a name).
    if (err instanceof NotRegularFileError) return { problem: { status: 'skipped', code: 'file_not_regular', reason: NOT_REGULAR_REASON, fileErrors: [] } };
    throw err;
  }
  if (f.contentHash && sha256(buf) !== f.contentHash) {
    return { problem: { status: 'skipped', code: 'file_changed', reason: `file ${f.path} changed after it was registered; its new content is tracked as a file of its own`, fileErrors: [] } };
  }
  try {
    return prepare(parseScraperFile(decodeScraperFile(buf)), f.postcode);
  } catch (err) {
    if (err instanceof FileFormatError) return { problem: { status: 'failed', code: 'file_unreadable', reason: `file ${f.path}: ${err.message}`, fileErrors: [`file ${f.path}: ${err.message}`] } };
    throw err;
  }
}

/** Metadata checks and what the file's transaction locks and loads. */
function prepare(parsed: ReturnType<typeof parseScraperFile>, postcode: string | null): Prepared {
  const disagreements = metadataDisagreements(parsed.metadata, parsed.lines.map((l) => l.statedStatus), postcode);
  const scope = postcode ?? parsed.metadata?.postcode_area ?? 'unscoped';
  const valid = parsed.lines.filter((l) => l.ok);
  // Also the postcodes lines that failed validation give with their name: such a line keeps the
  // therapist it names from the secondary rule, and a `deleted` one deactivates it (planFile).
  const plzs = [...new Set(parsed.lines.map((l) => (l.ok ? l.therapist.location.postal_code : l.name?.plz)).filter((p): p is string => p !== undefined))];
  const keys = [
    ...new Set([
      // Also of lines that failed validation: a `deleted` one may still name its therapist by
      // scraper id, and any other keeps the therapist it names from the secondary rule (planFile).
      ...parsed.lines.map((l) => l.externalId).filter((x): x is string => x !== null),
      // The name key of mapTherapist's fields, read directly (no full mapping per line here).
      ...valid.map((l) =>
        nameTombstoneKey({ vorname: l.therapist.basic_info.first_name, nachname: l.therapist.basic_info.last_name, plz: l.therapist.location.postal_code }),
      ),
    ]),
  ];
  return { parsed, disagreements, match: { scope, lockKeys: [`scope:${scope}`, ...plzs.map((p) => `plz:${p}`)], keys, plzs } };
}

async function importFile(
  file: TherapistImportFileRow,
  deps: TherapistImportDeps,
  log: Logger,
  started: number,
  early?: Prepared & { session: ImportSession },
): Promise<FileReport> {
  const prepared = early ?? (await readPrepared(file, deps));
  if ('problem' in prepared) return finishWithoutImport(file, deps, prepared.problem, started);

  // Therapists are read without row locks; a commit that finds one changed meanwhile writes
  // nothing, and the file is planned again on fresh data.
  for (let attempt = 1; ; attempt++) {
    try {
      // The fast path's session (claimed with the reads) serves the first attempt only.
      const { report, runDrained } = await importOnce(file, prepared, deps, started, attempt === 1 ? early?.session : undefined);
      const deliveryId = runDrained && file.runId !== null ? await closeRunIfDrained(file.runId, deps) : null;
      log.info({ status: report.status, counts: report.counts, durationMs: report.durationMs, runClosed: deliveryId !== null }, 'therapist file imported');
      return report;
    } catch (err) {
      if (!deps.store.isConcurrentChange(err)) throw err;
      // Another process imported this file meanwhile (both claimed it: the CLI on a file a worker
      // was importing, a job run twice): its commit stands, this one writes nothing.
      const now = await deps.store.getFile(file.id);
      if (now && now.status !== 'importing') return { ...reportOf(now), alreadyDone: true };
      if (attempt >= 3) throw err;
      log.warn({ attempt }, 'therapists changed during the import: planning the file again');
    }
  }
}

async function importOnce(
  file: TherapistImportFileRow,
  { parsed, disagreements, match: m }: Prepared,
  deps: TherapistImportDeps,
  started: number,
  opened?: ImportSession,
): Promise<{ report: FileReport; runDrained: boolean }> {
  const session = opened ?? (await deps.store.openSession(m.lockKeys, { scope: m.scope, keys: m.keys, plzs: m.plzs }));
  try {
    const plan = planFile({ lines: parsed.lines, candidates: session.candidates, externalIds: session.externalIds });
    const now = deps.clock.now();
    const newIds = await session.reserveIds(plan.creates.length);
    const idOf = new Map<number, number>(plan.creates.map((c, i) => [c.placeholder, newIds[i]!]));
    const resolve = (id: number) => (id < 0 ? idOf.get(id)! : id);
    for (const l of plan.lines) if (l.therapistId !== null) l.therapistId = resolve(l.therapistId);
    const versionOf = new Map(session.candidates.map((c) => [c.id, c.version]));
    const updated = new Set(plan.updates.map((u) => u.therapistId));

    const counts = countLines(plan.lines, parsed.fileErrors, disagreements);
    assertCountsAddUp(counts, `file ${file.path}`);
    const status: FileOutcome['status'] = counts.failed > 0 || parsed.fileErrors.length > 0 ? 'partial' : 'imported';
    const outcome: FileOutcome = {
      status,
      reason: status === 'partial' ? partialReason(counts, parsed.fileErrors) : null,
      counts,
      fileErrors: parsed.fileErrors,
      metadataDisagreements: disagreements,
      failures: failuresOf(plan.lines),
      statusMismatches: mismatchesOf(plan.lines),
      replacedCorrections: replacedCorrectionsOf(plan.lines),
      finishedAt: now,
      durationMs: Math.round(performance.now() - started),
    };

    const events: Array<NewEvent<Record<string, unknown>>> = [];
    for (const l of plan.lines) {
      if (l.outcome === 'created') events.push({ eventType: 'therapist.created', key: l.therapistId!, payload: { therapistId: l.therapistId, fileId: file.id, source: 'scraper' }, occurredAt: now });
      if (l.outcome === 'updated')
        events.push({ eventType: 'therapist.updated', key: l.therapistId!, payload: { therapistId: l.therapistId, fileId: file.id, changedFields: l.changedFields }, occurredAt: now });
      if (l.outcome === 'deactivated')
        events.push({ eventType: 'therapist.deactivated', key: l.therapistId!, payload: { therapistId: l.therapistId, fileId: file.id, reason: 'deleted_by_scraper' }, occurredAt: now });
    }
    events.push(completedEvent(file, status, counts, now));

    const { runDrained } = await session.commit({
      inserts: plan.creates.map((c, i) => ({ id: newIds[i]!, ...c.fields })),
      updates: plan.updates.map((u) => ({ id: u.therapistId, version: versionOf.get(u.therapistId)!, ...u.changes })),
      deactivations: plan.deactivations.map((id) => ({ id, version: versionOf.get(id)! })),
      externalIds: {
        scope: m.scope,
        fileId: file.id,
        entries: [
          ...plan.mappings.map((x) => ({ key: x.externalId, therapistId: resolve(x.therapistId), deleted: false })),
          ...plan.tombstones.map((t) => ({ key: t.key, therapistId: t.therapistId === null ? null : resolve(t.therapistId), deleted: true })),
        ],
      },
      // A row written here is at this transaction's version; one left alone at the version read.
      scraped: plan.scraped.map((x) => ({
        id: resolve(x.therapistId),
        json: x.json,
        digest: x.digest,
        held: x.held,
        version: x.therapistId < 0 || updated.has(x.therapistId) ? null : versionOf.get(x.therapistId)!,
      })),
      events,
      file: { id: file.id, outcome },
      runId: file.runId,
      now,
    });
    return { report: reportOf({ ...file, ...outcome }), runDrained };
  } catch (err) {
    await session.rollback();
    throw err;
  }
}

function partialReason(c: TherapistImportCounts, fileErrors: string[]): string {
  const parts = [];
  if (c.failed) parts.push(`${c.failed} of ${c.total} therapists failed`);
  if (fileErrors.length) parts.push(`${fileErrors.length} file-level error(s)`);
  return parts.join('; ');
}

function completedEvent(file: TherapistImportFileRow, status: string, counts: TherapistImportCounts, now: Date): NewEvent<Record<string, unknown>> {
  return { eventType: 'therapist_import.completed', key: file.id, payload: { fileId: file.id, runId: file.runId, status, counts }, occurredAt: now };
}

async function closeRun(tx: ImportTx, runId: number | null, runPageUrl?: (runId: number) => string): Promise<string | null> {
  if (runId === null) return null;
  const closed = await tx.closeRunIfDrained(runId, summarizeRunFiles);
  if (!closed) return null;
  // A run left without files (the watcher opened it for a file another import registered
  // meanwhile) closes without telling staff "0 files, 0 therapists".
  if (closed.files.length === 0) return null;
  // A run that closed before has had its summary (a file of it was requeued and is done now):
  // staff read then that the file was not imported, so they get a follow-up with the new totals.
  const followUpOf = closed.run.summaryDeliveryId !== null && closed.run.closedAt ? closed.run.closedAt : undefined;
  return tx.queueSummary(runId, renderRunSummary(closed.run, closed.files, { runPageUrl: runPageUrl?.(runId), followUp: followUpOf !== undefined, replacedBy: closed.replacedBy }), followUpOf);
}

/**
 * A file that could not be imported at all: the row says why; the run may close. A file that
 * has ended meanwhile (committed before a later step failed) keeps its record: its stored
 * report is returned, `alreadyDone`.
 */
async function finishWithoutImport(
  file: TherapistImportFileRow,
  deps: TherapistImportDeps,
  o: { status: 'failed' | 'skipped'; code: string; reason: string; fileErrors: string[] },
  started: number,
): Promise<FileReport> {
  const now = deps.clock.now();
  const counts = { ...emptyCounts(), fileErrors: o.fileErrors.length };
  const outcome: FileOutcome = {
    status: o.status,
    reason: o.reason,
    counts,
    fileErrors: o.fileErrors,
    metadataDisagreements: [],
    failures: [],
    statusMismatches: [],
    replacedCorrections: [],
    finishedAt: now,
    durationMs: Math.round(performance.now() - started),
    errorCode: o.code,
  };
  const recorded = await deps.store.transaction(async (tx) => {
    if (!(await tx.finishFile(file.id, outcome))) return false;
    await tx.appendEvent(completedEvent(file, o.status, counts, now));
    // Ids and a code only: the reason names the file's path and may quote its text.
    if (o.status === 'failed') await tx.appendEvent({ eventType: 'import.failed', key: file.id, payload: { kind: 'therapist', fileId: file.id, runId: file.runId, errorCode: o.code }, occurredAt: now });
    return true;
  });
  if (!recorded) {
    const current = await deps.store.getFile(file.id);
    return { ...reportOf(current ?? file), alreadyDone: true };
  }
  // After the commit, like an imported file: of two last files finishing together, the later sees the run drained.
  if (file.runId !== null) await closeRunIfDrained(file.runId, deps);
  deps.log.warn({ fileId: file.id, status: o.status }, 'therapist file not imported');
  return reportOf({ ...file, ...outcome });
}

/**
 * Closes a run from outside a file import (the watcher sealed it, or a run was left open).
 * Returns its summary's delivery id; null when the run stays open, or closed without files.
 */
export async function closeRunIfDrained(runId: number, deps: Pick<TherapistImportDeps, 'store' | 'sendEmail' | 'runPageUrl'>): Promise<string | null> {
  const deliveryId = await deps.store.transaction((tx) => closeRun(tx, runId, deps.runPageUrl));
  if (deliveryId) await deps.sendEmail(deliveryId);
  return deliveryId;
}
