import type { FleetSchedulerId } from '../../libs/queues/index.js';
import type { Handlers } from '../../libs/queues/index.js';
import { ensureJobScheduler } from '../../libs/queues/job-scheduler.js';
import { scheduleComponent } from './schedule-component.js';
import { workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { registerEmailRetentionMetrics, runEmailRetention, type ContentRetentionResult } from '../../workers/email/index.js';
import { removeStaleTempCopies, retentionHandlers, runRetention, unrecordedCopies, type RetentionResult, type UnrecordedCopies } from '../../workers/patient-import/index.js';

/** The id of the one retention schedule, shared by every patient-import process. */
export const RETENTION_SCHEDULER_ID: FleetSchedulerId = 'patient-import-retention';

/**
 * What a retention run did: the local copies (as before), the email contents, and the files in
 * the copy folders no record points to (reported, never removed). Counts and record ids only.
 */
export type NightlyRetentionResult = RetentionResult & {
  emails: ContentRetentionResult;
  unrecorded: Record<'backup' | 'failed', UnrecordedCopies>;
  /** Temporary copies a crash while writing left (removed; the dry run counts them). */
  staleTemps: Record<'backup' | 'failed', number>;
};

/** What a nightly run does after the sweep of the local copies: temporary copies a crash left, then the files no record points to. */
async function afterCopies(ctx: FleetContext, opts: { dryRun?: boolean }): Promise<Pick<NightlyRetentionResult, 'staleTemps' | 'unrecorded'>> {
  const staleTemps = await removeStaleTempCopies(ctx, opts);
  return { staleTemps, unrecorded: await unrecordedCopies(ctx) };
}

/** The nightly retention run now (`fleet retention run`): email contents, then local copies, then what no record points to. */
export async function runNightlyRetention(ctx: FleetContext, opts: { dryRun?: boolean } = {}): Promise<NightlyRetentionResult> {
  const emails = await runEmailRetention(ctx, opts);
  const copies = await runRetention(ctx, opts);
  return { ...copies, emails, ...(await afterCopies(ctx, opts)) };
}

/**
 * The handler of the nightly `patient-import-retention` job. The email contents go first: they need
 * only the database and Redis, so a local copy that cannot be removed (the job then fails and is
 * retried) never holds them back.
 */
export function nightlyRetentionHandlers(ctx: FleetContext): Handlers {
  const copies = retentionHandlers(ctx)['patient-import-retention']!;
  registerEmailRetentionMetrics(ctx);
  return {
    'patient-import-retention': async (payload, helpers) => {
      const emails = await runEmailRetention({ ...ctx, log: helpers.log });
      const r = (await copies(payload, helpers)) as RetentionResult;
      const { staleTemps, unrecorded } = await afterCopies(ctx, {});
      if (staleTemps.backup + staleTemps.failed > 0) {
        helpers.log.info(staleTemps, 'temporary copies left in BACKUP_DIR / FAILED_DIR by a process that died while writing them removed');
      }
      if (unrecorded.backup.files + unrecorded.failed.files > 0) {
        // Counts only (the names hold patient names): the CLI lists the records to look at.
        helpers.log.warn(
          { backup: unrecorded.backup.files, failed: unrecorded.failed.files },
          'files in BACKUP_DIR / FAILED_DIR that no import record points to: never removed by the sweep; fleet retention run --dry-run names their records',
        );
      }
      return { ...r, emails, unrecorded, staleTemps } satisfies NightlyRetentionResult;
    },
  };
}

/**
 * The nightly retention run: a BullMQ job scheduler produces one `patient-import-retention` job on
 * RETENTION_CRON in RETENTION_TZ (one schedule however many processes register it), and a worker
 * runs it where BACKUP_DIR and FAILED_DIR are mounted. It removes the local registration copies
 * and the contents of old emails (fleet.deliveries: database only, so it rides along here rather
 * than in a schedule of its own).
 */
export function retentionComponents(ctx: FleetContext): Component[] {
  const worker = workerComponent(ctx, 'patient-import-retention', nightlyRetentionHandlers(ctx));
  const schedule = scheduleComponent(ctx, {
    name: 'patient-import-retention-schedule',
    schedulerId: RETENTION_SCHEDULER_ID,
    async register() {
      const r = ctx.config.patientImport.retention;
      const registered = await ensureJobScheduler({
        queues: ctx.queues,
        log: ctx.log,
        schedulerId: RETENTION_SCHEDULER_ID,
        jobName: 'patient-import-retention',
        data: {},
        pattern: r.cron,
        timeZone: r.timeZone,
      });
      ctx.log.info(
        {
          cron: r.cron,
          timeZone: r.timeZone,
          backupRetentionDays: r.backupDays,
          failedRetentionDays: r.failedDays,
          emailRetentionDays: ctx.config.mail.retentionDays,
          action: registered.action,
          next: registered.next,
        },
        'retention sweep scheduled',
      );
    },
  });
  return [worker, schedule];
}
