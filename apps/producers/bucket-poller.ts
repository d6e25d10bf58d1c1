import type { FleetSchedulerId } from '../../libs/queues/index.js';
import { ensureJobScheduler } from '../../libs/queues/job-scheduler.js';
import { workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { scheduleComponent } from './schedule-component.js';
import { bucketPollHandlers } from '../../workers/patient-import/worker.js';

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
  return [worker, schedule];
}
