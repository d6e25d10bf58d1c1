import { DelayedError, UnrecoverableError, Worker, type Job, type MinimalJob } from 'bullmq';
import type { Redis } from 'ioredis';
import { errorMessage, isPermanent, withoutQueryData } from '../errors/index.js';
import type { Logger } from '../log/index.js';
import type { Metrics } from '../metrics/index.js';
import { settlesWithin } from '../runtime/within.js';
import { CAPPED_BACKOFF, catalog, deadLetterQueueName, jobNames, retryDelayMs, type JobName, type Payload } from './catalog.js';
import { clusterSafePrefix } from './connection.js';
import { addDeadLetter, deadLetterFromJob } from './dead-letter.js';
import { describeZodError, type QueueSet } from './queue-set.js';

export interface JobHelpers {
  log: Logger;
  jobId: string;
  /** 1 for the first run. */
  attempt: number;
  maxAttempts: number;
  /** True when a thrown error will not be retried: do the final failure bookkeeping now. */
  isFinalAttempt: boolean;
  /**
   * Whether a failure with `err` is carried through an outage (see OutageCarry): not counted,
   * retried also on the last attempt, so no final failure bookkeeping for it.
   */
  carriedThroughOutage?(err: unknown): boolean;
  updateProgress(progress: number | object): Promise<void>;
  /**
   * For a job a job scheduler produced: the moment it was scheduled for (its cron time), which
   * the host that released it had reached; null for a job added any other way.
   */
  scheduledAt?: Date | null;
}

/**
 * A processor: the payload (already validated against the catalog) and a few helpers.
 * `abandoned`, when set, does the family's final failure bookkeeping for a job that failed
 * outside the processor (its worker died while running it, more often than BullMQ allows), so
 * that job's row ends as one out of retries does instead of waiting unseen.
 */
export type Handler<N extends JobName> = ((payload: Payload<N>, helpers: JobHelpers) => Promise<unknown>) & {
  abandoned?: (payload: Payload<N>, reason: string, log: Logger) => Promise<void>;
  /**
   * When a later run does all of this job's work again (the next scheduled run of its family):
   * a failed attempt whose retry could not begin before that moment (by the family's full
   * backoff delay, jitter only shortens it) ends the job, failed but superseded, without a dead
   * letter (give such a family attempts enough to reach that run: they remain the limit). null:
   * retried and dead-lettered as its attempts allow. A PermanentError is dead-lettered at once as
   * always. `job.scheduledAt`: the cron time of a job a job scheduler produced (else null);
   * `job.enqueuedAt`: when it was added.
   */
  supersededAt?: (payload: Payload<N>, job: { scheduledAt: Date | null; enqueuedAt: Date }) => Date | null;
};

/**
 * The error a job ends with when the run that does its work again comes before its next retry
 * could (see `Handler.supersededAt`): not retried (an UnrecoverableError for BullMQ), no dead letter.
 */
export class JobSuperseded extends UnrecoverableError {
  constructor(readonly supersededBy: Date, cause: string) {
    super(`superseded by the run scheduled for ${supersededBy.toISOString()} (a retry could not begin before it): ${cause}`);
  }
}

/** A handler whose failed jobs a later run supersedes (see `Handler.supersededAt`). */
export function withSupersededAt<N extends JobName>(
  run: (payload: Payload<N>, helpers: JobHelpers) => Promise<unknown>,
  supersededAt: NonNullable<Handler<N>['supersededAt']>,
): Handler<N> {
  return Object.assign(run, { supersededAt });
}

/** A handler with its bookkeeping for a job that failed outside it (see `Handler`). */
export function withAbandoned<N extends JobName>(
  run: (payload: Payload<N>, helpers: JobHelpers) => Promise<unknown>,
  abandoned: (payload: Payload<N>, reason: string, log: Logger) => Promise<void>,
): Handler<N> {
  return Object.assign(run, { abandoned });
}
export type Handlers = { [N in JobName]?: Handler<N> };

