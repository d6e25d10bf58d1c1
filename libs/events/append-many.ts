import type { OutboxInsert } from '../db/repositories/outbox-rows.js';
import { PRODUCER, topicFor, type NewEvent } from './index.js';

/**
 * The envelopes of many events without their ids (the batch insert makes those): same type,
 * version, timestamp, producer and topics as `appendEvent`.
 */
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
