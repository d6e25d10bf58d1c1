import { deliveryAwaitsOperator, failedDeliveriesAwaitingOperator, requeueFailedDelivery, requeueOutlook } from '../../libs/db/repositories/deliveries.js';
import { deliveryDiscardDetails } from '../../libs/db/repositories/deliveries-retention.js';
import { utcSeconds, type DeadLetterHook } from '../../libs/ops/dead-letters.js';
import { catalog, jobIdFor, restoreMissingDeadLetters } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { IDEMPOTENCY_WINDOW_MS } from './process-delivery.js';

/**
 * Failed deliveries wait for an operator through their dead letters (`fleet dlq`, /ops, the
 * dead-letter alert), and the retention sweep keeps their contents only while one waits. When
 * Redis restarted without its data those are gone while the rows still say failed: nobody would
 * see them, and their contents would be blanked. Each such delivery gets its dead letter back
 * (the recorded reason, as a dead letter of a delivery carried in a batch has it), checked under
 * the entry's lock against the row and the audit table then (an operator's requeue or discard in
 * between wins). The usual case costs one query and one listing of the email dead letters.
 */
export async function restoreEmailDeadLetters(ctx: FleetContext): Promise<number> {
  const db = ctx.database.db;
  const rows = await failedDeliveriesAwaitingOperator(db);
  const queue = catalog['email-send'].queue;
  const records = rows.map((r) => ({
    entry: {
      originalQueue: queue,
      originalJobId: jobIdFor('email-send', { deliveryId: r.id })!,
      name: 'email-send',
      data: { deliveryId: r.id },
      reason: r.lastError ?? `delivery ${r.id}: failed (reason not recorded)`,
      code: 'restored',
      attemptsMade: r.attempts,
      enqueuedAt: null,
      failedAt: r.updatedAt.toISOString(),
    },
    stillWanted: () => deliveryAwaitsOperator(db, r.id),
  }));
  return restoreMissingDeadLetters(ctx.queues, queue, records, (data) => (data as { deliveryId?: unknown } | null)?.deliveryId);
}

/** A requeue of a dead-lettered email whose contents the retention sweep removed: it would go out empty. */
export class DeliveryContentsRemovedError extends Error {
  override name = 'DeliveryContentsRemovedError';
}

/**
 * Operator requeue of a dead-lettered email. A delivery whose last provider request got no
 * answer goes out again with its batch under the same idempotency key while the provider keeps
 * it (the provider replays its answer if it had accepted the request); otherwise it goes back to
 * `pending` for a new batch. The notice tells the operator what happened (ids only).
 */
export const emailDeadLetterHook: DeadLetterHook = {
  async requeueAdvice(payloads, db) {
    const ids = payloads.map((p) => {
      const id = (p as { deliveryId?: unknown } | null)?.deliveryId;
      return typeof id === 'string' ? id : null;
    });
    const outlook = await requeueOutlook(db, ids.filter((id): id is string => id !== null), { now: new Date(), windowMs: IDEMPOTENCY_WINDOW_MS });
    return ids.map((id) => {
      const o = id === null ? undefined : outlook.get(id);
      if (!o) return undefined;
      if (o.kind === 'same_key') {
        return `its last provider request got no answer: requeued before ${utcSeconds(o.until)}, it goes out again under the same idempotency key, so at most once`;
      }
      if (o.kind === 'may_duplicate') {
        return `its last provider request got no answer and the provider's 24 h idempotency window is over: a requeue sends it again, and the recipient may already have it (discard it if a second email is worse)`;
      }
      return `its contents were removed on ${utcSeconds(o.at)} (EMAIL_RETENTION_DAYS): it cannot be sent again; discard it`;
    });
  },
  // The row's updated_at goes into the discard's audit row: "discarded since it last failed" is
  // then told by one clock (the fleet's), see discardedSinceFailed.
  async onDiscard(payload, db) {
    return deliveryDiscardDetails(db, (payload as { deliveryId?: unknown } | null)?.deliveryId);
  },
  async onRequeue(payload, db) {
    const id = (payload as { deliveryId?: unknown }).deliveryId;
    if (typeof id !== 'string') return;
    const r = await requeueFailedDelivery(db, id, { now: new Date(), windowMs: IDEMPOTENCY_WINDOW_MS });
    if (r.kind === 'batch') {
      const others = r.rows - 1;
      return (
        `delivery ${id}: its last provider request got no answer, so it goes out again with its batch ${r.batchId} under the same idempotency key ` +
        `(if the provider had accepted it, it replays its answer and nothing is sent twice)` +
        (others > 0 ? `; ${others} other ${others === 1 ? 'delivery of its batch goes' : 'deliveries of its batch go'} with it: requeueing their dead letters sends nothing more` : '')
      );
    }
    if (r.kind === 'pending') {
      if (!r.mayHaveGoneOut) return;
      return (
        `delivery ${id}: its last provider request got no answer and the provider's 24 h idempotency window is over, ` +
        `so it goes out as a new email: the recipient may already have received it (discard the dead letter instead if that is worse than a second email)`
      );
    }
    // Not reset: emptied by the retention sweep (its dead letter was not there when the sweep
    // ran): refused, nothing is sent. Already pending or sent again: the job finds nothing to do.
    if (r.status === 'failed' && r.contentsRemovedAt) {
      throw new DeliveryContentsRemovedError(
        `delivery ${id} cannot be sent again: its contents were removed on ${r.contentsRemovedAt.toISOString()} (EMAIL_RETENTION_DAYS); discard this dead letter`,
      );
    }
    if (r.status === 'sent') return `delivery ${id} was already sent (e.g. with its batch, requeued through another of its deliveries): nothing more to send`;
    if (r.status === 'sending') return `delivery ${id} is already being sent again (e.g. with its batch, requeued through another of its deliveries): nothing more to send`;
    if (r.status === 'pending') return `delivery ${id} already waits to be sent`;
    if (r.status === 'dropped') return `delivery ${id} was dropped since (no longer wanted): nothing to send`;
    return undefined;
  },
};
