import { randomUUID } from 'node:crypto';
import { and, asc, desc, eq, inArray, isNotNull, isNull, lt, ne, or, sql } from 'drizzle-orm';
import type { Db, DbOrTx, Tx } from '../client.js';
import { deliveries } from '../schema/fleet.js';
import { discardedSinceFailed, uuidArray } from './deliveries-retention.js';
import { applySentEffects } from './deliveries-sent.js';

export interface NewDelivery {
  /** Unique per message, e.g. `patient-import.staff.ledger.42` or `weekly.7.2026-W48`. */
  idempotencyKey: string;
  kind: string;
  toAddress: string;
  fromAddress: string;
  /** Reply-To address, when replies should not go to `fromAddress`. */
  replyToAddress?: string | null;
  subject: string;
  html: string;
  text: string;
  headers?: Record<string, string>;
  patientId?: number | null;
  /** When the message was written (default: the database's now); a weekly email's facts are as of this time. */
  createdAt?: Date;
}

/**
 * Records a message to send, inside the caller's transaction. Saying the same idempotency
 * key twice records it once: returns the existing row's id with `created: false`.
 * After the transaction commits, enqueue `email-send` with the id (a sweep also enqueues
 * pending rows, so a crash between commit and enqueue loses nothing).
 */
export async function queueDelivery(tx: DbOrTx, d: NewDelivery): Promise<{ id: string; created: boolean }> {
  const inserted = await tx
    .insert(deliveries)
    .values({ ...d, headers: d.headers ?? {}, replyToAddress: d.replyToAddress ?? null, patientId: d.patientId ?? null })
    .onConflictDoNothing({ target: deliveries.idempotencyKey })
    .returning({ id: deliveries.id });
  if (inserted[0]) return { id: inserted[0].id, created: true };
  const [existing] = await tx
    .select({ id: deliveries.id })
    .from(deliveries)
    .where(eq(deliveries.idempotencyKey, d.idempotencyKey));
  return { id: existing!.id, created: false };
}

export async function getDelivery(db: DbOrTx, id: string) {
  const [row] = await db.select().from(deliveries).where(eq(deliveries.id, id));
  return row ?? null;
}

export async function countDeliveriesByStatus(db: DbOrTx) {
  return db
    .select({ status: deliveries.status, n: sql<number>`count(*)::int` })
    .from(deliveries)
    .groupBy(deliveries.status);
}

// ---------------------------------------------------------------------------------------
// Sending: claim, finish, recover. A delivery is sent at most once: a job claims it (with up
// to 99 other pending deliveries) by moving it from `pending` to `sending` under a row lock,
// and every later provider request for those rows carries the same batch id, hence the same
// provider idempotency key.
// ---------------------------------------------------------------------------------------

export type DeliveryRow = typeof deliveries.$inferSelect;

export interface ClaimOptions {
  /** Most rows in one provider request (1..100). */
  batchSize: number;
  /** Kinds that may share a request with others; null = every kind. */
  batchableKinds: string[] | null;
  now: Date;
}

export type ClaimOutcome =
  /** Freshly claimed: the rows were pending and are now `sending` under a new batch id. */
  | { kind: 'claimed'; batchId: string; rows: DeliveryRow[] }
  /**
   * The job's own batch is still `sending` (a retry, a crash, a takeover by the sweep, an
   * operator's requeue): send it again as it was. `requestRows`: how many rows its earlier
   * requests carried (their form: one row alone or a batch), more than `rows` when a requeue
   * left out a row of it that failed with it, or a row of it was dropped before its last
   * request failed (see claimLocked).
   */
  | { kind: 'resume'; batchId: string; rows: DeliveryRow[]; claimedAt: Date; requestRows: number }
  /** Nothing to do: already sent/failed/dropped, or carried by another job's batch. */
  | { kind: 'noop'; reason: 'missing' | 'sent' | 'failed' | 'dropped' | 'claimed-by-other' };

async function sendingRowsOfBatch(tx: DbOrTx, batchId: string): Promise<DeliveryRow[]> {
  return tx
    .select()
    .from(deliveries)
    .where(and(eq(deliveries.batchId, batchId), eq(deliveries.status, 'sending')))
    .orderBy(asc(deliveries.id))
    .for('update');
}

/**
 * Claims the delivery of a job for sending. A pending delivery becomes the leader of a new
 * batch with up to `batchSize - 1` other pending deliveries of batchable kinds (oldest first,
 * `FOR UPDATE SKIP LOCKED`, so concurrent jobs never share rows). A delivery that leads a
 * batch still `sending` resumes that batch unchanged.
 */
