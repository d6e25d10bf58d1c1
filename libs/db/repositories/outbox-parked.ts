import { and, asc, eq, isNotNull, isNull, sql } from 'drizzle-orm';
import type { Db, DbOrTx } from '../client.js';
import { outbox } from '../schema/fleet.js';
import { recordAudit } from './audit.js';
import { PARKING_LOCK } from './outbox-relay.js';

/**
 * Parked outbox events: ones Kafka refused for good (message too large, invalid record, topic
 * not authorised, ...) and the later events of the same topic and key, held behind them so a
 * consumer never sees event n+1 of an entity without event n. The relay skips parked rows;
 * retention never deletes them. After the cause is fixed (topic ACL, broker's message size
 * limit) an operator puts them back (`fleet events retry-parked`): they keep their event id, so
 * consumers that got an earlier copy drop the repeat.
 */

export interface ParkedEventView {
  id: number;
  eventId: string;
  eventType: string;
  topic: string;
  /** The entity id (Kafka key). */
  key: string;
  createdAt: Date;
  parkedAt: Date;
  /** `<Kafka error type>: <Kafka's message>` for a refused event, `held behind <event id>` for its followers. */
  reason: string;
  attempts: number;
}

/** Parked events, oldest first. */
export async function listParked(db: DbOrTx, opts: { topic?: string; limit?: number } = {}): Promise<ParkedEventView[]> {
  const rows = await db
    .select({
      id: outbox.id,
      eventId: outbox.eventId,
      eventType: outbox.eventType,
      topic: outbox.topic,
      key: outbox.key,
      createdAt: outbox.createdAt,
      parkedAt: outbox.parkedAt,
      reason: outbox.parkReason,
      attempts: outbox.attempts,
    })
    .from(outbox)
    .where(and(isNotNull(outbox.parkedAt), isNull(outbox.publishedAt), opts.topic ? eq(outbox.topic, opts.topic) : undefined))
    .orderBy(asc(outbox.id))
    .limit(opts.limit ?? 100);
  return rows.map((r) => ({ ...r, parkedAt: r.parkedAt!, reason: r.reason ?? '' }));
}

export type RetryParkedTarget = { all: true; topic?: string } | { eventId: string };

/** The event id of the parked outbox row number `id` (the `id` column of `fleet events list`); null when no parked row has it. */
export async function parkedEventIdOfRow(db: DbOrTx, id: number): Promise<string | null> {
  const [row] = await db
    .select({ eventId: outbox.eventId })
    .from(outbox)
    .where(and(eq(outbox.id, id), isNotNull(outbox.parkedAt), isNull(outbox.publishedAt)));
  return row?.eventId ?? null;
}

export class ParkedEventNotFound extends Error {
  override name = 'ParkedEventNotFound';
  constructor(readonly eventId: string) {
    super(`no parked event with event id ${eventId}`);
  }
}

/**
 * Puts parked events back in line for the relay (parked_at and park_reason cleared; attempts
 * and last_error kept as history), and writes one audit row. With an event id, every parked
 * event of that event's topic and key goes back (the refused one and those held behind it),
 * so they are published again in their order; an event un-parked alone behind a still parked
 * one would just be held again. If Kafka still refuses, the relay parks them again.
 * Waits for the relay's drain in progress to end (PARKING_LOCK), so the next drain reads the
 * events put back before any later event of their key.
 */
export async function retryParked(db: Db, target: RetryParkedTarget, action: { actor: string; reason: string }): Promise<{ retried: number }> {
  const parked = and(isNotNull(outbox.parkedAt), isNull(outbox.publishedAt));
  return db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${PARKING_LOCK[0]}::int4, ${PARKING_LOCK[1]}::int4)`);
    let which;
    if ('eventId' in target) {
      const [chain] = await tx
        .select({ topic: outbox.topic, key: outbox.key })
        .from(outbox)
        .where(and(parked, eq(outbox.eventId, target.eventId)));
      if (!chain) throw new ParkedEventNotFound(target.eventId);
      which = and(parked, eq(outbox.topic, chain.topic), eq(outbox.key, chain.key));
    } else {
      which = and(parked, target.topic ? eq(outbox.topic, target.topic) : undefined);
    }
    const rows = await tx.update(outbox).set({ parkedAt: null, parkReason: null }).where(which).returning({ id: outbox.id });
    await recordAudit(tx, {
      actor: action.actor,
      action: 'events.retry-parked',
      target: 'eventId' in target ? target.eventId : target.topic ? `topic:${target.topic}` : 'all',
      reason: action.reason,
      details: { retried: rows.length },
    });
    return { retried: rows.length };
  });
}
