import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { Job } from 'bullmq';
import { Counter } from 'prom-client';
import {
  listExpiredCopies,
  discardLedgerRow,
  findLedgerByObject,
  getLedgerRow,
  committedBucketRows,
  failedBucketRows,
  failedOfSameRegistration,
  insertLedgerObjects,
  newerImports,
  openLedgerIds,
  readImportHead,
  recordLedgerObjects,
  recordedCopyPaths,
  reopenFailedLedgerRow,
  sweepExpiredCopies,
  type LocalCopy,
} from '../../libs/db/repositories/patient-import.js';
import { PermanentError } from '../../libs/errors/index.js';
import { oncePerRegistry } from '../../libs/metrics/index.js';
import type { DeadLetterHook } from '../../libs/ops/dead-letters.js';
import {
  catalog,
  describeZodError,
  jobIdFor,
  jobOptionsFor,
  nextScheduledRun,
  recordBucketPollSuccess,
  restoreMissingDeadLetters,
  withAbandoned,
  withSupersededAt,
  type Handlers,
} from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { createBucket, type BucketPort } from '../../libs/storage/index.js';
import { folderKeeper, isOwnCopy, removeSaved, removeStaleTemps } from './file-keeper.js';
import { pgImportStore } from './pg-store.js';
import { pollBucket, type PollDeps, type PollResult } from './process-bucket-poll.js';
import { processPatientImport, recordAbandonedImport, type ImportResult } from './process-patient-import.js';
import { sweepRetention, type RetentionResult } from './process-retention.js';
import { deleteLeftNextStep, failureNextStep, failureRemedy, newerImportNextStep } from './failure-remedy.js';
import type { ImportDeps, ImportRow, ImportSource } from './ports.js';

export { rejectCodes } from './parse-registration.js';
export { failureNextStep, failureRemedy, newerImportNextStep, type FailureRemedy, type NewerImport } from './failure-remedy.js';
export type { ImportResult, PollResult, RetentionResult };

export interface PatientImportOptions {
  /** The bucket (default: the configured driver). */
  bucket?: BucketPort;
  /** Test hook: runs right after the import transaction committed, before the delete. */
  afterCommit?: () => void | Promise<void>;
}

function bucketSource(bucket: BucketPort): ImportSource {
  return {
    async download(row: ImportRow) {
      if (row.source !== 'bucket' || row.bucket !== bucket.bucket) {
        throw new PermanentError('not_in_bucket', `ledger ${row.id}: the file is not in the configured bucket`);
      }
      return bucket.download(row.objectName, row.generation, row.md5Hash ? { md5Hash: row.md5Hash } : {});
    },
    currentGeneration: async (row) => (await bucket.stat(row.objectName))?.generation ?? null,
    delete: (row) => (row.source === 'bucket' ? bucket.deleteGeneration(row.objectName, row.generation) : Promise.resolve('kept' as const)),
  };
}

function importDeps(ctx: FleetContext, source: ImportSource, opts: PatientImportOptions): ImportDeps {
  const c = ctx.config.patientImport;
  return {
    store: pgImportStore({ db: ctx.database.db, clock: ctx.clock, mail: { from: ctx.config.mail.from, staffEmail: ctx.config.mail.staffEmail } }),
    source,
    backups: folderKeeper(c.backupDir),
    failed: folderKeeper(c.failedDir),
    sendMail: async (deliveryId) => {
      await ctx.queues.enqueue('email-send', { deliveryId });
    },
    signing: { secret: c.signingSecret, environment: c.environment },
    staffImportEmails: c.staffImportEmails,
    maxFileBytes: c.maxFileBytes,
    dashboardUrl: ctx.config.http.dashboardUrl,
    clock: ctx.clock,
    log: ctx.log,
    ...(opts.afterCommit ? { afterCommit: opts.afterCommit } : {}),
  };
}

