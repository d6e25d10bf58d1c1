import { randomUUID } from 'node:crypto';
import type { DbOrTx } from '../db/client.js';
import type { OutboxInsert } from '../db/repositories/outbox-rows.js';
import { insertOutboxRows } from '../db/repositories/therapist-import.js';
import { PRODUCER, topicFor, type NewEvent } from './index.js';

/** The envelopes of many events without their ids: same type, version, timestamp, producer and topics as `appendEvent`. */
export function outboxEnvelopes(events: Array<NewEvent<Record<string, unknown>>>): Array<Omit<OutboxInsert, 'eventId'>> {
  return events.map((e) => ({
    eventType: e.eventType,
    version: e.version ?? 1,
    topic: topicFor(e.eventType),
    key: String(e.key),
    producer: PRODUCER,
    payload: e.payload,
    occurredAt: e.occurredAt ?? new Date(),
  }));
}

/** The outbox rows of many events: envelopes as `outboxEnvelopes`, each with a new event id. */
export function outboxRows(events: Array<NewEvent<Record<string, unknown>>>): OutboxInsert[] {
  return outboxEnvelopes(events).map((e) => ({ eventId: randomUUID(), ...e }));
}

/** `appendEvent` for many events at once: one outbox statement in the caller's transaction. */
export async function appendEvents(tx: DbOrTx, events: Array<NewEvent<Record<string, unknown>>>): Promise<void> {
  if (events.length === 0) return;
  await insertOutboxRows(tx, outboxRows(events));
}