export interface BindOptions {
  /** A worker connection (retries Redis forever). */
  connection: Redis;
  prefix: string;
  log: Logger;
  metrics: Metrics;
  /** Producer side, used to write dead letters. */
  queues: QueueSet;
  concurrency: number;
  /** Lock duration for long jobs; BullMQ's default is 30 s. */
  lockDurationMs?: number;
  /** How often stalled jobs (their worker died) are looked for; BullMQ's default is 30 s. */
  stalledIntervalMs?: number;
  /**
   * Told of each attempt that failed and will be retried (not the final one, not a superseded
   * one), with the error: the runtime runs such a job at once when the database it could not
   * reach is back, instead of at the end of its retry delay (`resumeAfterOutage`).
   */
  onRetrying?: (queue: string, jobId: string, err: unknown) => void;
  /** Attempts that failed because a service was out of reach do not use up the job's attempts (see OutageCarry). */
  outage?: OutageCarry;
}

/**
 * Carries jobs through an outage of a service they need (PostgreSQL): an attempt that failed
 * because it could not be reached is not counted against the job's attempts while the job is
 * younger than `carryMs` (from when it was queued); it is moved back to its delay as BullMQ's
 * `moveToDelayed` does (`attemptsMade` stays), tried again after a delay that doubles from its
 * next retry delay up to `maxDelayMs`, and run at once when the service answers (`onRetrying`).
 * Else an outage longer than the retry horizon (32-64 minutes for imports and emails) ended
 * every job it met as a dead letter, for an operator to requeue by hand. Not for a family a
 * later run supersedes (the bucket poll): its own rule ends it. The limit keeps a job whose
 * every attempt fails so from waiting for ever; an attempt that reached the service and failed
 * there (its connection closed under its own query) always counts.
 */
export interface OutageCarry {
  isOutage(err: unknown): boolean;
  /** 0: off. */
  carryMs: number;
  maxDelayMs: number;
}

/** The delay of an uncounted attempt (see OutageCarry); null: the attempt counts. */
export function outageDelayMs(job: Job, err: unknown, carry: OutageCarry | undefined, now: number): number | null {
  if (!carry || carry.carryMs <= 0 || !carry.isOutage(err)) return null;
  const queuedAt = job.timestamp + (job.opts.delay ?? 0);
  if (now - queuedAt >= carry.carryMs) return null;
  // Attempts started but neither counted nor running now: the ones carried before (a stalled
  // run counts too; it only lengthens the delay).
  const carried = Math.max(0, (job.attemptsStarted ?? 0) - 1 - job.attemptsMade);
  const base = Math.max(1, fullRetryDelayMs(job));
  const full = Math.max(base, Math.min(base * 2 ** Math.min(carried, 30), carry.maxDelayMs));
  // Half of it random, so the jobs an outage met spread out.
  return Math.floor(full / 2 + Math.random() * (full / 2));
}

/** The check that every job name of the catalog has a handler, and no handler names an unknown job. */
export function missingHandlers(handlers: Handlers): { missing: JobName[]; unknown: string[] } {
  const missing = jobNames.filter((n) => typeof handlers[n] !== 'function');
  const unknown = Object.keys(handlers).filter((n) => !(jobNames as string[]).includes(n));
  return { missing, unknown };
}

/**
 * BullMQ's backoff for the catalog's capped type: the job's (scaled) first delay doubled per
 * retry up to the family's `maxDoublings`, less a random share (`jitter`) as BullMQ's own
 * exponential backoff does. Any other type is BullMQ's; an unknown family retries at once.
 */
export function cappedBackoff(attemptsMade: number, type: string | undefined, _err: Error | undefined, job: MinimalJob | undefined): number {
  const opts = job?.opts.backoff;
  const def = job ? catalog[job.name as JobName] : undefined;
  if (type !== CAPPED_BACKOFF || !def || typeof opts !== 'object') return 0;
  const full = retryDelayMs({ backoffMs: opts.delay ?? def.retry.backoffMs, maxDoublings: def.retry.maxDoublings }, attemptsMade);
  const jitter = opts.jitter ?? 0;
  return Math.floor(full * (1 - jitter) + Math.random() * full * jitter);
}