export async function claimDeliveries(db: Db, deliveryId: string, opts: ClaimOptions): Promise<ClaimOutcome> {
  for (let round = 0; ; round++) {
    // Fast path, one query without a transaction: during a large send almost every job finds
    // its delivery already carried by another job's batch.
    const [glance] = await db
      .select({ status: deliveries.status, leader: deliveries.batchLeaderId })
      .from(deliveries)
      .where(eq(deliveries.id, deliveryId));
    if (!glance) return { kind: 'noop', reason: 'missing' };
    if (glance.status !== 'pending' && glance.leader !== deliveryId) {
      return { kind: 'noop', reason: glance.status === 'sending' ? 'claimed-by-other' : glance.status };
    }
    // Claims of fresh batches take turns (a transaction-level advisory lock, held for a few
    // milliseconds), so jobs that start together fill one batch after another instead of
    // each leading a small one. A job that finds the lock taken does not wait inside the
    // database (that would hold a pooled connection): it looks again shortly, usually to
    // find its delivery carried by the batch being claimed.
    const blocking = round >= 100;
    const outcome = await db.transaction(async (tx) => {
      if (glance.status === 'pending') {
        if (blocking) await tx.execute(sql`select pg_advisory_xact_lock(hashtext('fleet.deliveries.claim'))`);
        else {
          const [got] = await tx.execute<{ ok: boolean }>(sql`select pg_try_advisory_xact_lock(hashtext('fleet.deliveries.claim')) as ok`);
          if (!got?.ok) return null;
        }
      }
      return claimLocked(tx, deliveryId, opts);
    });
    if (outcome) return outcome;
    await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
  }
}

async function claimLocked(tx: Tx, deliveryId: string, opts: ClaimOptions): Promise<ClaimOutcome> {
  const [own] = await tx.select().from(deliveries).where(eq(deliveries.id, deliveryId)).for('update');
  if (!own) return { kind: 'noop', reason: 'missing' };
  if (own.status !== 'pending') {
    // Only the leader resumes a batch; the other rows' jobs are no-ops.
    if (own.batchId && own.batchLeaderId === own.id) {
      const rows = await sendingRowsOfBatch(tx, own.batchId);
      if (rows.length) {
        const claimedAt = rows.reduce((min, r) => (r.claimedAt && r.claimedAt < min ? r.claimedAt : min), rows[0]!.claimedAt ?? opts.now);
        // Rows an earlier request of the batch may have carried that are no longer `sending`: failed
        // with it and left out of a requeue, or dropped as no longer wanted without an answer that
        // settled them (they keep the mark an unanswered request left on every row it carried).
        const [left] = await tx
          .select({ n: sql<number>`count(*)::int` })
          .from(deliveries)
          .where(and(eq(deliveries.batchId, own.batchId), inArray(deliveries.status, ['failed', 'dropped']), eq(deliveries.outcomeUnknown, true)));
        return { kind: 'resume', batchId: own.batchId, rows, claimedAt, requestRows: rows.length + (left?.n ?? 0) };
      }
    }
    return { kind: 'noop', reason: own.status === 'sending' ? 'claimed-by-other' : own.status };
  }
  const batchable = opts.batchableKinds === null || opts.batchableKinds.includes(own.kind);
  const others =
    batchable && opts.batchSize > 1
      ? await tx
          .select({ id: deliveries.id })
          .from(deliveries)
          .where(
            and(
              eq(deliveries.status, 'pending'),
              ne(deliveries.id, own.id),
              opts.batchableKinds === null ? undefined : inArray(deliveries.kind, opts.batchableKinds),
            ),
          )
          .orderBy(asc(deliveries.createdAt))
          .limit(opts.batchSize - 1)
          .for('update', { skipLocked: true })
      : [];
  const batchId = randomUUID();
  const ids = [own.id, ...others.map((r) => r.id)];
  const rows = await tx
    .update(deliveries)
    .set({ status: 'sending', batchId, batchLeaderId: own.id, claimedAt: opts.now, updatedAt: opts.now })
    .where(inArray(deliveries.id, ids))
    .returning();
  rows.sort((a, b) => a.id.localeCompare(b.id));
  return { kind: 'claimed', batchId, rows };
}

