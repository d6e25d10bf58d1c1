import type { Logger } from '../../libs/log/index.js';
import type { RecordOutcome, WeekWindow, WeeklyFacts } from '../../libs/db/repositories/weekly-status.js';
import type { Clock } from '../../libs/runtime/clock.js';
import type { RenderedWeeklyEmail } from './template.js';

/** The rendered email with its sender and the address replies go to (WEEKLY_CONTACT_EMAIL). */
export type WeeklyMessage = RenderedWeeklyEmail & { fromAddress: string; replyToAddress: string };

export interface WeeklyStatusDeps {
  clock: Clock;
  log: Logger;
  /** The week's bounds and whether it has already ended at `now`. */
  window(isoWeek: string): WeekWindow & { end: Date };
  /** Records the patient's email of the week once (see recordWeeklyDelivery). */
  record(input: WeekWindow & { patientId: number; now: Date }, compose: (f: WeeklyFacts) => WeeklyMessage): Promise<RecordOutcome>;
  compose(facts: WeeklyFacts): WeeklyMessage;
  /** Enqueues `email-send` for the delivery (idempotent by delivery id). */
  enqueueSend(deliveryId: string): Promise<void>;
}

export type WeeklyStatusResult =
  | { outcome: 'queued' | 'already_recorded'; deliveryId: string }
  | { outcome: 'skipped'; reason: string };

/**
 * Composes and records one patient's weekly email, then hands it to the email worker.
 * A retry after a crash finds the recorded delivery and enqueues its send again (the
 * email-send job id is the delivery id, so it is sent once).
 */
export async function processWeeklyStatus(input: { patientId: number; isoWeek: string }, deps: WeeklyStatusDeps): Promise<WeeklyStatusResult> {
  const now = deps.clock.now();
  const w = deps.window(input.isoWeek);
  if (now >= w.end) {
    deps.log.info({ patientId: input.patientId, isoWeek: input.isoWeek }, 'weekly status for a week that has ended: skipped');
    return { outcome: 'skipped', reason: 'week_over' };
  }
  const result = await deps.record({ ...w, patientId: input.patientId, now }, deps.compose);
  if (result.outcome === 'skipped') {
    deps.log.info({ patientId: input.patientId, isoWeek: input.isoWeek, reason: result.reason }, 'weekly status skipped');
    return { outcome: 'skipped', reason: result.reason };
  }
  await deps.enqueueSend(result.deliveryId);
  deps.log.info({ patientId: input.patientId, isoWeek: input.isoWeek, deliveryId: result.deliveryId, outcome: result.outcome }, 'weekly status queued for sending');
  return { outcome: result.outcome === 'recorded' ? 'queued' : 'already_recorded', deliveryId: result.deliveryId };
}