/** The cron time of a job a job scheduler produced; null for a job added any other way. */
function scheduledAtOf(job: Job): Date | null {
  return job.repeatJobKey && typeof job.opts.prevMillis === 'number' ? new Date(job.opts.prevMillis) : null;
}

/** The longest delay before the job's next retry: its backoff without the jitter (which only shortens it). */
function fullRetryDelayMs(job: Job): number {
  const backoff = job.opts.backoff;
  if (typeof backoff === 'number') return backoff;
  if (!backoff) return 0;
  const def = catalog[job.name as JobName];
  const backoffMs = backoff.delay ?? def?.retry.backoffMs ?? 0;
  const maxDoublings = backoff.type === CAPPED_BACKOFF ? def?.retry.maxDoublings : undefined;
  return backoff.type === 'fixed' ? backoffMs : retryDelayMs({ backoffMs, ...(maxDoublings === undefined ? {} : { maxDoublings }) }, job.attemptsMade + 1);
}

/** The run that supersedes a failed job whose next retry could not begin before it; null: it is retried (or dead-lettered) as usual. */
function supersedingRun(job: Job, handler: Handler<JobName> | undefined, payload: Payload<JobName> | undefined, now: number): Date | null {
  if (!handler?.supersededAt || payload === undefined) return null;
  const at = handler.supersededAt(payload, { scheduledAt: scheduledAtOf(job), enqueuedAt: new Date(job.timestamp) });
  return at && now + fullRetryDelayMs(job) >= at.getTime() ? at : null;
}

const CARRIED_MARK = 'could not reach the database, not counted (OUTAGE_CARRY_HOURS): ';

/** A job's log line written when an attempt was carried through an outage: when, and the error; null for any other line. */
export function carriedAttemptOf(logLine: string): { at: Date; reason: string } | null {
  const space = logLine.indexOf(' ');
  if (space < 0 || !logLine.startsWith(CARRIED_MARK, space + 1)) return null;
  const at = new Date(logLine.slice(0, space));
  return Number.isNaN(at.getTime()) ? null : { at, reason: logLine.slice(space + 1 + CARRIED_MARK.length) };
}

/** Whether a job can be carried through an outage at all: not a family a later run supersedes, and the job's lock at hand. */
function carriable(job: Job, handler: Handler<JobName> | undefined, token: string | undefined): token is string {
  return !handler?.supersededAt && token !== undefined && job.id !== undefined;
}

/**
 * Moves a job whose attempt could not reach the service back to its delay without counting the
 * attempt (see OutageCarry); false when that could not be done (Redis away, the lock lost): the
 * attempt then fails as usual.
 */
async function carryThroughOutage(job: Job, token: string, delayMs: number, err: unknown, log: Logger): Promise<boolean> {
  try {
    await job.moveToDelayed(Date.now() + delayMs, token);
  } catch (e) {
    log.warn({ err: e }, 'could not carry the job through the outage: this attempt counts');
    return false;
  }
  // Shown with the job on the dashboard and by `fleet imports show` (its failedReason is the last counted failure's).
  await job.log(`${new Date().toISOString()} ${CARRIED_MARK}${errorMessage(withoutQueryData(err))}`).catch(() => undefined);
  const first = job.attemptsStarted <= job.attemptsMade + 1;
  // Said once per job at warn; each further attempt of the outage at debug.
  log[first ? 'warn' : 'debug'](
    { err, nextAttemptWithinMs: delayMs, attemptsMade: job.attemptsMade },
    'job attempt could not reach the database: not counted, tried again when it answers (OUTAGE_CARRY_HOURS)',
  );
  return true;
}

function isFinal(job: Job, err: unknown): boolean {
  const allowed = job.opts.attempts ?? 1;
  return isPermanent(err) || err instanceof UnrecoverableError || job.attemptsMade + 1 >= allowed;
}

