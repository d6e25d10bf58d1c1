import type { FleetSchedulerId } from '../../libs/queues/index.js';
import { ensureJobScheduler } from '../../libs/queues/job-scheduler.js';
import { workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { bucketPollHandlers } from '../../workers/patient-import/worker.js';

/** The id of the one `bucket-poll` schedule, shared by every poller process. */
export const BUCKET_POLL_SCHEDULER_ID: FleetSchedulerId = 'bucket-poll';

/**
 * The bucket poller: a BullMQ job scheduler produces `bucket-poll` jobs on POLL_CRON (one
 * schedule however many pollers run), a worker runs them, and each start polls once so
 * unfinished rows are picked up again after a crash.
 */
export function bucketPollerComponents(ctx: FleetContext): Component[] {
  const worker = workerComponent(ctx, 'bucket-poll', bucketPollHandlers(ctx));
  const schedule: Component = {
    name: 'bucket-poll-schedule',
    async start() {
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
      await ctx.queues.enqueue('bucket-poll', { trigger: 'start' });
      ctx.log.info({ cron: c.pollCron, timeZone: c.pollTimeZone, action: r.action, next: r.next }, 'bucket poll scheduled');
    },
    async stop() {},
  };
  return [worker, schedule];
}
