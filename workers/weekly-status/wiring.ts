import { countWeeklyCandidates, eligiblePatientIds } from '../../libs/db/repositories/weekly-status.js';
import { catalog, jobIdFor, jobOptionsFor } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { isoWeekRange } from '../../libs/weekly/iso-week.js';
import type { FanoutDeps } from './process-fanout.js';

/** Wiring of the weekly status family: schedule tick -> fan-out per ISO week -> one job per patient. */
export function window(ctx: FleetContext) {
  return (isoWeek: string) => {
    const { start, end } = isoWeekRange(isoWeek, ctx.config.weekly.timeZone);
    return { isoWeek, weekStart: start, end };
  };
}

export function fanoutDeps(ctx: FleetContext, log = ctx.log): FanoutDeps {
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