/**
 * Binds the handlers of one queue to a BullMQ worker: validates `job.data` against the
 * catalog, gives each job a child logger `{queue, jobId, attempt}`, maps PermanentError
 * to no retry, and moves a job that will not be retried to the queue's dead-letter queue.
 */
export function bindQueueWorker(queue: string, handlers: Handlers, opts: BindOptions): Worker {
  const names = jobNames.filter((n) => catalog[n].queue === queue);
  const concurrency = Math.min(...names.map((n) => catalog[n].concurrency ?? opts.concurrency));
  const qlog = opts.log.child({ queue });

  const processor = async (job: Job, token?: string) => {
    // After a Redis outage this worker's connection may be back before the producer connection
    // its job enqueues on (each reconnects on its own timer): a drill saw 72 imports taken in
    // that gap fail their attempt (`Stream isn't writeable`). Wait a moment for it; when it does
    // not come, the job runs anyway (and fails as before if it needs it).
    await opts.queues.ready(PRODUCER_WAIT_MS);
    const attempt = job.attemptsMade + 1;
    const log = qlog.child({ jobId: job.id, attempt });
    const end = opts.metrics.duration.startTimer({ queue });
    const name = job.name as JobName;
    const handler = handlers[name] as Handler<JobName> | undefined;
    let payload: Payload<JobName> | undefined;
    // The delay of an attempt carried through an outage (see OutageCarry); null: it counts.
    const carriedDelayMs = (err: unknown) => (carriable(job, handler, token) ? outageDelayMs(job, err, opts.outage, Date.now()) : null);
    try {
      const def = catalog[name];
      if (!def || def.queue !== queue || !handler) {
        throw new UnrecoverableError(`no handler for job ${job.name} on queue ${queue}`);
      }
      const parsed = def.schema.safeParse(job.data);
      if (!parsed.success) {
        throw new UnrecoverableError(`invalid payload for ${job.name}: ${describeZodError(parsed.error)}`);
      }
      payload = parsed.data as Payload<JobName>;
      const result = await handler(payload, {
        log,
        jobId: job.id!,
        attempt,
        maxAttempts: job.opts.attempts ?? 1,
        isFinalAttempt: attempt >= (job.opts.attempts ?? 1),
        carriedThroughOutage: (err) => carriedDelayMs(err) !== null,
        updateProgress: (p) => job.updateProgress(p),
        scheduledAt: scheduledAtOf(job),
      });
      end({ outcome: 'completed' });
      opts.metrics.completed.inc({ queue });
      return result;
    } catch (err) {
      end({ outcome: 'failed' });
      const permanent = isPermanent(err) || err instanceof UnrecoverableError;
      opts.metrics.failed.inc({ queue, kind: permanent ? 'permanent' : 'transient' });
      const code = isPermanent(err) ? err.code : null;
      // A later run does this job's work again before its next retry could: it ends here, no dead letter.
      const supersededBy = permanent ? null : supersedingRun(job, handler, payload, Date.now());
      if (supersededBy) {
        log.warn({ err, supersededBy: supersededBy.toISOString() }, 'job attempt failed: not retried, the next scheduled run does its work (superseded, no dead letter)');
        throw new JobSuperseded(supersededBy, errorMessage(err));
      }
      const carriedFor = permanent ? null : carriedDelayMs(err);
      if (carriedFor !== null && (await carryThroughOutage(job, token!, carriedFor, err, log))) {
        opts.onRetrying?.(queue, job.id!, err);
        throw new DelayedError();
      }
      const final = isFinal(job, err);
      if (final) {
        await addDeadLetter(opts.queues, deadLetterFromJob(job, errorMessage(err), code, attempt));
        opts.metrics.dead.inc({ queue });
        log.error({ err, code }, 'job failed for good: moved to the dead-letter queue');
      } else {
        // The longest wait before the next attempt (jitter only shortens it): how long the work waits.
        log.warn({ err, code, nextAttemptWithinMs: fullRetryDelayMs(job) }, 'job attempt failed: will retry');
        if (!permanent && job.id) opts.onRetrying?.(queue, job.id, err);
      }
      if (isPermanent(err)) throw new UnrecoverableError(`${err.code}: ${err.message}`);
      // BullMQ keeps the message and stack on the job (failedReason, stacktrace): no row values.
      throw withoutQueryData(err);
    }
  };

  const worker = new Worker(queue, processor, {
    connection: opts.connection,
    prefix: clusterSafePrefix(opts.prefix),
    concurrency,
    ...(opts.lockDurationMs ? { lockDuration: opts.lockDurationMs } : {}),
    ...(opts.stalledIntervalMs ? { stalledInterval: opts.stalledIntervalMs } : {}),
    settings: { backoffStrategy: cappedBackoff },
  });
  logWorkerErrors(worker, opts.connection, qlog);
  // A job whose lock expired while active: the process running it died (kill -9, OOM, a lost
  // machine) or could not renew its lock. Any worker of the queue finds it and puts it back;
  // said here, or a crash left no trace in the survivors' logs (a multi-process drill: jobs of a
  // killed process ran again 40-60 s later without a word).
  worker.on('stalled', (jobId: string) => {
    opts.metrics.stalled.inc({ queue });
    qlog.warn({ jobId }, 'job stalled (the process running it stopped or lost its lock): back in the queue, its effects stay once-only');
  });
  // A job can also fail outside the processor (it stalled too often because its worker
  // died). Those never passed the catch above: dead-letter them here.
  worker.on('failed', (job, err) => {
    // Superseded by a later run (the processor ended it so): nothing waits for an operator.
    if (err instanceof JobSuperseded) return;
    // Here attemptsMade already counts the attempt that just failed.
    const final = job && (err instanceof UnrecoverableError || job.attemptsMade >= (job.opts.attempts ?? 1));
    if (!job || !final) return;
    void (async () => {
      const dlq = opts.queues.queue(deadLetterQueueName(queue));
      if (await dlq.getJob(job.id!.replaceAll(':', '.'))) return;
      await addDeadLetter(opts.queues, deadLetterFromJob(job, errorMessage(err), 'stalled', job.attemptsMade));
      opts.metrics.dead.inc({ queue });
      qlog.error({ jobId: job.id }, 'job failed outside its processor: moved to the dead-letter queue');
      const name = job.name as JobName;
      const abandoned = (handlers[name] as Handler<JobName> | undefined)?.abandoned;
      const parsed = abandoned ? catalog[name]?.schema.safeParse(job.data) : undefined;
      if (abandoned && parsed?.success) {
        const log = qlog.child({ jobId: job.id });
        await abandoned(parsed.data as Payload<JobName>, `its worker stopped before finishing it, more often than allowed (${errorMessage(err)})`, log).catch((e: unknown) =>
          log.error({ err: e }, 'could not record the abandoned job for its family (the dead letter has it)'),
        );
      }
    })().catch((e: unknown) => qlog.error({ err: e, jobId: job.id }, 'could not dead-letter a failed job'));
  });
  return worker;
}

