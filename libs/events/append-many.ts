import { randomUUID } from 'node:crypto';
import type { DbOrTx } from '../db/client.js';
import { insertOutboxRows } from '../db/repositories/therapist-import.js';
import { PRODUCER, topicFor, type NewEvent } from './index.js';

/**
 * `appendEvent` for many events at once: one outbox statement in the caller's transaction,
 * same envelope (event id, type, version, timestamp, producer), same topics.
 */
export async function appendEvents(tx: DbOrTx, events: Array<NewEvent<Record<string, unknown>>>): Promise<void> {
  if (events.length === 0) return;
  await insertOutboxRows(
    tx,
    events.map((e) => {
      const occurredAt = e.occurredAt ?? new Date();
      return {
        eventId: randomUUID(),
        eventType: e.eventType,
        version: e.version ?? 1,
        topic: topicFor(e.eventType),
        key: String(e.key),
        producer: PRODUCER,
        payload: e.payload,
        occurredAt,
      };
    }),
  );
}