/** Handlers of the `patient-import` queue. */
export function patientImportHandlers(ctx: FleetContext, opts: PatientImportOptions = {}): Handlers {
  const bucket = opts.bucket ?? createBucket(ctx.config.storage);
  const deps = importDeps(ctx, bucketSource(bucket), opts);
  return {
    'patient-import': withAbandoned<'patient-import'>(
      (payload, helpers) => processPatientImport(payload.ledgerId, { ...deps, log: helpers.log }, { finalAttempt: helpers.isFinalAttempt, carried: helpers.carriedThroughOutage }),
      (payload, reason, log) => recordAbandonedImport(payload.ledgerId, reason, { ...deps, log }),
    ),
  };
}

/**
 * Enqueues one `patient-import` job per ledger id (keyed by the id, so a row already queued
 * is not queued twice). New rows go in bulk (one Redis round trip per 500 jobs); for open
 * rows, a job that finished while its row is still open is run again.
 */
async function enqueueImports(ctx: FleetContext, ids: number[], kind: 'new' | 'open'): Promise<void> {
  const queue = ctx.queues.queue('patient-import');
  if (kind === 'new') {
    const def = catalog['patient-import'];
    const opts = jobOptionsFor('patient-import', ctx.queues.backoffScale);
    for (let i = 0; i < ids.length; i += 500) {
      const jobs = ids.slice(i, i + 500).map((ledgerId) => {
        const parsed = def.schema.safeParse({ ledgerId });
        if (!parsed.success) throw new PermanentError('invalid_payload', `job patient-import: ${describeZodError(parsed.error)}`);
        return { name: 'patient-import', data: parsed.data, opts: { ...opts, jobId: jobIdFor('patient-import', parsed.data)! } };
      });
      await queue.addBulk(jobs);
    }
    return;
  }
  for (let i = 0; i < ids.length; i += 100) {
    await Promise.all(
      ids.slice(i, i + 100).map(async (ledgerId) => {
        const { jobId } = await ctx.queues.enqueue('patient-import', { ledgerId });
        const job: Job | undefined = await queue.getJob(jobId);
        // A completed job for an open row (it finished just as an operator reopened the row): run it again.
        if (job && (await job.getState()) === 'completed') {
          await job.remove();
          await ctx.queues.enqueue('patient-import', { ledgerId });
        }
      }),
    );
  }
}

/**
 * Failed bucket rows wait for an operator through their dead letter. When Redis restarted
 * without its data, the dead letters are gone while the ledger still says failed: `fleet dlq`
 * and /ops would show nothing to requeue or discard. Each such row gets its dead letter back
 * (the reason without values from the file, as dead letters always carry it), checked under the
 * entry's lock against the row as it is then (an operator's requeue or discard in between wins).
 * The rows that have theirs, the usual case, cost one listing of the dead letters.
 */
export async function restoreDeadLetters(ctx: FleetContext): Promise<number> {
  const db = ctx.database.db;
  const records = (await failedBucketRows(db)).map((r) => ({
    entry: {
      originalQueue: 'patient-import',
      originalJobId: jobIdFor('patient-import', { ledgerId: r.id })!,
      name: 'patient-import',
      data: { ledgerId: r.id },
      reason: r.reasonWithheld ?? `ledger ${r.id}: (reason not shown here: fleet imports show ${r.id})`,
      code: r.errorCode,
      attemptsMade: r.attempts,
      enqueuedAt: null,
      failedAt: (r.failedAt ?? r.updatedAt).toISOString(),
    },
    stillWanted: async () => (await readImportHead(db, r.id))?.status === 'failed',
  }));
  return restoreMissingDeadLetters(ctx.queues, 'patient-import', records, (data) => (data as { ledgerId?: unknown } | null)?.ledgerId);
}

/**
 * Lists the bucket once and enqueues the imports (the `bucket-poll` job and `fleet poll`); a poll
 * that went through is recorded as the last successful one.
 */