/** Errors of the worker's own Redis connections (Redis down, a wrong REDIS_URL), not of a job. */
const REDIS_CONNECTION_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

/**
 * BullMQ's codes (ErrorCode) of a job that finished when its lock (-2) or its key (-1) was gone:
 * after Redis was away longer than the lock (the lock expired meanwhile) or came back without its
 * data. A drill stopping Redis for 30 s to 3 minutes logged each such job as `worker error` at
 * error level with a stack, twice (its completion, then its failure, both refused), ~40 lines
 * after every outage, saying nothing of what happens to the job.
 */
const JOB_KEY_GONE = -1;
const JOB_LOCK_GONE = -2;

/** How long a job taken while the producer connection is not ready waits for it (it reconnects at most every 2.5 s). */
const PRODUCER_WAIT_MS = 5_000;

/** While Redis stays out of reach, a worker says so once per this interval. */
export const WORKER_REDIS_DOWN_REPEAT_MS = 60_000;

/**
 * A worker's errors. While Redis is out of reach, each of its two connections reported every
 * reconnect attempt as `worker error` with a stack: 14 error lines every 20 s for a fleet's
 * seven queues, none naming REDIS_URL. Now a worker says once a minute that it cannot reach
 * Redis, where and why (`repeats`: the attempts since), and once that it reached it.
 */