export interface BatchOutcome {
  sent: Array<{ id: string; providerMessageId: string }>;
  /**
   * `outcomeUnknown`: true when the last request got no answer that says what became of the
   * row (it may have been accepted), false when an answer settled it; absent keeps what earlier
   * requests of the batch left (see recordDeliveryAttempt).
   */
  failed: Array<{ id: string; reason: string; outcomeUnknown?: boolean }>;
  /** `code`: the still-wanted check's reason code (`drop_reason`). */
  dropped: Array<{ id: string; reason: string; code?: string }>;
  /**
   * Rows the provider answered with a transient error of their own inside a request that went
   * through (the outbox folder: a full disk for one message): back to `pending`, out of the
   * batch, to be sent in a batch of their own (a new idempotency key: this request's answer
   * for them would only be replayed).
   */
  retry?: Array<{ id: string; reason: string }>;
}

/**
 * Records the end of some rows of a batch in one transaction; only rows still `sending` in
 * that batch change. Rows that become `sent` apply their kind's effects in the same
 * transaction (applySentEffects).
 */
export async function finishDeliveries(db: Db, batchId: string, outcome: BatchOutcome, now: Date): Promise<number> {
  if (!outcome.sent.length && !outcome.failed.length && !outcome.dropped.length && !outcome.retry?.length) return 0;
  return db.transaction(async (tx) => {
    let changed = 0;
    const inBatch = (id: string) => and(eq(deliveries.id, id), eq(deliveries.batchId, batchId), eq(deliveries.status, 'sending'));
    if (outcome.sent.length) {
      const values = sql.join(
        outcome.sent.map((s) => sql`(${s.id}::uuid, ${s.providerMessageId}::text)`),
        sql`, `,
      );
      const sent = await tx.execute<{ kind: string; patient_id: number | null }>(sql`
        update ${deliveries} as d
           set status = 'sent', provider_message_id = v.pid, sent_at = ${now.toISOString()}::timestamptz,
               updated_at = ${now.toISOString()}::timestamptz, attempts = d.attempts + 1, last_error = null,
               attempt_started_at = null, outcome_unknown = false
          from (values ${values}) as v(id, pid)
         where d.id = v.id and d.batch_id = ${batchId} and d.status = 'sending'
        returning d.kind, d.patient_id`);
      changed += sent.length;
      // e.g. the patient's weekly_update_last_sent: it moves only with a delivery that went out
      await applySentEffects(tx, sent.map((r) => ({ kind: r.kind, patientId: r.patient_id === null ? null : Number(r.patient_id) })), now);
    }
    for (const f of outcome.failed) {
      const r = await tx
        .update(deliveries)
        .set({
          status: 'failed',
          lastError: f.reason,
          lastErrorAt: now,
          attempts: sql`${deliveries.attempts} + 1`,
          updatedAt: now,
          attemptStartedAt: null,
          ...(f.outcomeUnknown !== undefined ? { outcomeUnknown: f.outcomeUnknown } : {}),
        })
        .where(inBatch(f.id))
        .returning({ id: deliveries.id });
      changed += r.length;
    }
    for (const r of outcome.retry ?? []) {
      const back = await tx
        .update(deliveries)
        .set({ status: 'pending', batchId: null, lastError: r.reason, lastErrorAt: now, attempts: sql`${deliveries.attempts} + 1`, updatedAt: now, attemptStartedAt: null, outcomeUnknown: false })
        .where(inBatch(r.id))
        .returning({ id: deliveries.id });
      changed += back.length;
    }
    for (const d of outcome.dropped) {
      const r = await tx
        .update(deliveries)
        .set({ status: 'dropped', lastError: d.reason, dropReason: d.code ?? null, updatedAt: now })
        .where(inBatch(d.id))
        .returning({ id: deliveries.id });
      changed += r.length;
    }
    return changed;
  });
}

/**
 * Takes the batch's attempt lease right before a provider request: succeeds when no request
 * for the batch is in flight (or the one that was started before `expiredBefore` died). Taking
 * over a dead request's lease marks the rows `outcome_unknown`: its worker died without an
 * answer, and the provider may have accepted it (a later 429 or refusal does not settle that).
 */
export async function beginDeliveryAttempt(db: DbOrTx, batchId: string, now: Date, expiredBefore: Date): Promise<boolean> {
  const rows = await db
    .update(deliveries)
    .set({ attemptStartedAt: now, updatedAt: now, outcomeUnknown: sql`${deliveries.outcomeUnknown} or ${deliveries.attemptStartedAt} is not null` })
    .where(
      and(
        eq(deliveries.batchId, batchId),
        eq(deliveries.status, 'sending'),
        or(isNull(deliveries.attemptStartedAt), lt(deliveries.attemptStartedAt, expiredBefore)),
      ),
    )
    .returning({ id: deliveries.id });
  return rows.length > 0;
}

