import { z } from 'zod';

/**
 * The one list of job families. Each entry says which queue the job runs on, what its
 * payload looks like (the handler's type comes from the schema), how it retries, how long
 * finished jobs are kept, and which idempotency key makes enqueuing it twice a no-op.
 *
 * Payloads carry database ids only: never names, emails, object names or health data.
 */
export interface RetryPolicy {
  /** Runs in total, the first included. */
  attempts: number;
  /** First retry delay; each further retry doubles it, with jitter. */
  backoffMs: number;
  /**
   * Stop doubling after this many doublings (the delay then stays at backoffMs * 2^n): many
   * attempts that together outlast a database or Redis outage of half an hour, without the last
   * waits growing to hours. Absent: every retry doubles.
   */
  maxDoublings?: number;
  /** Share of each delay that is random (0..1), so retries of many jobs spread out. */
  jitter: number;
}

export interface Retention {
  completed: { ageSeconds: number; count: number };
  failed: { ageSeconds: number; count: number };
}

export interface JobDefinition<S extends z.ZodType = z.ZodType> {
  /** The BullMQ queue (one queue per job family). */
  queue: string;
  description: string;
  schema: S;
  retry: RetryPolicy;
  retention: Retention;
  /** Idempotency key: the same key enqueued again while the job is kept is not added twice. */
  key: ((payload: z.infer<S>) => string) | null;
  /** Jobs run at once per worker process; overridden by WORKER_CONCURRENCY when absent. */
  concurrency?: number;
}

const DAY = 24 * 3600;

export const defaultRetention: Retention = {
  completed: { ageSeconds: 7 * DAY, count: 10_000 },
  failed: { ageSeconds: 30 * DAY, count: 50_000 },
};

/** The BullMQ backoff type of a policy with `maxDoublings` (bindQueueWorker computes it). */
export const CAPPED_BACKOFF = 'capped-exponential';

/** Delay before retry `retry` (1 for the first) of a policy, without jitter, in ms. */
export function retryDelayMs(policy: Pick<RetryPolicy, 'backoffMs' | 'maxDoublings'>, retry: number, scale = 1): number {
  const doublings = Math.min(retry - 1, policy.maxDoublings ?? Number.POSITIVE_INFINITY);
  return Math.max(1, Math.round(policy.backoffMs * scale)) * 2 ** doublings;
}

/** How long a policy keeps retrying before the job fails for good (sum of its delays without jitter), in ms. */
export function retryHorizonMs(policy: RetryPolicy, scale = 1): number {
  let total = 0;
  for (let r = 1; r < policy.attempts; r++) total += retryDelayMs(policy, r, scale);
  return total;
}

function defineJob<S extends z.ZodType>(def: JobDefinition<S>): JobDefinition<S> {
  return def;
}

const id = z.number().int().positive();