export async function runPoll(ctx: FleetContext, opts: { bucket?: BucketPort; onPage?: PollDeps['onPage'] } = {}): Promise<PollResult> {
  const bucket = opts.bucket ?? createBucket(ctx.config.storage);
  const db = ctx.database.db;
  const result = await pollBucket({
    bucket,
    prefix: ctx.config.storage.prefix,
    pageSize: ctx.config.patientImport.pageSize,
    ...(opts.onPage ? { onPage: opts.onPage } : {}),
    record: (objects) =>
      recordLedgerObjects(
        db,
        objects.map((o) => ({
          bucket: o.bucket,
          objectName: o.name,
          generation: o.generation,
          sourceUri: bucket.uri(o.name),
          size: o.size,
          md5Hash: o.md5Hash ?? null,
          crc32c: o.crc32c ?? null,
        })),
      ),
    openIds: () => openLedgerIds(db, { source: 'bucket' }),
    enqueue: (ids, kind) => enqueueImports(ctx, ids, kind),
    restoreDeadLetters: () => restoreDeadLetters(ctx),
    log: ctx.log,
  });
  await recordBucketPollSuccess(ctx.queues, ctx.clock.now());
  return result;
}

/**
 * Handlers of the `bucket-poll` queue. A listing error throws: logged, counted, retried up to the
 * next scheduled poll (POLL_CRON's next run after the job's own cron time, or after it was added:
 * a start's poll, a manual one), which lists every registration and unfinished import again; the
 * failed poll then ends without a dead letter (superseded).
 */
export function bucketPollHandlers(ctx: FleetContext, opts: { bucket?: BucketPort } = {}): Handlers {
  const bucket = opts.bucket ?? createBucket(ctx.config.storage);
  const schedule = { pattern: ctx.config.patientImport.pollCron, timeZone: ctx.config.patientImport.pollTimeZone };
  return {
    'bucket-poll': withSupersededAt<'bucket-poll'>(
      async (payload, helpers) => {
        const result = await runPoll({ ...ctx, log: helpers.log }, { bucket });
        return { trigger: payload.trigger, ...result };
      },
      (_payload, job) => nextScheduledRun(schedule, job.scheduledAt ?? job.enqueuedAt),
    ),
  };
}

/**
 * Operator actions on dead-lettered imports keep the ledger in step. Before a requeue, /ops and
 * `fleet dlq list` say where it cannot help (the file's content or name is wrong, the object is
 * gone, or the registration was imported since): /ops offered the button with nothing said, and a
 * requeued file whose content is wrong was back a moment later. Such advice is `futile`: a requeue
 * is refused unless forced, and a requeue-all skips it.
 */
export const patientImportDeadLetterHook: DeadLetterHook = {
  async requeueAdvice(payloads, db) {
    const ids = payloads.map((p) => {
      const id = (p as { ledgerId?: unknown } | null)?.ledgerId;
      return typeof id === 'number' ? id : null;
    });
    const known = ids.filter((id): id is number => id !== null);
    const failed = new Map((await failedBucketRows(db, known)).map((r) => [r.id, r]));
    const committed = new Map((await committedBucketRows(db, known.filter((id) => !failed.has(id)))).map((r) => [r.id, r]));
    const newer = await newerImports(db, known.filter((id) => failed.has(id)));
    return ids.map((id) => {
      if (id === null) return undefined;
      const done = committed.get(id);
      if (done) return deleteLeftNextStep(done);
      const row = failed.get(id);
      if (!row) return undefined;
      const since = newer.get(row.id);
      if (since) return { text: newerImportNextStep(row, since), futile: true };
      const remedy = failureRemedy(row.errorCode);
      if (remedy === 'requeue') return undefined;
      // Content or name wrong, or the object gone: the requeued job fails the same way again (one more
      // import.failed event each time). Wrong settings or a too-small limit: a requeue helps once fixed.
      return { text: failureNextStep({ ...row, source: 'bucket' }), futile: remedy === 'corrected-upload' || remedy === 'rename' || remedy === 'object-gone' };
    });
  },
  async onRequeue(payload, db) {
    const ledgerId = (payload as { ledgerId?: number }).ledgerId;
    if (typeof ledgerId === 'number') await reopenFailedLedgerRow(db, ledgerId);
  },
  async onDiscard(payload, db) {
    const ledgerId = (payload as { ledgerId?: number }).ledgerId;
    if (typeof ledgerId === 'number') await discardLedgerRow(db, ledgerId);
  },
};