/**
 * A provider request for the batch failed transiently: count it, keep the rows claimed, free the
 * lease. `outcomeUnknown`: the request got no answer that says it was not accepted (a timeout, a
 * 5xx, a dropped connection); once set, it stays until an answer settles the rows.
 */
export async function recordDeliveryAttempt(db: DbOrTx, batchId: string, reason: string, now: Date, outcomeUnknown = false): Promise<void> {
  await db
    .update(deliveries)
    .set({
      attempts: sql`${deliveries.attempts} + 1`,
      lastError: reason,
      lastErrorAt: now,
      updatedAt: now,
      attemptStartedAt: null,
      ...(outcomeUnknown ? { outcomeUnknown: true } : {}),
    })
    .where(and(eq(deliveries.batchId, batchId), eq(deliveries.status, 'sending')));
}

/** Nothing of the batch went to the provider: give its rows back (`pending`). */
export async function releaseDeliveries(db: DbOrTx, batchId: string, now: Date): Promise<void> {
  await db
    .update(deliveries)
    .set({ status: 'pending', batchId: null, batchLeaderId: null, claimedAt: null, attemptStartedAt: null, updatedAt: now })
    .where(and(eq(deliveries.batchId, batchId), eq(deliveries.status, 'sending')));
}

/** What an operator's requeue did with a failed delivery (see requeueFailedDelivery). */
export type FailedDeliveryRequeue =
  /** Back to `pending`: it goes out in a new batch. `mayHaveGoneOut`: its last request got no answer and the provider's window is over. */
  | { kind: 'pending'; mayHaveGoneOut: boolean }
  /** Its batch is `sending` again under its batch id (hence its idempotency key), led by this delivery; `rows` counts this one. */
  | { kind: 'batch'; batchId: string; rows: number }
  /** Nothing changed: not failed (already pending, sending or sent again), or its contents were removed. */
  | { kind: 'unchanged'; status: DeliveryRow['status'] | null; contentsRemovedAt: Date | null };

/**
 * Operator requeue of a failed delivery. Never one whose contents the retention sweep removed:
 * it would go out empty.
 *
 * - Its last provider request got no answer (`outcome_unknown`) and its batch was claimed less
 *   than `windowMs` ago (the provider's idempotency window, minus a margin): the batch goes back
 *   to `sending` as it was (same batch id, claim time and rows), with this delivery as leader, so
 *   its job resends it under the same key: the provider replays its first answer if it had
 *   accepted it, or sends it now. The batch's other rows that failed with it come back too (the
 *   same payload); their own dead letters then have nothing left to send. A row of it whose dead
 *   letter an operator discarded, or whose contents are gone, stays out (should the provider
 *   hold the fuller payload, it refuses the changed one with 409 and nothing goes out twice).
 * - Otherwise back to `pending`, out of its batch: a new batch and key. Right for a request the
 *   provider answered (a rejection: the email never went out); for an unanswered one past the
 *   window the key no longer protects it, and `mayHaveGoneOut` says so.
 */
export async function requeueFailedDelivery(db: Db, deliveryId: string, opts: { now: Date; windowMs: number }): Promise<FailedDeliveryRequeue> {
  const { now } = opts;
  return db.transaction(async (tx): Promise<FailedDeliveryRequeue> => {
    // The delivery and the rest of its batch, locked in one order: requeues of two of them at the
    // same moment (each would update the other's row) wait for each other instead of deadlocking.
    const locked = await tx
      .select()
      .from(deliveries)
      .where(or(eq(deliveries.id, deliveryId), sql`${deliveries.batchId} = (select d.batch_id from fleet.deliveries d where d.id = ${deliveryId})`))
      .orderBy(asc(deliveries.id))
      .for('update');
    const own = locked.find((r) => r.id === deliveryId);
    if (!own || own.status !== 'failed' || own.contentsRemovedAt) {
      return { kind: 'unchanged', status: own?.status ?? null, contentsRemovedAt: own?.contentsRemovedAt ?? null };
    }
    const path = requeuePath(own, opts.windowMs, now);
    if (path.kind === 'same_key') {
      const batchId = own.batchId!;
      const rows = await tx
        .update(deliveries)
        .set({ status: 'sending', batchLeaderId: own.id, attemptStartedAt: null, updatedAt: now })
        .where(
          and(
            eq(deliveries.batchId, batchId),
            or(eq(deliveries.id, own.id), and(awaitingOperator(), eq(deliveries.outcomeUnknown, true))),
          ),
        )
        .returning({ id: deliveries.id });
      return { kind: 'batch', batchId, rows: rows.length };
    }
    await tx
      .update(deliveries)
      .set({ status: 'pending', batchId: null, batchLeaderId: null, claimedAt: null, attemptStartedAt: null, outcomeUnknown: false, updatedAt: now })
      .where(eq(deliveries.id, own.id));
    return { kind: 'pending', mayHaveGoneOut: path.kind === 'may_duplicate' };
  });
}

