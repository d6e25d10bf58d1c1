import {
  countWeeklyCandidates,
  eligiblePatientIds,
  loadWeeklyFacts,
  recordWeeklyDelivery,
  unwantedWeeklyDeliveries,
  type WeeklyFacts,
} from '../../libs/db/repositories/weekly-status.js';
import type { StillWantedCheck } from '../../libs/mail/still-wanted.js';
import { catalog, jobIdFor, jobOptionsFor, type Handlers } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { isoWeekOf, isoWeekRange } from '../../libs/weekly/iso-week.js';
import { dueWeek } from '../../libs/weekly/schedule.js';
import { signUnsubscribeToken } from '../../libs/weekly/unsubscribe-token.js';
import { processWeeklyFanout, type FanoutDeps } from './process-fanout.js';
import { processWeeklyStatus } from './process-status.js';
import { renderWeeklyEmail } from './template.js';

/** Wiring of the weekly status family: schedule tick -> fan-out per ISO week -> one job per patient. */
function window(ctx: FleetContext) {
  return (isoWeek: string) => {
    const { start, end } = isoWeekRange(isoWeek, ctx.config.weekly.timeZone);
    return { isoWeek, weekStart: start, end };
  };
}

export function currentIsoWeek(ctx: FleetContext): string {
  return isoWeekOf(ctx.clock.now(), ctx.config.weekly.timeZone);
}

export function composeWeeklyEmail(ctx: FleetContext, facts: WeeklyFacts) {
  const w = ctx.config.weekly;
  const token = signUnsubscribeToken(w.unsubscribeSecret, facts.patientId);
  const rendered = renderWeeklyEmail(facts, {
    unsubscribeUrl: `${ctx.config.http.publicBaseUrl}/unsubscribe/${token}`,
    unsubscribeMailto: `mailto:${w.unsubscribeMailto}?subject=${encodeURIComponent(`Abmelden ${token}`)}`,
    contactEmail: w.contactEmail,
    contactPhone: w.contactPhone,
  });
  // Sent from MAIL_FROM (noreply@), but the email invites questions: a reply reaches staff.
  return { ...rendered, fromAddress: ctx.config.mail.from, replyToAddress: w.contactEmail };
}

function fanoutDeps(ctx: FleetContext, log = ctx.log): FanoutDeps {
  const db = ctx.database.db;
  return {
    clock: ctx.clock,
    log,
    pageSize: ctx.config.weekly.pageSize,
    window: window(ctx),
    counts: (w) => countWeeklyCandidates(db, w),
    page: (w, afterId, limit) => eligiblePatientIds(db, w, afterId, limit),
    // One round trip per page (addBulk), each job keyed by patient and week as the catalog says.
    enqueue: async (ids, isoWeek) => {
      const def = catalog['weekly-status'];
      const options = jobOptionsFor('weekly-status', ctx.queues.backoffScale);
      const jobs = ids.map((patientId) => {
        const data = def.schema.parse({ patientId, isoWeek });
        return { name: 'weekly-status', data, opts: { ...options, jobId: jobIdFor('weekly-status', data)! } };
      });
      await ctx.queues.queue(def.queue).addBulk(jobs);
    },
  };
}

/** A fan-out by hand (CLI): the same code as the scheduled one. */
/** A fan-out run by hand; `log`: the caller's (the CLI passes one that leaves the refusal to its own message). */
export function runWeeklyFanout(ctx: FleetContext, input: { isoWeek: string; dryRun: boolean }, log = ctx.log) {
  return processWeeklyFanout(input, fanoutDeps(ctx, log));
}

/** The email a patient would get now (CLI preview); null when the patient does not exist. */
export async function previewWeeklyEmail(ctx: FleetContext, patientId: number) {
  const facts = await loadWeeklyFacts(ctx.database.db, patientId, ctx.clock.now());
  if (!facts) return null;
  return { facts, email: { to: facts.email, from: ctx.config.mail.from, ...composeWeeklyEmail(ctx, facts) } };
}

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
      return u ? [{ id: r.id, reason: `weekly status no longer wanted: ${u.reason}${u.detail ? ` (${u.detail})` : ''}` }] : [];
    });
  };
}

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
