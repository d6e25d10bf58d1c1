/** Outbox rows written many at a time (in the therapist import's write statement, from JSON). */

import type { OutboxRow } from './outbox.js';

/** A row as the single-row append writes it. */
export type OutboxInsert = OutboxRow;

/**
 * Many events that share their envelope in a few kinds (type, version, topic, producer,
 * time): the envelope is sent once per kind and each row carries only its kind, key and
 * payload; PostgreSQL makes the event ids (random UUIDs, as `randomUUID`). For the hundreds
 * of `therapist.created` events of a file this halves what is sent and parsed.
 */
export interface OutboxBatch {
  kinds: Array<{ eventType: string; version: number; topic: string; producer: string; occurredAt: Date }>;
  rows: Array<{ kind: number; key: string; payload: Record<string, unknown> }>;
}

export function outboxBatch(rows: Array<Omit<OutboxInsert, 'eventId'>>): OutboxBatch {
  const batch: OutboxBatch = { kinds: [], rows: [] };
  const kindOf = new Map<string, number>();
  for (const r of rows) {
    const k = `${r.eventType}\u0000${r.version}\u0000${r.topic}\u0000${r.producer}\u0000${r.occurredAt.toISOString()}`;
    let kind = kindOf.get(k);
    if (kind === undefined) {
      kind = batch.kinds.length;
      kindOf.set(k, kind);
      batch.kinds.push({ eventType: r.eventType, version: r.version, topic: r.topic, producer: r.producer, occurredAt: r.occurredAt });
    }
    batch.rows.push({ kind, key: r.key, payload: r.payload });
  }
  return batch;
}

/** The two JSON parameters of an `OutboxBatch`: kinds and rows (see the import's write statement). */
export function outboxBatchParams(b: OutboxBatch): [string, string] {
  return [
    JSON.stringify(b.kinds.map((k, kind) => ({ kind, event_type: k.eventType, version: k.version, topic: k.topic, producer: k.producer, occurred_at: k.occurredAt.toISOString() }))),
    JSON.stringify(b.rows),
  ];
}