/**
 * How an operator's requeue sends a failed delivery (requeueFailedDelivery): its last request got
 * no answer and the provider still keeps its key (`same_key`, until when); got no answer and the
 * window is over (`may_duplicate`: a new batch, perhaps a second email); or a new batch.
 */
function requeuePath(
  row: Pick<DeliveryRow, 'outcomeUnknown' | 'batchId' | 'claimedAt'>,
  windowMs: number,
  now: Date,
): { kind: 'same_key'; until: Date } | { kind: 'may_duplicate' } | { kind: 'new_batch' } {
  if (!row.outcomeUnknown || row.batchId === null || row.claimedAt === null) return { kind: 'new_batch' };
  const until = new Date(row.claimedAt.getTime() + windowMs);
  return now <= until ? { kind: 'same_key', until } : { kind: 'may_duplicate' };
}

/** What a requeue of a failed delivery would do, told before it (requeueOutlook). */
export type RequeueOutlook =
  /** Its batch goes out again under its key: sent at most once. */
  | { kind: 'same_key'; until: Date }
  /** Its last request got no answer and the window is over: it goes out again, perhaps a second time. */
  | { kind: 'may_duplicate' }
  /** Its contents were removed: a requeue is refused. */
  | { kind: 'contents_removed'; at: Date };

/**
 * For an operator about to requeue failed deliveries: what the requeue would do, where it is
 * not simply "sent again" (the same rules as requeueFailedDelivery). Ids not failed (or no
 * delivery id at all) are left out.
 */
export async function requeueOutlook(db: DbOrTx, ids: string[], opts: { now: Date; windowMs: number }): Promise<Map<string, RequeueOutlook>> {
  const out = new Map<string, RequeueOutlook>();
  const array = uuidArray(new Set(ids)); // well-formed ids only
  if (array === '{}') return out;
  const rows = await db
    .select({ id: deliveries.id, outcomeUnknown: deliveries.outcomeUnknown, batchId: deliveries.batchId, claimedAt: deliveries.claimedAt, contentsRemovedAt: deliveries.contentsRemovedAt })
    .from(deliveries)
    // One array parameter: a weekly send the provider refused leaves up to 100,000 email dead
    // letters, more than the 65,534 parameters one statement takes as `in (...)`.
    .where(and(sql`${deliveries.id} = any(${array}::uuid[])`, eq(deliveries.status, 'failed')));
  for (const r of rows) {
    if (r.contentsRemovedAt) {
      out.set(r.id, { kind: 'contents_removed', at: r.contentsRemovedAt });
      continue;
    }
    const path = requeuePath(r, opts.windowMs, opts.now);
    if (path.kind !== 'new_batch') out.set(r.id, path);
  }
  return out;
}

/** Pending deliveries created before `before`, oldest first (the sweep makes sure each has a job). */
export async function listStalePending(db: DbOrTx, before: Date, limit: number): Promise<string[]> {
  const rows = await db
    .select({ id: deliveries.id })
    .from(deliveries)
    .where(and(eq(deliveries.status, 'pending'), lt(deliveries.createdAt, before)))
    .orderBy(asc(deliveries.createdAt))
    .limit(limit);
  return rows.map((r) => r.id);
}

/**
 * Batches still `sending` none of whose rows was written since `before` (no claim, attempt,
 * answer or requeue): their leader's job died or gave up. Not by `claimed_at`: a batch an
 * operator requeued keeps its claim time (its provider key's window counts from it) and has a
 * job of its own.
 */
export async function listStaleClaims(db: DbOrTx, before: Date, limit: number) {
  return db
    .select({
      batchId: deliveries.batchId,
      leaderId: deliveries.batchLeaderId,
      claimedAt: sql<Date>`min(${deliveries.claimedAt})`.mapWith(deliveries.claimedAt),
      rows: sql<number>`count(*)::int`,
    })
    .from(deliveries)
    .where(eq(deliveries.status, 'sending'))
    .groupBy(deliveries.batchId, deliveries.batchLeaderId)
    .having(sql`max(${deliveries.updatedAt}) < ${before.toISOString()}::timestamptz`)
    .limit(limit);
}