function logWorkerErrors(worker: Worker, connection: Redis, log: Logger): void {
  const redis = `${connection.options.host ?? '127.0.0.1'}:${connection.options.port ?? 6379}`;
  let downSince: number | null = null;
  let lastSaid = 0;
  let repeats = 0;
  // BullMQ says `lockRenewalFailed` with the jobs whose lock it could not renew, then, at once and
  // in the same tick, one `error` per job ("could not renew lock for job …") without a code. Those
  // are told by their number, not by their text, and said once, at warn: the job keeps running
  // here, and runs again elsewhere once found stalled (every effect is once-only).
  let renewalErrors = 0;
  worker.on('lockRenewalFailed', (jobIds: string[]) => {
    renewalErrors = jobIds.length;
    queueMicrotask(() => (renewalErrors = 0));
    log.warn(
      { jobs: jobIds.length },
      'job lock could not be renewed (Redis away longer than WORKER_LOCK_DURATION_MS, or the process too busy to renew it): the job runs on here and again once found stalled, its effects stay once-only',
    );
  });
  worker.on('error', (err) => {
    const code = (err as { code?: unknown }).code;
    if (code === undefined && renewalErrors > 0) {
      renewalErrors--;
      return;
    }
    if (code === JOB_LOCK_GONE) {
      log.warn({ code, cause: err.message }, 'job finished after its lock had expired (Redis away longer than WORKER_LOCK_DURATION_MS): it runs again once found stalled, its effects stay once-only');
      return;
    }
    if (code === JOB_KEY_GONE) {
      log.warn({ code, cause: err.message }, 'job finished after Redis had lost it (Redis back without its data): its work is offered again from the database');
      return;
    }
    if (typeof code !== 'string' || !REDIS_CONNECTION_ERRORS.has(code)) {
      log.error({ err }, 'worker error');
      return;
    }
    const now = Date.now();
    downSince ??= now;
    if (lastSaid && now - lastSaid < WORKER_REDIS_DOWN_REPEAT_MS) {
      repeats++;
      return;
    }
    log.error(
      { redis, cause: err.message, downSeconds: Math.round((now - downSince) / 1000), repeats },
      'worker cannot reach redis (check REDIS_URL and that Redis runs): its jobs wait in Redis; retrying',
    );
    lastSaid = now;
    repeats = 0;
  });
  connection.on('ready', () => {
    if (downSince === null) return;
    log.info({ redis, downSeconds: Math.round((Date.now() - downSince) / 1000) }, 'worker reached redis');
    downSince = null;
    lastSaid = 0;
    repeats = 0;
  });
}

/** One worker per queue that has handlers. */
export function bindWorkers(handlers: Handlers, opts: BindOptions, only?: string[]): Worker[] {
  const queues = [...new Set(Object.keys(handlers).map((n) => catalog[n as JobName].queue))];
  return queues.filter((q) => !only || only.includes(q)).map((q) => bindQueueWorker(q, handlers, opts));
}

/**
 * Closes workers gracefully: active jobs may finish until the time limit. After it we stop
 * waiting (BullMQ cannot abort a running processor); the caller closes connections and exits,
 * and the unfinished jobs go back to the queue when their lock expires, so another worker
 * picks them up: nothing is lost.
 */
export async function closeWorkers(workers: Worker[], timeoutMs: number, log?: Logger): Promise<'graceful' | 'forced'> {
  const closed = Promise.all(workers.map((w) => w.close()));
  closed.catch((err: unknown) => log?.error({ err }, 'worker close failed'));
  const outcome = (await settlesWithin(closed, timeoutMs)) ? 'graceful' : 'forced';
  if (outcome === 'forced') {
    log?.warn({ timeoutMs }, 'shutdown time limit reached with jobs still active: they return to the queue when their lock expires');
  }
  return outcome;
}
