import { ensureJobScheduler } from '../../libs/queues/job-scheduler.js';
import { workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { retentionHandlers } from '../../workers/patient-import/worker.js';
import { producerReady } from './producer-ready.js';

/** The id of the one retention schedule, shared by every patient-import process. */
export const RETENTION_SCHEDULER_ID = 'patient-import-retention';

/**
 * The retention sweep of the local registration copies: a BullMQ job scheduler produces one
 * `patient-import-retention` job on RETENTION_CRON in RETENTION_TZ (one schedule however many
 * processes register it), and a worker runs it where BACKUP_DIR and FAILED_DIR are mounted.
 */
export function retentionComponents(ctx: FleetContext): Component[] {
  const worker = workerComponent(ctx, 'patient-import-retention', retentionHandlers(ctx));
  const schedule: Component = {
    name: 'patient-import-retention-schedule',
    async start() {
      const r = ctx.config.patientImport.retention;
      await producerReady(ctx, 'the retention schedule');
      const registered = await ensureJobScheduler({
        queues: ctx.queues,
        redis: ctx.producerRedis,
        log: ctx.log,
        schedulerId: RETENTION_SCHEDULER_ID,
        jobName: 'patient-import-retention',
        data: {},
        pattern: r.cron,
        timeZone: r.timeZone,
      });
      ctx.log.info(
        { cron: r.cron, timeZone: r.timeZone, backupRetentionDays: r.backupDays, failedRetentionDays: r.failedDays, action: registered.action, next: registered.next },
        'retention sweep scheduled',
      );
    },
    async stop() {},
  };
  return [worker, schedule];
}
