import type { FleetSchedulerId } from '../../libs/queues/index.js';
import { ensureJobScheduler } from '../../libs/queues/job-scheduler.js';
import { workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { dueWeek, nextRun } from '../../libs/weekly/schedule.js';
import { weeklyHandlers } from '../../workers/weekly-status/index.js';
import { scheduleComponent } from './schedule-component.js';

/** The one id of the weekly schedule: every process and every deploy upserts this same scheduler. */
export const WEEKLY_SCHEDULER_ID: FleetSchedulerId = 'weekly-status-emails';

/**
 * Registers the weekly job scheduler (WEEKLY_CRON in WEEKLY_TZ, guarded against duplicate
 * schedules) and catches up: when the fleet starts after this week's scheduled time, it
 * enqueues this week's fan-out (keyed by ISO week, so several processes enqueue it once).
 * A past week is never sent.
 */
export async function registerWeeklySchedule(ctx: FleetContext) {
  const { cron, timeZone } = ctx.config.weekly;
  const registered = await ensureJobScheduler({
    queues: ctx.queues,
    log: ctx.log,
    schedulerId: WEEKLY_SCHEDULER_ID,
    jobName: 'weekly-tick',
    data: {},
    pattern: cron,
    timeZone,
  });
  const now = ctx.clock.now();
  const week = dueWeek({ cron, timeZone }, now);
  let catchUp: { isoWeek: string; jobId: string } | null = null;
  if (week) {
    const { jobId } = await ctx.queues.enqueue('weekly-fanout', { isoWeek: week });
    catchUp = { isoWeek: week, jobId };
  }
  ctx.log.info(
    { schedulerId: WEEKLY_SCHEDULER_ID, action: registered.action, next: nextRun({ cron, timeZone }, now).toISOString(), catchUp: catchUp?.isoWeek ?? null },
    'weekly schedule registered',
  );
  return { ...registered, catchUp };
}

export function weeklyScheduleComponent(ctx: FleetContext): Component {
  return scheduleComponent(ctx, {
    name: 'weekly-schedule',
    schedulerId: WEEKLY_SCHEDULER_ID,
    register: async () => void (await registerWeeklySchedule(ctx)),
  });
}

/** The `weekly` role: the schedule (registered once, guarded) and the fan-out and per-patient workers. */
export function weeklyComponents(ctx: FleetContext): Component[] {
  return [workerComponent(ctx, 'weekly-status', weeklyHandlers(ctx)), weeklyScheduleComponent(ctx)];
}