export const catalog = {
  'email-send': defineJob({
    queue: 'email',
    description: 'Send one email delivery (and up to 99 other pending ones in the same batch request)',
    schema: z.object({ deliveryId: z.uuid() }).strict(),
    retry: { attempts: 18, backoffMs: 5_000, maxDoublings: 6, jitter: 0.5 },
    retention: defaultRetention,
    key: (p) => `delivery.${p.deliveryId}`,
    // Most jobs find their delivery already sent by another job's batch and finish at once;
    // the few that carry a batch wait for a provider rate slot. Enough slots for both.
    concurrency: 16,
  }),
  'bucket-poll': defineJob({
    queue: 'bucket-poll',
    description: 'List the registration bucket and enqueue one import per new object generation',
    schema: z.object({ trigger: z.enum(['schedule', 'manual', 'start', 'restored']) }).strict(),
    // Every poll lists the whole bucket and offers every unfinished import again, so a poll that
    // fails (GCS, PostgreSQL or Redis away) is retried up to the next scheduled poll and then left
    // to it, failed without a dead letter (`supersededAt` of its handler: after POLL_CRON's next run
    // from the job's cron time, or from when it was added). The delay doubles from 10 s to 5 min
    // 20 s (2 min 40 s to 5 min 20 s with jitter): registrations wait minutes after an outage,
    // not until the next poll. `attempts` is a safety net only (about two weeks at the shortest delay).
    retry: { attempts: 8_000, backoffMs: 10_000, maxDoublings: 5, jitter: 0.5 },
    retention: { completed: { ageSeconds: 2 * DAY, count: 500 }, failed: { ageSeconds: 30 * DAY, count: 1_000 } },
    key: null,
    concurrency: 1,
  }),
  'patient-import': defineJob({
    queue: 'patient-import',
    description: 'Import one patient registration file (by ledger id)',
    schema: z.object({ ledgerId: id }).strict(),
    retry: { attempts: 22, backoffMs: 2_000, maxDoublings: 7, jitter: 0.5 },
    retention: defaultRetention,
    key: (p) => `ledger.${p.ledgerId}`,
  }),
  'patient-import-retention': defineJob({
    queue: 'patient-import-retention',
    description: 'Remove local copies of registration files past BACKUP_RETENTION_DAYS / FAILED_RETENTION_DAYS (final rows only) and record it in the ledger; blank the contents of final emails past EMAIL_RETENTION_DAYS',
    schema: z.object({}).strict(),
    // A file system or database error: retried for about an hour; the next night's run starts over anyway.
    retry: { attempts: 6, backoffMs: 120_000, jitter: 0.5 },
    retention: { completed: { ageSeconds: 30 * DAY, count: 100 }, failed: { ageSeconds: 90 * DAY, count: 100 } },
    key: null,
    concurrency: 1,
  }),
  'therapist-import': defineJob({
    queue: 'therapist-import',
    description: 'Import one therapist scraper file (carries the tracking row id; keyed by content hash)',
    // `file`: the tracked path (relative to the drop folder), content hash and postcode, as the
    // watcher registered them (no personal data): the worker reads the file before claiming it
    // and claims it in the same round trip as its reads (checked against the row).
    schema: z
      .object({
        fileId: id,
        file: z
          .object({
            path: z.string().min(1).max(1024),
            contentHash: z.string().regex(/^[0-9a-f]{64}$/),
            postcode: z.string().regex(/^\d{5}$/).nullable(),
          })
          .strict()
          .optional(),
      })
      .strict(),
    retry: { attempts: 18, backoffMs: 5_000, maxDoublings: 6, jitter: 0.5 },
    retention: defaultRetention,
    // Producers pass jobId: therapistImportJobId(contentHash, fileId); this key is the fallback
    // when only the id is at hand.
    key: (p) => `file.${p.fileId}`,
    // Four at once: imports lock per postcode in PostgreSQL, so different areas run in parallel
    // (2 -> 4 cut the first import of the benchmark by ~25%; the pool has 10 connections).
    concurrency: 4,
  }),
  'weekly-tick': defineJob({
    queue: 'weekly-fanout',
    description: 'Produced by the weekly job scheduler: enqueue the fan-out of the ISO week now due (never a past week)',
    schema: z.object({}).strict(),
    retry: { attempts: 19, backoffMs: 30_000, maxDoublings: 3, jitter: 0.5 },
    retention: { completed: { ageSeconds: 90 * DAY, count: 100 }, failed: { ageSeconds: 90 * DAY, count: 100 } },
    key: null,
    concurrency: 1,
  }),
  'weekly-fanout': defineJob({
    queue: 'weekly-fanout',
    description: 'Select the patients due a weekly status email and enqueue one job each',
    schema: z.object({ isoWeek: z.string().regex(/^\d{4}-W\d{2}$/) }).strict(),
    // Retried for 6-12 hours (30 s doubling to 16 min): a fan-out that failed for good leaves
    // the whole week without emails until an operator requeues it (its job id is the week's, so
    // neither the tick nor a restart's catch-up adds it again). A Monday outage of a few hours
    // delays the week's emails instead; FleetJobsRetrying fires meanwhile. A retry after the
    // week has ended does nothing.
    retry: { attempts: 51, backoffMs: 30_000, maxDoublings: 5, jitter: 0.5 },
    retention: defaultRetention,
    key: (p) => `week.${p.isoWeek}`,
    concurrency: 1,
  }),
  'weekly-status': defineJob({
    queue: 'weekly-status',
    description: 'Compose one patient weekly status email for one ISO week',
    schema: z.object({ patientId: id, isoWeek: z.string().regex(/^\d{4}-W\d{2}$/) }).strict(),
    retry: { attempts: 18, backoffMs: 5_000, maxDoublings: 6, jitter: 0.5 },
    retention: defaultRetention,
    key: (p) => `patient.${p.patientId}.week.${p.isoWeek}`,
    // I/O-bound (one short transaction each): more at once than the default.
    concurrency: 8,
  }),
} as const;

/**
 * Job id of a therapist file import: the file's content hash (sha256 hex) and its tracking row.
 * One live row per hash, so one job per content at a time; the row id keeps a content whose
 * first row was skipped (the file changed before its turn) from meeting that row's finished
 * job when it comes back: a job id BullMQ still keeps is not added again, and the new row would
 * wait forever.
 */
export function therapistImportJobId(contentHash: string, fileId: number): string {
  return `therapist-import.sha256.${contentHash}.file.${fileId}`;
}

export type Catalog = typeof catalog;
export type JobName = keyof Catalog;
export type Payload<N extends JobName> = z.infer<Catalog[N]['schema']>;
export const jobNames = Object.keys(catalog) as JobName[];

export function queueNames(): string[] {
  return [...new Set(jobNames.map((n) => catalog[n].queue))];
}

/** The dead-letter queue of a queue: jobs that will not be retried wait here for an operator. */
export function deadLetterQueueName(queue: string): string {
  return `${queue}-dlq`;
}

/** BullMQ job ids may not contain ':' nor be plain integers; keys are namespaced by job name. */
export function jobIdFor<N extends JobName>(name: N, payload: Payload<N>): string | undefined {
  const keyFn = catalog[name].key as ((p: Payload<N>) => string) | null;
  if (!keyFn) return undefined;
  return `${name}.${keyFn(payload)}`.replaceAll(':', '.');
}
