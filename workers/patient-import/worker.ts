import { nextScheduledRun, withAbandoned, withSupersededAt, type Handlers } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { createBucket, type BucketPort } from '../../libs/storage/index.js';
import { processPatientImport, recordAbandonedImport } from './process-patient-import.js';
import { runPoll } from './run-poll.js';
import { retentionMetrics, runRetention } from './run-retention.js';
import { bucketSource, importDeps, type PatientImportOptions } from './wiring.js';

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
