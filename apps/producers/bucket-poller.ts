import type { FleetSchedulerId } from '../../libs/queues/index.js';
import { ensureJobScheduler } from '../../libs/queues/job-scheduler.js';
import { workerComponent, type Component, type FleetContext, type ReadinessResult } from '../../libs/runtime/index.js';
import { createBucket, LocalBucket, StorageError, type BucketPort } from '../../libs/storage/index.js';
import { scheduleComponent } from './schedule-component.js';
import { bucketPollHandlers } from '../../workers/patient-import/index.js';

/** The id of the one `bucket-poll` schedule, shared by every poller process. */
export const BUCKET_POLL_SCHEDULER_ID: FleetSchedulerId = 'bucket-poll';

/**
 * The bucket poller: a BullMQ job scheduler produces `bucket-poll` jobs on POLL_CRON (one
 * schedule however many pollers run), a worker runs them, and each start polls once so
 * unfinished rows are picked up again after a crash (and so does a schedule restored after
 * Redis lost its data).
 */
export function bucketPollerComponents(ctx: FleetContext): Component[] {
  const worker = workerComponent(ctx, 'bucket-poll', bucketPollHandlers(ctx));
  const schedule = scheduleComponent(ctx, {
    name: 'bucket-poll-schedule',
    schedulerId: BUCKET_POLL_SCHEDULER_ID,
    async register(why) {
      const c = ctx.config.patientImport;
      const r = await ensureJobScheduler({
        queues: ctx.queues,
        log: ctx.log,
        schedulerId: BUCKET_POLL_SCHEDULER_ID,
        jobName: 'bucket-poll',
        data: { trigger: 'schedule' },
        pattern: c.pollCron,
        timeZone: c.pollTimeZone,
      });
      // A poll now: after a start, or after Redis lost its data (with the imports queued in it).
      await ctx.queues.enqueue('bucket-poll', { trigger: why });
      ctx.log.info({ cron: c.pollCron, timeZone: c.pollTimeZone, action: r.action, next: r.next }, 'bucket poll scheduled');
    },
  });
  // One request per check, no retries: a refused connection shows at once, naming the endpoint.
  const storage = ctx.config.storage;
  const bucket = createBucket({ ...storage, gcs: { ...storage.gcs, maxRetries: 0 } });
  const check = bucketReadiness(bucket, ctx.config.storage.prefix);
  return [worker, schedule, { name: 'bucket', start: async () => {}, stop: async () => {}, ready: check }];
}

/**
 * For GET /ready (not critical: the process keeps its other work, and the poll retries): can the
 * bucket be listed? A listing of one object under the prefix, at most once per `cacheMs`, so a
 * wrong GCS_BUCKET, GCS_API_ENDPOINT or credentials show there (`bucket degraded (gcs list failed
 * (bucket x): HTTP 404 notFound: no such bucket ...)`) and not only in the poll's warn lines.
 * The storage errors' messages never name objects.
 */
export function bucketReadiness(bucket: BucketPort, prefix: string, cacheMs = 60_000): () => Promise<ReadinessResult> {
  let last: { at: number; result: ReadinessResult } | undefined;
  let probing: Promise<ReadinessResult> | undefined;
  // The local driver keeps GCS_BUCKET's name for its records, but what it lists is a folder:
  // "bucket curavani-production-data-transfer can be listed" read as production GCS.
  const what = bucket instanceof LocalBucket ? `local bucket folder ${bucket.root} (STORAGE_DRIVER=local)` : `bucket ${bucket.bucket}`;
  const probe = async (): Promise<ReadinessResult> => {
    try {
      await bucket.list(prefix, { pageSize: 1 });
      return { ok: true, detail: `${what} can be listed` };
    } catch (err) {
      return { ok: false, detail: err instanceof StorageError ? err.message : `${what}: listing failed` };
    }
  };
  return async () => {
    if (last && Date.now() - last.at < cacheMs) return last.result;
    probing ??= probe().then((result) => {
      last = { at: Date.now(), result };
      probing = undefined;
      return result;
    });
    return probing;
  };
}
