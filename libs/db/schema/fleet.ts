import { sql } from 'drizzle-orm';
import {
  bigserial,
  boolean,
  index,
  integer,
  jsonb,
  pgSchema,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

/** The fleet's own tables. Always migrated, whatever database the fleet runs against. */
export const fleet = pgSchema('fleet');

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/** Every operator action (requeue, discard, ...): who, what, when, why. */
export const auditLog = fleet.table('audit_log', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  actor: text('actor').notNull(),
  action: text('action').notNull(),
  target: text('target').notNull(),
  reason: text('reason'),
  details: jsonb('details').$type<Record<string, unknown>>().notNull().default({}),
  createdAt: ts('created_at').notNull().defaultNow(),
}, (t) => [
  // Lookups by target (`<queue>/<job id>`, a record): equal, or by prefix with the pattern
  // operators (`~>=~`, `~<~`) whatever the database's collation.
  index('audit_log_target_idx').using('btree', t.target.op('text_pattern_ops')),
]);

export const deliveryStatuses = ['pending', 'sending', 'sent', 'failed', 'dropped'] as const;
export type DeliveryStatus = (typeof deliveryStatuses)[number];

/**
 * One row per outgoing email. The unique idempotency key makes "send this" safe to say
 * twice; the status makes "sent" durable beyond the provider's 24 h idempotency window.
 */
export const deliveries = fleet.table(
  'deliveries',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    idempotencyKey: text('idempotency_key').notNull(),
    kind: text('kind').notNull(),
    toAddress: text('to_address').notNull(),
    fromAddress: text('from_address').notNull(),
    /**
     * Where a reply goes (Reply-To), when not to `from_address` (e.g. the weekly email: sent
     * from noreply@, replies to WEEKLY_CONTACT_EMAIL). Null: no Reply-To (rows queued before
     * the column existed keep the exact payload of their earlier provider requests).
     */
    replyToAddress: text('reply_to_address'),
    subject: text('subject').notNull(),
    html: text('html').notNull(),
    text: text('text').notNull(),
    headers: jsonb('headers').$type<Record<string, string>>().notNull().default({}),
    /** Patient the message is about, when any (checked again at send time, e.g. opt-out). */
    patientId: integer('patient_id'),
    status: text('status').$type<DeliveryStatus>().notNull().default('pending'),
    providerMessageId: text('provider_message_id'),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    /**
     * When a provider request for this row last failed (the time of `last_error` when it is a
     * provider's error): an operator's requeue or a batch given back moves `updated_at` but not
     * this, so "failing now" (GET /ready, `fleet status`) is judged by it. Null: none failed
     * (or the row failed before the column existed).
     */
    lastErrorAt: ts('last_error_at'),
    /**
     * A dropped row's reason as a code of its kind's "still wanted?" check (e.g. `opted_out`,
     * `address_changed`, `week_over`); `last_error` keeps the sentence. Null: not dropped, or
     * dropped before the column existed.
     */
    dropReason: text('drop_reason'),
    /**
     * The provider request that carries this row (one row alone, or up to 100 in a batch).
     * Set when the row is claimed (`sending`); a retry re-sends exactly the same rows under
     * the same provider idempotency key, so a request that may have gone through is never
     * regrouped into a different one.
     */
    batchId: uuid('batch_id'),
    /** The delivery whose job claimed the batch and is responsible for sending it. */
    batchLeaderId: uuid('batch_leader_id'),
    /**
   * When the batch was claimed; the provider's idempotency window for its key counts from here.
   * A batch whose rows stand still (no write) for MAIL_SENDING_STALE_MS is recovered by the sweep.
   */
    claimedAt: ts('claimed_at'),
    /**
     * Set while a provider request for the batch is in flight (a lease): a second job for
     * the same batch waits instead of sending alongside; cleared when the request ends. A
     * lease left by a crashed worker expires after the request time limit.
     */
    attemptStartedAt: ts('attempt_started_at'),
    /**
     * A provider request of this row's batch got no answer that says what became of it (a
     * timeout, a 5xx, a dropped connection: the provider may have accepted it), and no later
     * answer settled it. Kept when the row fails for good: an operator's requeue within the
     * provider's idempotency window then resends the batch under its key (batch_id, claimed_at)
     * instead of in a new batch, so an email the provider had accepted does not go out twice.
     */
    outcomeUnknown: boolean('outcome_unknown').notNull().default(false),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
    sentAt: ts('sent_at'),
    /**
     * When the retention sweep blanked the contents (subject, html and text emptied, headers
     * `{}`) of a final delivery past EMAIL_RETENTION_DAYS; null while they are kept. The row
     * itself stays (idempotency key, status, addresses, timestamps), and `updated_at` does not
     * move with it.
     */
    contentsRemovedAt: ts('contents_removed_at'),
  },
  (t) => [
    uniqueIndex('deliveries_idempotency_key_uq').on(t.idempotencyKey),
    index('deliveries_status_idx').on(t.status, t.createdAt),
    index('deliveries_batch_idx').on(t.batchId).where(sql`${t.batchId} is not null`),
    // Rows that still hold their contents (the last EMAIL_RETENTION_DAYS, and what waits): the
    // retention sweep looks here for the ones past retention.
    index('deliveries_contents_idx').on(t.updatedAt).where(sql`${t.contentsRemovedAt} is null`),
  ],
);

/**
 * Transactional outbox: a domain event is a row written in the same transaction as the
 * change that caused it. A relay publishes rows in id order and stamps published_at.
 * An event Kafka refuses for good (too large, invalid, topic not authorised) is parked
 * (parked_at, park_reason), as are the later events of its topic and key (held behind it, so
 * a consumer never sees event n+1 of an entity without event n); parked rows are never
 * published or deleted until an operator retries them (`fleet events retry-parked`).
 */
export const outbox = fleet.table(
  'outbox',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    eventId: uuid('event_id').notNull(),
    eventType: text('event_type').notNull(),
    version: integer('version').notNull(),
    topic: text('topic').notNull(),
    key: text('key').notNull(),
    producer: text('producer').notNull(),
    payload: jsonb('payload').$type<Record<string, unknown>>().notNull(),
    occurredAt: ts('occurred_at').notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
    publishedAt: ts('published_at'),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    parkedAt: ts('parked_at'),
    parkReason: text('park_reason'),
  },
  (t) => [
    uniqueIndex('outbox_event_id_uq').on(t.eventId),
    index('outbox_unpublished_idx').on(t.id).where(sql`${t.publishedAt} is null`),
    // Few rows: answers "is an earlier event of this topic and key parked?" for every row read.
    index('outbox_parked_idx').on(t.topic, t.key, t.id).where(sql`${t.parkedAt} is not null`),
  ],
);
