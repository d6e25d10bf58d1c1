import { recordWeeklyDelivery } from '../../libs/db/repositories/weekly-status.js';
import type { Handlers } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { dueWeek } from '../../libs/weekly/schedule.js';
import { processWeeklyFanout } from './process-fanout.js';
import { processWeeklyStatus } from './process-status.js';
import { composeWeeklyEmail } from './weekly-email.js';
import { fanoutDeps, window } from './wiring.js';

/**
 * How far this process's clock may lag the one of the host that released a scheduled tick
 * and still be waited for (several hosts with the `weekly` role, NTP-synchronised). A scheduled
 * time further ahead means a clock that is badly off (or fixed, in tests): not waited for.
 */
const TICK_CLOCK_SKEW_MS = 5 * 60_000;

export function weeklyHandlers(ctx: FleetContext): Handlers {
  const schedule = { cron: ctx.config.weekly.cron, timeZone: ctx.config.weekly.timeZone };
  return {
    'weekly-tick': async (_payload, { log, scheduledAt }) => {
      const now = ctx.clock.now();
      // BullMQ releases a scheduled tick when the clock of one host reaches its time; another
      // host may run it a few ms earlier by its own clock. Computed then, the run that just fired
      // would not have happened yet ("not due") and the week's emails would be skipped: retried
      // (with backoff) once this clock has reached the scheduled time too.
      const early = scheduledAt ? scheduledAt.getTime() - now.getTime() : 0;
      if (early > 0 && early <= TICK_CLOCK_SKEW_MS) {
        throw new Error(`weekly tick for ${scheduledAt!.toISOString()} runs ${early} ms before its scheduled time by this process's clock: retried`);
      }
      const isoWeek = dueWeek(schedule, now);
      if (!isoWeek) {
        log.info('weekly tick: no week due (a past week is never sent)');
        return { outcome: 'not_due' };
      }
      const { jobId } = await ctx.queues.enqueue('weekly-fanout', { isoWeek });
      return { outcome: 'fanout_enqueued', isoWeek, jobId };
    },
    'weekly-fanout': (payload, helpers) =>
      processWeeklyFanout(payload, { ...fanoutDeps(ctx, helpers.log), progress: (p) => helpers.updateProgress(p) }),
    'weekly-status': (payload, { log }) =>
      processWeeklyStatus(payload, {
        clock: ctx.clock,
        log,
        window: window(ctx),
        record: (input, compose) => recordWeeklyDelivery(ctx.database.db, input, compose),
        compose: (facts) => composeWeeklyEmail(ctx, facts),
        enqueueSend: async (deliveryId) => {
          await ctx.queues.enqueue('email-send', { deliveryId });
        },
      }),
  };
}
