import { CronExpressionParser } from 'cron-parser';
import { catalog, type JobName } from './catalog.js';
import type { QueueSet } from './queue-set.js';

/**
 * The fleet's job schedulers: one fixed id each, registered (and re-registered) at start by
 * every process that runs the role named here, from the cron variable named here, and
 * registered again by those processes when Redis no longer has it (SCHEDULE_CHECK_MS). Nothing
 * else may create, change or remove them: Bull Board's scheduler buttons are refused, and a
 * missing one is reported on /daily, `fleet status` and by the `FleetScheduleMissing` alert.
 */
export const fleetSchedulers = {
  'bucket-poll': { jobName: 'bucket-poll', role: 'bucket-poller', cronVariable: 'POLL_CRON' },
  'weekly-status-emails': { jobName: 'weekly-tick', role: 'weekly', cronVariable: 'WEEKLY_CRON' },
  'patient-import-retention': { jobName: 'patient-import-retention', role: 'patient-import', cronVariable: 'RETENTION_CRON' },
} as const satisfies Record<string, { jobName: JobName; role: string; cronVariable: string }>;

export type FleetSchedulerId = keyof typeof fleetSchedulers;

export const fleetSchedulerIds = Object.keys(fleetSchedulers) as FleetSchedulerId[];

export interface SchedulerState {
  id: FleetSchedulerId;
  queue: string;
  /** The role whose processes register it at start. */
  role: string;
  cronVariable: string;
  registered: boolean;
  /** As stored in Redis; null when not registered. */
  pattern: string | null;
  timeZone: string | null;
  next: Date | null;
}

/** Each fleet scheduler as Redis holds it now (registered or not). */
export async function schedulerStates(queues: QueueSet): Promise<SchedulerState[]> {
  return Promise.all(
    fleetSchedulerIds.map(async (id) => {
      const s = fleetSchedulers[id];
      const queue = catalog[s.jobName].queue;
      const stored = await queues.queue(queue).getJobScheduler(id);
      return {
        id,
        queue,
        role: s.role,
        cronVariable: s.cronVariable,
        registered: Boolean(stored),
        pattern: stored?.pattern ?? null,
        timeZone: stored?.tz ?? null,
        next: stored?.next ? new Date(stored.next) : null,
      };
    }),
  );
}

/**
 * The first run of a cron schedule strictly after `after`, as BullMQ's job schedulers compute it
 * (cron-parser, the parser they use, from the previous run's time in the schedule's zone).
 */
export function nextScheduledRun(schedule: { pattern: string; timeZone: string }, after: Date): Date {
  return CronExpressionParser.parse(schedule.pattern, { tz: schedule.timeZone, currentDate: after }).next().toDate();
}

/** The last run of a cron schedule strictly before `before` (cron-parser, as `nextScheduledRun`). */
export function previousScheduledRun(schedule: { pattern: string; timeZone: string }, before: Date): Date {
  return CronExpressionParser.parse(schedule.pattern, { tz: schedule.timeZone, currentDate: before }).prev().toDate();
}

/** The queues (not dead-letter queues) that are paused now: their jobs wait until resumed. */
export async function pausedQueues(queues: QueueSet): Promise<string[]> {
  const all = queues.allQueues().filter((q) => !q.deadLetter);
  const paused = await Promise.all(all.map(async ({ name, queue }) => ((await queue.isPaused()) ? name : null)));
  return paused.filter((n): n is string => n !== null);
}
