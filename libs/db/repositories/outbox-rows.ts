/** Outbox rows written many at a time (one statement per batch, from a JSON record set). */

export interface OutboxInsert {
  eventId: string;
  eventType: string;
  version: number;
  topic: string;
  key: string;
  producer: string;
  payload: Record<string, unknown>;
  occurredAt: Date;
}

/** The insert, its one parameter (`$1`) being `outboxRecordset(rows)`. Same columns as the single-row append. */
export const OUTBOX_RECORDSET_INSERT = `insert into fleet.outbox (event_id, event_type, version, topic, key, producer, payload, occurred_at)
  select r.event_id, r.event_type, r.version, r.topic, r.key, r.producer, r.payload, r.occurred_at
  from jsonb_to_recordset($1::jsonb) as r(event_id uuid, event_type text, version int, topic text, key text, producer text, payload jsonb, occurred_at timestamptz)`;

export function outboxRecordset(rows: OutboxInsert[]): string {
  return JSON.stringify(
    rows.map((r) => ({
      event_id: r.eventId,
      event_type: r.eventType,
      version: r.version,
      topic: r.topic,
      key: r.key,
      producer: r.producer,
      payload: r.payload,
      occurred_at: r.occurredAt.toISOString(),
    })),
  );
}
