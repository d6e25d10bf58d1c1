import { CronExpressionParser } from 'cron-parser';
import { isoWeekOf } from './iso-week.js';

/**
 * Schedule math of the weekly status emails, with cron-parser (the library BullMQ's job
 * schedulers use), so what we compute is what the scheduler does, DST included.
 */
export interface WeeklySchedule {
  cron: string;
  timeZone: string;
}

export class InvalidScheduleError extends Error {
  override name = 'InvalidScheduleError';
}

function parse(s: WeeklySchedule, currentDate: Date) {
  try {
    return CronExpressionParser.parse(s.cron, { tz: s.timeZone, currentDate });
  } catch (err) {
    throw new InvalidScheduleError(`WEEKLY_CRON ${JSON.stringify(s.cron)}: ${(err as Error).message}`);
  }
}

/** The first scheduled moment strictly after `after`. */
export function nextRun(s: WeeklySchedule, after: Date): Date {
  return parse(s, after).next().toDate();
}

/**
 * The last scheduled moment at or before `at`, or null when there is none: the last moment
 * `nextRun` (and BullMQ's scheduler) fires at. cron-parser's prev() skips a time that does not
 * exist on the spring DST day (02:30 Berlin on the last Sunday of March) while next() fires it
 * an hour later (03:30): the runs after prev()'s answer are walked forward so both agree.
 */
export function previousRun(s: WeeklySchedule, at: Date): Date | null {
  let last: Date;
  try {
    last = parse(s, new Date(at.getTime() + 1)).prev().toDate();
  } catch (err) {
    if (err instanceof InvalidScheduleError) throw err;
    return null;
  }
  for (;;) {
    const next = nextRun(s, last);
    if (next.getTime() > at.getTime()) return last;
    last = next;
  }
}

/**
 * The ISO week whose fan-out is due at `now`: the week of the last scheduled moment, but
 * only while we are still in that same week. A fleet that was down at the scheduled time
 * catches up within the week and never sends for a past week.
 */
export function dueWeek(s: WeeklySchedule, now: Date): string | null {
  const last = previousRun(s, now);
  if (!last) return null;
  const week = isoWeekOf(last, s.timeZone);
  return week === isoWeekOf(now, s.timeZone) ? week : null;
}
