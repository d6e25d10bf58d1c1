import { unwantedWeeklyDeliveries } from '../../libs/db/repositories/weekly-status.js';
import type { StillWantedCheck } from '../../libs/mail/still-wanted.js';
import type { FleetContext } from '../../libs/runtime/index.js';

/**
 * The "still wanted?" check of the email worker for weekly deliveries, asked right before
 * every provider request: an email whose ISO week has ended (in WEEKLY_TZ) is never sent (it
 * would be a second email in a later week), and a patient who opted out (or stopped
 * searching) meanwhile gets nothing. Dropped rows keep the reason, e.g.
 * `weekly status no longer wanted: week_over (2026-W48 ended 2026-11-29T23:00:00.000Z)`.
 */
export function weeklyStillWanted(ctx: FleetContext): StillWantedCheck {
  return async (refs) => {
    const unwanted = await unwantedWeeklyDeliveries(ctx.database.db, refs, { now: ctx.clock.now(), timeZone: ctx.config.weekly.timeZone });
    return refs.flatMap((r) => {
      const u = unwanted.get(r.id);
      return u ? [{ id: r.id, reason: `weekly status no longer wanted: ${u.reason}${u.detail ? ` (${u.detail})` : ''}`, code: u.reason }] : [];
    });
  };
}