export interface LocalImportOutcome {
  ledgerId: number;
  ok: boolean;
  result?: ImportResult;
  code?: string;
  reason?: string;
  /** Imported (or a duplicate): failed bucket records of the same registration token, whose dead letters are left to discard. */
  failedBucketRecords?: number[];
}

/**
 * Imports a local file (one staff got by other means) through the same pipeline: ledger
 * row (source `file`, generation = sha256 of the bytes, so the same file twice is one row),
 * backup, validation, duplicate checks, the one transaction, staff email. Nothing is deleted.
 */
export async function importLocalFile(ctx: FleetContext, filePath: string): Promise<LocalImportOutcome> {
  const abs = path.resolve(filePath);
  const bytes = await readFile(abs);
  const generation = createHash('sha256').update(bytes).digest('hex');
  const objectName = path.basename(abs);
  const db = ctx.database.db;
  const base = { source: 'file' as const, bucket: '(local file)', objectName, generation };
  await insertLedgerObjects(db, [{ ...base, sourceUri: `file://${abs}`, size: bytes.length }]);
  const row = await findLedgerByObject(db, base.bucket, objectName, generation);
  if (!row) throw new Error('the ledger row of the local file was not recorded');
  if (row.status === 'failed') await reopenFailedLedgerRow(db, row.id);
  const source: ImportSource = { download: async () => bytes, currentGeneration: async () => generation, delete: async () => 'kept' };
  try {
    const result = await processPatientImport(row.id, importDeps(ctx, source, {}));
    const settled = result.outcome === 'imported' || result.outcome === 'duplicate' || (result.outcome === 'already-final' && result.status !== 'discarded');
    const failedBucketRecords = settled ? await failedOfSameRegistration(db, row.id) : [];
    return { ledgerId: row.id, ok: true, result, ...(failedBucketRecords.length ? { failedBucketRecords } : {}) };
  } catch (err) {
    if (err instanceof PermanentError) {
      // The ledger keeps the reason for staff (with the values quoted from the file).
      const failed = await getLedgerRow(db, row.id);
      return { ledgerId: row.id, ok: false, code: err.code, reason: failed?.reason ?? err.message };
    }
    throw err;
  }
}

const retentionMetrics = oncePerRegistry((registry) => {
  const removed = new Counter({
    name: 'fleet_patient_import_copies_removed_total',
    help: 'Local copies of registration files the retention sweep removed (or found already gone) and recorded, by folder (backup, failed)',
    labelNames: ['folder'],
    registers: [registry],
  });
  // Exported from the start (the sweep runs once a night), so /metrics shows it before the first run.
  for (const folder of ['backup', 'failed']) removed.inc({ folder }, 0);
  return removed;
});

/** Files in a copy folder that no import record points to: how many, and the records their names begin with. */
export interface UnrecordedCopies {
  files: number;
  /** Ledger ids from the names (`<id>-<object name>`), for `fleet imports show`; a file without one is counted only. */
  records: number[];
}

/**
 * Files in BACKUP_DIR and FAILED_DIR that no ledger row points to. The retention sweep removes
 * only what a row records, so these would stay for ever: a row whose path was lost (a requeued
 * row's second failure cleared it before that was fixed), or a file put there by hand. Reported,
 * never removed: nothing says what they are. Names are not returned (they hold patient names).
 */
