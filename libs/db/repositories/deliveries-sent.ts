import { and, inArray, isNull, lt, or } from 'drizzle-orm';
import type { Tx } from '../client.js';
import { patienten } from '../schema/platform.js';

/** Delivery kind of the weekly patient status emails. */
export const WEEKLY_DELIVERY_KIND = 'weekly-status';

/**
 * What a delivery going out changes besides its own row, in the transaction that marks it
 * `sent` (finishDeliveries). A weekly status email moves the patient's
 * `weekly_update_last_sent` to the send time: "last sent" (staff) and the next email's "since
 * the last update" count from an email that went out, never from one that was recorded and
 * then failed, was dropped or never left. It never moves backwards.
 */
export async function applySentEffects(tx: Tx, sent: Array<{ kind: string; patientId: number | null }>, now: Date): Promise<void> {
  const patientIds = [...new Set(sent.flatMap((s) => (s.kind === WEEKLY_DELIVERY_KIND && s.patientId !== null ? [s.patientId] : [])))];
  if (patientIds.length === 0) return;
  await tx
    .update(patienten)
    .set({ weeklyUpdateLastSent: now })
    .where(and(inArray(patienten.id, patientIds), or(isNull(patienten.weeklyUpdateLastSent), lt(patienten.weeklyUpdateLastSent, now))));
}
