import { asc, count, isNull, min } from 'drizzle-orm';
import type { DbOrTx } from '../client.js';
import { outbox } from '../schema/fleet.js';

export interface OutboxRow {
  eventId: string;
  eventType: string;
  version: number;
  topic: string;
  key: string;
  producer: string;
  payload: Record<string, unknown>;
  occurredAt: Date;
}

/** Writes one event row; call it with the transaction of the change that caused the event. */
export async function insertOutboxRow(tx: DbOrTx, row: OutboxRow): Promise<void> {
  await tx.insert(outbox).values(row);
}

export async function listOutbox(db: DbOrTx, opts: { unpublishedOnly?: boolean; limit?: number } = {}) {
  return db
    .select()
    .from(outbox)
    .where(opts.unpublishedOnly ? isNull(outbox.publishedAt) : undefined)
    .orderBy(asc(outbox.id))
    .limit(opts.limit ?? 100);
}

/** Backlog figures for metrics and health: how many rows wait and how old the oldest is. */
export async function outboxLag(db: DbOrTx, now: Date = new Date()) {
  const [row] = await db
    .select({ pending: count(), oldest: min(outbox.createdAt) })
    .from(outbox)
    .where(isNull(outbox.publishedAt));
  const oldest = row?.oldest ?? null;
  return {
    pending: Number(row?.pending ?? 0),
    oldestAgeSeconds: oldest ? Math.max(0, (now.getTime() - new Date(oldest).getTime()) / 1000) : 0,
  };
}
