import path from 'node:path';
import type { Job } from 'bullmq';
import * as repo from '../../libs/db/repositories/therapist-import.js';
import type { DeadLetterHook } from '../../libs/ops/dead-letters.js';
import { PermanentError } from '../../libs/errors/index.js';
import { catalog, describeZodError, jobOptionsFor, restoreMissingDeadLetters, therapistImportJobId, withAbandoned, type Handlers } from '../../libs/queues/index.js';
import { workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import {
  closeRunIfDrained,
  processTherapistFile,
  recordAbandonedFile,
  reportOf,
  sha256,
  type FileHint,
  type FileReport,
  type TherapistImportDeps,
} from './process-therapist-file.js';
import { registerTherapistImportGauges, therapistImportMetrics } from './metrics.js';
import { postgresTherapistImportStore } from './store.js';
import { FileTooLargeError, NotRegularFileError, readRegularFile } from './file-size.js';

/** What the scraper watcher needs of the size limit (SCRAPER_FILE_MAX_MB). */
export { FileTooLargeError, fileKindOf, NOT_REGULAR_REASON, sha256OfFile, tooLargeReason } from './file-size.js';

export { formatShare, countWithShare, assertCountsAddUp, COUNT_LABELS, isOutcomeCount, metadataDisagreementText, metadataFoundText, outcomeKeys, notReadText } from './report.js';
export type { FileReport };
export { reportOf };
export { therapistImportMetrics };

/** A tracked path as stored (relative to the drop folder) -> the file on disk. */
export function resolveDropPath(dropDir: string, p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(dropDir, p);
}

export function therapistImportDeps(ctx: FleetContext): TherapistImportDeps {
  const dropDir = ctx.config.therapistImport.dropDir;
  return {
    store: postgresTherapistImportStore(ctx.database, { from: ctx.config.mail.from, to: ctx.config.mail.staffEmail }),
    readFile: async (p) => {
      return readRegularFile(resolveDropPath(dropDir, p), ctx.config.therapistImport.maxFileBytes);
    },
    sendEmail: async (deliveryId) => {
      await ctx.queues.enqueue('email-send', { deliveryId });
    },
    clock: ctx.clock,
    log: ctx.log,
    metrics: therapistImportMetrics(ctx.metrics),
    runPageUrl: ctx.config.http.dashboardUrl ? (runId) => `${ctx.config.http.dashboardUrl}/therapist-imports/runs/${runId}` : undefined,
  };
}

/** Handlers of the `therapist-import` queue. */
export function therapistImportHandlers(ctx: FleetContext): Handlers {
  const deps = therapistImportDeps(ctx);
  return {
    'therapist-import': withAbandoned<'therapist-import'>(
      (payload, helpers) => processTherapistFile(payload, { ...deps, log: helpers.log }, { isFinalAttempt: helpers.isFinalAttempt, carried: helpers.carriedThroughOutage }),
      (payload, reason, log) => recordAbandonedFile(payload.fileId, reason, { ...deps, log }),
    ),
  };
}

/**
 * The job's payload for a tracked file: its id, and what lets the worker read it before
 * claiming it. Not for a file outside the drop folder (a CLI import): its absolute path may
 * name a person (a home folder) and stays out of the queue.
 */
function payloadOf(file: repo.TherapistImportFileRow): { fileId: number; file?: FileHint } {
  if (!file.contentHash || path.isAbsolute(file.path)) return { fileId: file.id };
  return { fileId: file.id, file: { path: file.path, contentHash: file.contentHash, postcode: file.postcode } };
}

/**
 * Enqueues the import of a tracked file, keyed by its content hash. Urgent files get the
 * higher priority. A job that already finished while the row is still open (a crash between
 * the two) is retried. A job waiting already takes the row's priority: a waiting file moved to
 * urgent/ keeps its job id, and adding that id again does not change the job.
 */
export async function enqueueTherapistFile(ctx: FleetContext, file: repo.TherapistImportFileRow, opts: { fresh?: boolean } = {}): Promise<void> {
  const jobId = therapistImportJobId(file.contentHash ?? 'none', file.id);
  const priority = file.urgent ? 1 : 10;
  await ctx.queues.enqueue('therapist-import', payloadOf(file), { jobId, priority });
  if (opts.fresh) return; // a row registered just now: no earlier job can have finished
  const job: Job | undefined = await ctx.queues.queue('therapist-import').getJob(jobId);
  if (!job) return;
  if (await job.isCompleted()) {
    const row = await repo.getFile(ctx.database.db, file.id);
    if (row && (row.status === 'queued' || row.status === 'importing')) await job.retry('completed');
  } else if (job.priority !== priority) {
    await job.changePriority({ priority });
  }
}

/**
 * Enqueues files registered just now (no earlier job can have finished) in bulk: one Redis
 * round trip per 500 jobs, same job ids, priorities, options and payload validation as
 * `enqueueTherapistFile`.
 */
export async function enqueueFreshTherapistFiles(ctx: FleetContext, files: repo.TherapistImportFileRow[]): Promise<void> {
  const def = catalog['therapist-import'];
  const opts = jobOptionsFor('therapist-import', ctx.queues.backoffScale);
  const queue = ctx.queues.queue(def.queue);
  for (let i = 0; i < files.length; i += 500) {
    const jobs = files.slice(i, i + 500).map((file) => {
      const parsed = def.schema.safeParse(payloadOf(file));
      if (!parsed.success) throw new PermanentError('invalid_payload', `job therapist-import: ${describeZodError(parsed.error)}`);
      return {
        name: 'therapist-import',
        data: parsed.data,
        opts: { ...opts, jobId: therapistImportJobId(file.contentHash ?? 'none', file.id), priority: file.urgent ? 1 : 10 },
      };
    });
    await queue.addBulk(jobs);
  }
}

/** Closes a run whose files are all done (after the watcher sealed it) and sends its summary. */
export function closeTherapistRun(ctx: FleetContext, runId: number): Promise<string | null> {
  return closeRunIfDrained(runId, therapistImportDeps(ctx));
}

export class TherapistFileError extends Error {
  override name = 'TherapistFileError';
}

/** An import of the file's postcode from a later scrape than the file's, as the refusal names it. */
export interface NewerScrapeImport {
  id: number;
  path: string;
  status: string;
  /** YYYYMMDD: its date folder. */
  scrapeDate: string;
}

/**
 * `fleet import therapist-file` of a file older than an import of its postcode (the watcher's
 * "newest date folder wins" rule): not imported unless forced, nothing recorded (as the CLI's other
 * refusals); the message names the newer import record and both dates.
 */
export class OlderScrapeError extends TherapistFileError {
  override name = 'OlderScrapeError';
  constructor(
    filePath: string,
    readonly fileScrapeDate: string,
    readonly newer: NewerScrapeImport,
  ) {
    super(
      `${filePath}: not imported: postcode ${path.basename(filePath, '.json')} has a newer scrape imported, import record ${newer.id} (${newer.path}, scrape of ${dashed(newer.scrapeDate)}, ${newer.status}); ` +
        `this file (scrape of ${dashed(fileScrapeDate)}) would write older data over it. Details: fleet imports show ${newer.id} --kind therapist. To import it all the same: --force`,
    );
  }
}

/** 20251008 -> 2025-10-08. */
const dashed = (d: string) => `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`;

/**
 * The scrape date of a file (YYYYMMDD): its date folder, else its metadata's `scrape_date`; null
 * when it has neither (or the file is no JSON: the import reports that).
 */
function scrapeDateOf(dateFolder: string | null, buf: Buffer): string | null {
  if (dateFolder) return dateFolder;
  try {
    const meta = (JSON.parse(buf.toString('utf8')) as { metadata?: { scrape_date?: unknown } } | null)?.metadata;
    const m = typeof meta?.scrape_date === 'string' ? /^(\d{4})-(\d{2})-(\d{2})/.exec(meta.scrape_date) : null;
    return m ? `${m[1]}${m[2]}${m[3]}` : null;
  } catch {
    return null;
  }
}

/**
 * `fleet import therapist-file <path>`: registers the file as a run of its own and imports it
 * in this process through the same processor and store as the worker. A content hash that
 * was imported before is not imported again: its stored report is returned.
 */
export async function importTherapistFileNow(
  ctx: FleetContext,
  filePath: string,
  opts: { force?: boolean } = {},
): Promise<FileReport & { forcedOver?: NewerScrapeImport }> {
  const dropDir = path.resolve(ctx.config.therapistImport.dropDir);
  const abs = path.resolve(filePath);
  let buf: Buffer;
  try {
    buf = await readRegularFile(abs, ctx.config.therapistImport.maxFileBytes);
  } catch (err) {
    if (err instanceof NotRegularFileError) throw new TherapistFileError(`${filePath}: not a file (${err.kind})`);
    if (err instanceof FileTooLargeError) {
      const mb = Math.ceil(err.sizeBytes / 1024 / 1024);
      throw new TherapistFileError(
        `${filePath}: not read: ${err.message} (an import needs ~10 MB of memory per MB of file; on a machine with ${mb * 10 + 200} MB to spare, SCRAPER_FILE_MAX_MB=${mb} imports it)`,
      );
    }
    throw new TherapistFileError(`${filePath}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const hash = sha256(buf);
  const before = await repo.findLiveByHash(ctx.database.db, hash);
  if (before && before.status !== 'queued' && before.status !== 'importing') return { ...reportOf(before), alreadyDone: true };

  const rel = path.relative(dropDir, abs);
  const stored = rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel.split(path.sep).join('/') : abs;
  const m = /^(\d{5})\.json$/.exec(path.basename(abs));
  const dm = /(?:^|\/)(\d{8})\/\d{5}\.json$/.exec(stored);
  // The watcher imports only the newest date folder of a postcode; by hand, an older scrape than
  // one imported would write its older values over the newer ones (staff data among them).
  const scrapeDate = m ? scrapeDateOf(dm?.[1] ?? null, buf) : null;
  const tomorrow = new Date(ctx.clock.now().getTime() + 86_400_000).toISOString().slice(0, 10).replace(/-/g, '');
  const newerRow = m && scrapeDate ? await repo.newerImportOfPostcode(ctx.database.db, m[1]!, scrapeDate, tomorrow) : null;
  const newer = newerRow ? { id: newerRow.id, path: newerRow.path, status: newerRow.status, scrapeDate: newerRow.dateFolder } : null;
  if (newer && !opts.force) throw new OlderScrapeError(filePath, scrapeDate!, newer);
  let fileId: number;
  if (before) {
    fileId = before.id;
  } else {
    const runId = await repo.openRun(ctx.database.db, 'cli', 'sealed');
    const { file } = await repo.registerFile(ctx.database.db, {
      runId,
      path: stored,
      postcode: m?.[1] ?? null,
      dateFolder: dm?.[1] ?? null,
      urgent: stored.startsWith('urgent/'),
      contentHash: hash,
      sizeBytes: buf.length,
    });
    fileId = file.id;
  }
  const deps = therapistImportDeps(ctx);
  // The summary is queued in the database with the run's close; only handing it to the email
  // queue needs Redis. Redis away is no reason to report a committed import as failed: the email
  // sweep sends a pending summary.
  const sendEmail = (deliveryId: string) =>
    deps.sendEmail(deliveryId).catch((err: unknown) => ctx.log.warn({ err, deliveryId }, 'therapist import: staff summary not handed to the email queue now (Redis?); the email sweep sends it'));
  const report = await processTherapistFile({ fileId }, { ...deps, sendEmail }, { isFinalAttempt: true });
  if (newer) ctx.log.warn({ fileId, newerFileId: newer.id }, 'therapist file imported by hand over a newer scrape of its postcode (--force)');
  return newer ? { ...report, forcedOver: newer } : report;
}

/**
 * Dead-letter bookkeeping: requeue puts the file back to `queued`; discard leaves it `failed`,
 * marked as discarded (its dead letter is not restored after Redis lost its data). A file
 * imported before its job failed (killed twice after the commit: the crash drill) has a dead
 * letter with nothing left to do, and /ops and `fleet dlq list` say so.
 */
export const therapistImportDeadLetterHook: DeadLetterHook = {
  async requeueAdvice(payloads, db) {
    const ids = payloads.map((p) => {
      const fileId = (p as { fileId?: unknown } | null)?.fileId;
      return typeof fileId === 'number' ? fileId : null;
    });
    const statuses = await repo.fileStatuses(db, ids.filter((id): id is number => id !== null));
    return ids.map((fileId) => {
      const status = fileId === null ? undefined : statuses.get(fileId);
      if (status !== 'imported' && status !== 'partial') return undefined;
      const how = status === 'partial' ? ' (partial)' : '';
      return `File ${fileId} was imported${how} before its job failed: nothing is left to do. A requeue runs the job, which finds the file done and writes nothing; discard this dead letter.`;
    });
  },
  async onRequeue(payload, db) {
    const fileId = (payload as { fileId?: unknown }).fileId;
    if (typeof fileId === 'number') await repo.requeueFile(db, fileId);
  },
  async onDiscard(payload, db) {
    const fileId = (payload as { fileId?: unknown }).fileId;
    if (typeof fileId === 'number') await repo.markDeadLetterDiscarded(db, fileId, new Date());
  },
};

/**
 * Files that failed their job wait for an operator through their dead letter. When Redis
 * restarted without its data, the dead letters are gone while the files still say failed:
 * `fleet dlq` and /ops would offer nothing to requeue or discard. Each such file gets its dead
 * letter back (the reason the file's row holds: the job's error, no values from the file),
 * checked under the entry's lock against the row as it is then. Files an operator discarded
 * stay without, also when the discard is in the audit table only (an earlier release's), and a
 * file whose dead letter waits under an earlier release's job id (the content hash alone) gets
 * no second one. The watcher runs this every SCHEDULE_CHECK_MS; the usual case costs one query
 * (and one listing of the dead letters when files wait).
 */
export async function restoreTherapistDeadLetters(ctx: FleetContext): Promise<number> {
  const db = ctx.database.db;
  let files = await repo.filesAwaitingOperator(db);
  if (!files.length) return 0;
  // A discard the file does not record (an earlier release's) is in the audit table.
  if (await repo.markDiscardsFromAudit(db)) files = await repo.filesAwaitingOperator(db);
  const records = files.map((f) => ({
    entry: {
      originalQueue: 'therapist-import',
      originalJobId: therapistImportJobId(f.contentHash ?? 'none', f.id),
      name: 'therapist-import',
      data: { fileId: f.id },
      reason: f.reason ?? `file ${f.id}: failed (fleet imports show ${f.id} --kind therapist)`,
      code: f.errorCode,
      attemptsMade: f.attempts,
      enqueuedAt: null,
      failedAt: (f.finishedAt ?? f.discoveredAt).toISOString(),
    },
    stillWanted: () => repo.fileAwaitsOperator(db, f.id),
  }));
  // By the file, not the job id: a dead letter of an earlier release has the content hash alone.
  return restoreMissingDeadLetters(ctx.queues, 'therapist-import', records, (data) => (data as { fileId?: unknown } | null)?.fileId);
}

export { repo as therapistImportRepo };

/** The `therapist-import` role: the worker of the therapist-import queue. */
export function therapistImportComponents(ctx: FleetContext): Component[] {
  registerTherapistImportGauges(ctx);
  return [workerComponent(ctx, 'therapist-import', therapistImportHandlers(ctx))];
}