export async function unrecordedCopies(ctx: FleetContext): Promise<Record<LocalCopy, UnrecordedCopies>> {
  const c = ctx.config.patientImport;
  const one = async (copy: LocalCopy, dir: string): Promise<UnrecordedCopies> => {
    const root = path.resolve(dir);
    let names: string[];
    try {
      names = (await readdir(root, { withFileTypes: true })).filter((d) => d.isFile() && !d.name.startsWith('.')).map((d) => d.name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { files: 0, records: [] };
      throw err;
    }
    const known = new Set([...(await recordedCopyPaths(ctx.database.db, copy))].map((p) => path.resolve(p)));
    const unknown = names.filter((n) => !known.has(path.join(root, n)));
    const records = unknown.map((n) => /^(\d+)-/.exec(n)?.[1]).filter((x): x is string => x !== undefined).map(Number);
    return { files: unknown.length, records: [...new Set(records)].sort((a, b) => a - b) };
  };
  return { backup: await one('backup', c.backupDir), failed: await one('failed', c.failedDir) };
}

/** A temporary copy older than this is one a crash left (writeDurably takes milliseconds). */
const STALE_TEMP_MS = 3_600_000;

/**
 * Removes the temporary files a process that died while writing a copy left in BACKUP_DIR and
 * FAILED_DIR (hidden `.<name>.<hex>.tmp`, older than an hour): they hold a whole registration and
 * no record points to them, so neither the sweep nor `unrecordedCopies` would ever see them.
 * `dryRun`: counts only. Counts per folder.
 */
export async function removeStaleTempCopies(ctx: FleetContext, opts: { dryRun?: boolean } = {}): Promise<Record<LocalCopy, number>> {
  const c = ctx.config.patientImport;
  const before = new Date(ctx.clock.now().getTime() - STALE_TEMP_MS);
  return { backup: await removeStaleTemps(c.backupDir, before, opts), failed: await removeStaleTemps(c.failedDir, before, opts) };
}

/**
 * One retention sweep of the local copies (the scheduled job and `fleet retention run`): removes
 * copies of final rows past BACKUP_RETENTION_DAYS / FAILED_RETENTION_DAYS and records it on the
 * row. `dryRun`: only counts what it would remove.
 */
export async function runRetention(ctx: FleetContext, opts: { dryRun?: boolean } = {}): Promise<RetentionResult> {
  const c = ctx.config.patientImport;
  const db = ctx.database.db;
  const removed = retentionMetrics(ctx.metrics.registry);
  return sweepRetention(
    {
      store: {
        listExpired: (copy, q) => listExpiredCopies(db, copy, q),
        sweepBatch: (copy, q, remove) => sweepExpiredCopies(db, copy, q, remove),
      },
      remove: { backup: (rows) => removeSaved(c.backupDir, rows), failed: (rows) => removeSaved(c.failedDir, rows) },
      isOwnCopy: { backup: (row) => isOwnCopy(c.backupDir, row), failed: (row) => isOwnCopy(c.failedDir, row) },
      days: { backup: c.retention.backupDays, failed: c.retention.failedDays },
      clock: ctx.clock,
      log: ctx.log,
      onRecorded: (copy, n) => removed.inc({ folder: copy }, n),
    },
    opts,
  );
}

/**
 * Handlers of the `patient-import-retention` queue. Copies that could not be removed fail the job
 * after the rest are done (retried; the counts and reasons are in the log, never a file name).
 */
export function retentionHandlers(ctx: FleetContext): Handlers {
  retentionMetrics(ctx.metrics.registry);
  return {
    'patient-import-retention': async (_payload, helpers) => {
      const r = await runRetention({ ...ctx, log: helpers.log });
      if (r.problems.length) {
        throw new Error(`retention sweep: ${r.backup.failed + r.failed.failed} local copies could not be removed (${r.problems.join('; ')})`);
      }
      return r;
    },
  };
}
