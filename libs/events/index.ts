import { randomUUID } from 'node:crypto';
import type { DbOrTx } from '../db/client.js';
import { insertOutboxRow } from '../db/repositories/outbox.js';

/** The envelope every domain event carries (DOMAIN.md section 4). */
export interface EventEnvelope<P extends Record<string, unknown> = Record<string, unknown>> {
  eventId: string;
  eventType: string;
  version: number;
  timestamp: string;
  producer: string;
  payload: P;
}

export const PRODUCER = 'curavani-fleet';

export const topics = {
  patient: 'patient-events',
  therapist: 'therapist-events',
  import: 'import-events',
} as const;

/** Which topic an event type goes to: `patient.*`, `therapist.*`, else the import topic. */
export function topicFor(eventType: string): string {
  if (eventType.startsWith('patient.')) return topics.patient;
  if (eventType.startsWith('therapist.')) return topics.therapist;
  return topics.import;
}

export interface NewEvent<P extends Record<string, unknown>> {
  eventType: string;
  /** Kafka message key: the id of the entity the event is about. */
  key: string | number;
  /** Ids and changed field names only: never names, emails or health data. */
  payload: P;
  version?: number;
  occurredAt?: Date;
}

/**
 * Writes an event into the outbox inside the caller's transaction, so the event exists
 * exactly when the change that caused it does. Returns the envelope as it will be published.
 */
export async function appendEvent<P extends Record<string, unknown>>(
  tx: DbOrTx,
  event: NewEvent<P>,
): Promise<EventEnvelope<P>> {
  const occurredAt = event.occurredAt ?? new Date();
  const envelope: EventEnvelope<P> = {
    eventId: randomUUID(),
    eventType: event.eventType,
    version: event.version ?? 1,
    timestamp: occurredAt.toISOString(),
    producer: PRODUCER,
    payload: event.payload,
  };
  await insertOutboxRow(tx, {
    eventId: envelope.eventId,
    eventType: envelope.eventType,
    version: envelope.version,
    topic: topicFor(envelope.eventType),
    key: String(event.key),
    producer: envelope.producer,
    payload: envelope.payload,
    occurredAt,
  });
  return envelope;
}