/**
 * The daily health view's email figures: sent, failed and dropped (no longer wanted) since
 * `since`, and what waits now (pending, or claimed and being sent) with the oldest one's age.
 */
export async function deliveryActivity(
  db: DbOrTx,
  since: Date,
  now: Date,
): Promise<{ sent: number; failed: number; dropped: number; pending: number; oldestPendingAgeSeconds: number | null }> {
  const d = deliveries;
  const s = since.toISOString();
  const [row] = await db
    .select({
      sent: sql<number>`count(*) filter (where ${d.status} = 'sent' and ${d.sentAt} >= ${s}::timestamptz)::int`,
      failed: sql<number>`count(*) filter (where ${d.status} = 'failed' and ${d.updatedAt} >= ${s}::timestamptz)::int`,
      dropped: sql<number>`count(*) filter (where ${d.status} = 'dropped' and ${d.updatedAt} >= ${s}::timestamptz)::int`,
      pending: sql<number>`count(*) filter (where ${d.status} in ('pending', 'sending'))::int`,
      oldestPending: sql<number | null>`extract(epoch from min(${d.createdAt}) filter (where ${d.status} in ('pending', 'sending')))::float8`,
    })
    .from(d);
  const oldest = row?.oldestPending ?? null;
  return {
    sent: row?.sent ?? 0,
    failed: row?.failed ?? 0,
    dropped: row?.dropped ?? 0,
    pending: row?.pending ?? 0,
    oldestPendingAgeSeconds: oldest === null ? null : Math.max(0, now.getTime() / 1000 - oldest),
  };
}

/**
 * Deliveries waiting for a retry after a failed provider request (pending or being sent, with a
 * last error): how many, and the latest error with its time (`fleet status`), so a provider
 * outage shows before FleetJobsRetrying fires. `since`: only those whose provider request failed
 * at or after it (GET /ready: failing now). The time is `last_error_at` (an operator's requeue
 * moves `updated_at`, not it; rows from before that column: `updated_at`). The errors carry no
 * address (see SendResult).
 */
export async function retryingDeliveries(db: DbOrTx, opts: { since?: Date } = {}): Promise<{ count: number; lastError: string | null; lastAt: Date | null }> {
  const d = deliveries;
  const at = sql`coalesce(${d.lastErrorAt}, ${d.updatedAt})`;
  const rows = await db
    .select({ count: sql<number>`count(*) over ()::int`, lastError: d.lastError, lastAtMs: sql<number>`(extract(epoch from ${at}) * 1000)::float8` })
    .from(d)
    .where(and(inArray(d.status, ['pending', 'sending']), isNotNull(d.lastError), opts.since ? sql`${at} >= ${opts.since.toISOString()}::timestamptz` : undefined))
    .orderBy(desc(at))
    .limit(1);
  const r = rows[0];
  return r ? { count: r.count, lastError: r.lastError, lastAt: new Date(r.lastAtMs) } : { count: 0, lastError: null, lastAt: null };
}

/**
 * Failed deliveries that wait for an operator: contents kept and no `dlq.discard` of their dead
 * letter since they failed (a requeued one that failed again waits anew). Their dead letters are
 * in Redis; when Redis lost them (restarted without its data), the email sweep gives them back.
 */
function awaitingOperator() {
  return and(
    eq(deliveries.status, 'failed'),
    isNull(deliveries.contentsRemovedAt),
    sql`not ${discardedSinceFailed()}`,
  );
}

export async function failedDeliveriesAwaitingOperator(db: DbOrTx, limit = 10_000) {
  return db
    .select({ id: deliveries.id, lastError: deliveries.lastError, attempts: deliveries.attempts, updatedAt: deliveries.updatedAt })
    .from(deliveries)
    .where(awaitingOperator())
    .orderBy(asc(deliveries.updatedAt))
    .limit(limit);
}

/** Whether one delivery still waits for an operator (see failedDeliveriesAwaitingOperator). */
export async function deliveryAwaitsOperator(db: DbOrTx, id: string): Promise<boolean> {
  const [row] = await db.select({ id: deliveries.id }).from(deliveries).where(and(eq(deliveries.id, id), awaitingOperator()));
  return Boolean(row);
}
