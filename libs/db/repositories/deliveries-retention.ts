import { and, inArray, isNull, lt, or, sql } from 'drizzle-orm';
import type { DbOrTx } from '../client.js';
import { deliveries, type DeliveryStatus } from '../schema/fleet.js';

/**
 * Statuses a delivery never leaves on its own: `sent`, `dropped`, and `failed` (only an
 * operator's requeue of its dead letter puts a failed delivery back to `pending`).
 */
export const deliveryFinalStatuses = ['sent', 'failed', 'dropped'] as const satisfies readonly DeliveryStatus[];

/** A delivery id's form: anything else (a dead letter's payload is not checked) is no delivery. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A PostgreSQL uuid[] literal of the ids (only well-formed uuids: they come from Redis), one
 * parameter however many ids there are (`in (...)` takes one parameter per id, at most 65,534).
 */
export function uuidArray(ids: Iterable<string>): string {
  return `{${[...ids].filter((id) => UUID.test(id)).join(',')}}`;
}

/**
 * The audit target of a dead letter of the delivery (`<queue>/<job id>`): its job id is
 * `email-send.delivery.<id>`, or that with a suffix for a job the sweep or a requeue added
 * (`.sweep.<ms>`, `.retry.<ms>`, `.recover.<n>`).
 */
const emailDeadLetterTarget = (idColumn: unknown) => sql`('email/email-send.delivery.' || ${idColumn})`;

/**
 * An operator discarded the dead letter of the (failed) delivery since it last failed: the audit
 * table says so (`dlq.discard`, written before the entry goes). Without one its dead letter waits,
 * or Redis lost it and the email sweep gives it back. The target is the job id or that with a
 * suffix starting with `.`: the range (pattern operators, served by audit_log_target_idx whatever
 * the collation; `/` follows `.`) finds both by the index, not by reading every audit row per
 * delivery.
 */
export function discardedSinceFailed() {
  const target = emailDeadLetterTarget(deliveries.id);
  return sql`exists (select 1 from fleet.audit_log a where a.target ~>=~ ${target} and a.target ~<~ (${target} || '/')
      and (a.target = ${target} or a.target like ${target} || '.%')
      and a.action = 'dlq.discard'
      and coalesce((a.details->>'deliveryUpdatedAt')::timestamptz >= ${deliveries.updatedAt}, a.created_at >= ${deliveries.updatedAt}))`;
}

/**
 * What a discard of a delivery's dead letter records (`deliveryUpdatedAt` in the audit row's
 * details): the row's `updated_at` then, as text (microseconds kept). discardedSinceFailed
 * compares it with the row's `updated_at`, both written by the fleet's clock: the discard's own
 * time is PostgreSQL's, and with the fleet's clock ahead of it a discard within that lead did not
 * count (the discarded email went out with its batch when a sibling was requeued, and a Redis that
 * lost its data got its dead letter back). Audit rows without it are compared by their time.
 * Nothing for an id that is no delivery's (a dead letter's payload is not checked).
 */
export async function deliveryDiscardDetails(db: DbOrTx, deliveryId: unknown): Promise<{ deliveryUpdatedAt: string } | Record<string, never>> {
  if (typeof deliveryId !== 'string' || !UUID.test(deliveryId)) return {};
  const [row] = await db.execute<{ at: string }>(sql`select updated_at::text as at from fleet.deliveries where id = ${deliveryId}`);
  return row ? { deliveryUpdatedAt: row.at } : {};
}

/**
 * A failed delivery an operator can still requeue: its dead letter waits in `email-dlq`
 * (`requeueable`), or no discard of it is recorded. The second holds when Redis lost the dead
 * letter (restarted without its data; the email sweep gives it back within minutes, if role email
 * runs) or the sender stopped between marking the row failed and adding its dead letter.
 */
function stillRequeueable(requeueable: Iterable<string>) {
  return and(
    sql`${deliveries.status} = 'failed'`,
    or(sql`${deliveries.id} = any(${uuidArray(requeueable)}::uuid[])`, sql`not ${discardedSinceFailed()}`),
  )!;
}

/**
 * Final deliveries whose last change was before `before` and that still hold their contents,
 * except failed ones an operator can still requeue (stillRequeueable: a requeue sends them again
 * and needs the contents). A pending or sending delivery is never one.
 */
function expiredContents(before: Date, requeueable: Iterable<string> | null) {
  return and(
    isNull(deliveries.contentsRemovedAt),
    inArray(deliveries.status, [...deliveryFinalStatuses]),
    lt(deliveries.updatedAt, before),
    requeueable === null ? undefined : sql`not (${stillRequeueable(requeueable)})`,
  );
}

/**
 * For `fleet retention run --dry-run` and the sweep's counts: final deliveries past retention that
 * still hold their contents (`due`), and how many of those are failed ones kept because an
 * operator can still requeue them (`requeueable`, not in `due`).
 */
export async function countExpiredContents(db: DbOrTx, before: Date, requeueable: Iterable<string>): Promise<{ due: number; requeueable: number }> {
  const waiting = stillRequeueable(requeueable);
  const [row] = await db
    .select({
      due: sql<number>`count(*) filter (where not ${waiting})::int`,
      requeueable: sql<number>`count(*) filter (where ${waiting})::int`,
    })
    .from(deliveries)
    .where(expiredContents(before, null));
  return { due: row?.due ?? 0, requeueable: row?.requeueable ?? 0 };
}

/**
 * One batch of the retention sweep of email contents: up to `limit` deliveries past retention
 * (see expiredContents) get an empty subject, HTML and text and no headers (the List-Unsubscribe
 * link carries the patient's token), and `contents_removed_at = at`. What operators and the
 * idempotency logic read stays: id, idempotency key, kind, status, addresses, patient id,
 * provider message id, attempts, last error and every timestamp (`updated_at` too: the daily
 * counts go by it). Rows are taken `FOR UPDATE SKIP LOCKED`, so two sweeps at once never wait on
 * each other and a row in another transaction (an operator's requeue) is left for the next run.
 * Returns how many rows this batch blanked (fewer than `limit`: nothing is left for now).
 */
export async function removeExpiredContents(db: DbOrTx, q: { before: Date; requeueable: Iterable<string>; limit: number; at: Date }): Promise<number> {
  const batch = db
    .select({ id: deliveries.id })
    .from(deliveries)
    .where(expiredContents(q.before, q.requeueable))
    .limit(q.limit)
    .for('update', { skipLocked: true });
  const rows = await db
    .update(deliveries)
    .set({ subject: '', html: '', text: '', headers: {}, contentsRemovedAt: q.at })
    .where(and(inArray(deliveries.id, batch), isNull(deliveries.contentsRemovedAt)))
    .returning({ id: deliveries.id });
  return rows.length;
}
