import type postgres from 'postgres';
import type { StoredEvent } from '../../events/kafka.js';
import type { Database } from '../client.js';
import { leaseHolder, LOCK_KEYS, type Lease } from '../lease.js';

/**
 * What the outbox relay needs from PostgreSQL.
 *
 * One relay at a time publishes: the one holding a session-level advisory lock on a
 * connection of its own (`relayLeases`, libs/db/lease.ts). Every read and every "published"
 * stamp of the leader goes over that same connection, and each drain first checks that the
 * session still holds the lock. PostgreSQL drops the lock the moment the session ends (crash,
 * SIGKILL, network loss), and a standby takes over on its next try; a leader that lost its
 * session finishes at most the drain in hand (it stamps only what Kafka acknowledged to it).
 */

/**
 * Held shared by the leader for the length of each drain, taken exclusively by an operator
 * putting parked events back (`retryParked`): un-parking in the middle of a drain would let the
 * drain's later reads send a newer event of the key before the ones put back (their lower ids
 * are read only by the next drain), or park a newer one behind an event no longer parked.
 */
export const PARKING_LOCK: readonly [number, number] = LOCK_KEYS.outboxParking;

/** An unpublished outbox row as the relay reads it: the envelope comes ready as JSON text. */
export interface UnpublishedEvent extends StoredEvent {
  id: number;
  attempts: number;
  /**
   * Event id of an earlier event of the same topic and key that is parked: this one must wait
   * behind it (it is parked too, never sent), so per-key order holds. Null or absent: free to go.
   */
  heldBy?: string | null;
}

/** An event set aside: Kafka refused it for good, or it is held behind one that was. */
export interface ParkRequest {
  id: number;
  reason: string;
  /** True when this event was sent and refused (counts as an attempt); false when only held. */
  attempted: boolean;
}

/** Where a drain's read ahead goes on: past the batches in flight, which are left out. */
export interface ReadAhead {
  afterId: number;
  /** Ids of the batches sent and not yet stamped: every id not in it below `afterId` is a row that committed late. */
  inFlight: number[];
}

export interface RelayLease {
  /** True while this session still holds the relay lock. Rejects when the connection is gone. */
  held(): Promise<boolean>;
  /**
   * The oldest unpublished events in id order. With `after` (the read ahead of a drain): the
   * oldest ones not in `after.inFlight` (the batches sent or being stamped); `after.afterId`
   * (the highest id read so far) only spares the check for the ids above it.
   */
  fetchUnpublished(limit: number, after?: ReadAhead): Promise<UnpublishedEvent[]>;
  markPublished(ids: number[], at: Date): Promise<void>;
  recordFailure(ids: number[], error: string): Promise<void>;
  /** Parks events: the relay skips them until an operator retries them; never deleted. */
  park(events: ParkRequest[], at: Date): Promise<void>;
  /** Runs one drain; operators' retries of parked events wait until it is over (PARKING_LOCK). */
  whileDraining<T>(drain: () => Promise<T>): Promise<T>;
  /** Gives the lock and the connection back. */
  release(): Promise<void>;
}

export interface OutboxStats {
  /** Events waiting to be published (parked ones not counted). */
  unpublished: number;
  /** Age of the oldest unpublished event in seconds (0 when none wait). */
  oldestUnpublishedAgeSeconds: number;
  oldestUnpublishedAt: Date | null;
  published: number;
  /** Unpublished rows whose last publish attempt failed. */
  failing: number;
  /** Why the oldest waiting event's last publish attempt failed (null when it has not failed). */
  oldestLastError: string | null;
  /** Events set aside (refused by Kafka, or held behind a refused one of their key). */
  parked: number;
  byTopic: Array<{ topic: string; unpublished: number; published: number; parked: number }>;
}

type Row = {
  id: string;
  event_id: string;
  event_type: string;
  topic: string;
  key: string;
  occurred_ms: number;
  envelope: string;
  attempts: number;
  held_by: string | null;
};

function toEvent(r: Row): UnpublishedEvent {
  return {
    id: Number(r.id),
    eventId: r.event_id,
    eventType: r.event_type,
    topic: r.topic,
    key: r.key,
    occurredAt: new Date(r.occurred_ms),
    envelope: r.envelope,
    attempts: r.attempts,
    heldBy: r.held_by,
  };
}

/**
 * PostgreSQL builds the envelope text itself (key order as in DOMAIN.md, timestamp in the
 * same UTC ISO form as Date.toISOString), so the relay neither parses nor re-serialises payloads.
 * Parked rows are skipped; `held_by` names the earliest parked event of the same topic and key
 * with a lower id (a lookup in the small partial index outbox_parked_idx).
 *
 * The read ahead (`after`) is not simply "ids above the last one read": an event whose
 * transaction took its id early and committed late (a long import) is below that, and the next
 * event of its entity (written after it committed) above: it would go out first, and the late
 * one only with the next drain. So it reads the oldest unpublished rows apart from those in
 * flight, which takes in a late row in its id order, before any later event of its key.
 */
async function fetchUnpublished(sql: postgres.Sql | postgres.ReservedSql, limit: number, after?: ReadAhead): Promise<UnpublishedEvent[]> {
  const afterId = after?.afterId ?? 0;
  const inFlight = after?.inFlight ?? [];
  const rows = await sql<Row[]>`
    select id, event_id, event_type, topic, key, attempts,
      (extract(epoch from occurred_at) * 1000)::float8 as occurred_ms,
      json_build_object(
        'eventId', event_id, 'eventType', event_type, 'version', version,
        'timestamp', to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'producer', producer, 'payload', payload)::text as envelope,
      (select p.event_id::text from fleet.outbox p
        where p.parked_at is not null and p.published_at is null and p.topic = o.topic and p.key = o.key and p.id < o.id
        order by p.id limit 1) as held_by
    from fleet.outbox o where published_at is null and parked_at is null
      and (id > ${afterId} or id <> all(${inFlight}::int8[])) order by id limit ${limit}`;
  return rows.map(toEvent);
}

export interface RelayLeases {
  /** Tries to become the publishing relay: the lease, or null while another relay holds it. */
  acquire(): Promise<RelayLease | null>;
  /** Gives up a lease still held and ends the lease's connection. */
  close(): Promise<void>;
}

/** The relay's tries for its lease, over one connection of its own (opened on first use). */
export function relayLeases(database: Database): RelayLeases {
  const holder = leaseHolder(database, LOCK_KEYS.outboxRelay, 'outbox-relay');
  return {
    async acquire() {
      const lease = await holder.acquire();
      return lease ? relayLease(lease) : null;
    },
    close: () => holder.close(),
  };
}

function relayLease(lease: Lease): RelayLease {
  const { conn } = lease;
  return {
    held: () => lease.held(),
    fetchUnpublished: (limit, after) => fetchUnpublished(conn, limit, after),
    async markPublished(ids, at) {
      if (ids.length === 0) return;
      await conn`update fleet.outbox set published_at = ${at.toISOString()}::timestamptz, attempts = attempts + 1, last_error = null
        where id = any(${ids}::int8[])`;
    },
    async recordFailure(ids, error) {
      if (ids.length === 0) return;
      await conn`update fleet.outbox set attempts = attempts + 1, last_error = ${error.slice(0, 500)}
        where id = any(${ids}::int8[]) and published_at is null`;
    },
    async park(events, at) {
      if (events.length === 0) return;
      await conn`update fleet.outbox o set parked_at = ${at.toISOString()}::timestamptz, park_reason = v.reason,
          attempts = o.attempts + v.tried,
          last_error = case when v.tried = 1 then v.reason else o.last_error end
        from unnest(${events.map((e) => e.id)}::int8[], ${events.map((e) => e.reason.slice(0, 500))}::text[], ${events.map((e) => (e.attempted ? 1 : 0))}::int4[])
          as v(id, reason, tried)
        where o.id = v.id and o.published_at is null`;
    },
    async whileDraining(drain) {
      await conn`select pg_advisory_lock_shared(${PARKING_LOCK[0]}::int4, ${PARKING_LOCK[1]}::int4)`;
      try {
        return await drain();
      } finally {
        // A lost session has dropped the lock with it.
        await conn`select pg_advisory_unlock_shared(${PARKING_LOCK[0]}::int4, ${PARKING_LOCK[1]}::int4)`.catch(() => {});
      }
    },
    release: () => lease.release(),
  };
}

/** Backlog figures for metrics, health and `fleet events stats`. */
export async function outboxStats(database: Database, now: Date): Promise<OutboxStats> {
  const sql = database.sql;
  const [head] = await sql<{ unpublished: string; oldest: number | null; oldest_error: string | null; failing: string; parked: string }[]>`
    with oldest as (select created_at, last_error from fleet.outbox where published_at is null and parked_at is null order by id limit 1)
    select
      (select count(*) from fleet.outbox where published_at is null and parked_at is null) as unpublished,
      (select (extract(epoch from created_at) * 1000)::float8 from oldest) as oldest,
      (select last_error from oldest) as oldest_error,
      (select count(*) from fleet.outbox where published_at is null and parked_at is null and last_error is not null) as failing,
      (select count(*) from fleet.outbox where published_at is null and parked_at is not null) as parked`;
  const topics = await sql<{ topic: string; unpublished: string; published: string; parked: string }[]>`
    select topic, count(*) filter (where published_at is null and parked_at is null) as unpublished, count(published_at) as published,
      count(*) filter (where published_at is null and parked_at is not null) as parked
    from fleet.outbox group by topic order by topic`;
  const oldest = head?.oldest != null ? new Date(head.oldest) : null;
  return {
    unpublished: Number(head?.unpublished ?? 0),
    oldestUnpublishedAt: oldest,
    oldestUnpublishedAgeSeconds: oldest ? Math.max(0, (now.getTime() - oldest.getTime()) / 1000) : 0,
    published: topics.reduce((a, t) => a + Number(t.published), 0),
    failing: Number(head?.failing ?? 0),
    oldestLastError: head?.oldest_error ?? null,
    parked: Number(head?.parked ?? 0),
    byTopic: topics.map((t) => ({ topic: t.topic, unpublished: Number(t.unpublished), published: Number(t.published), parked: Number(t.parked) })),
  };
}

/**
 * The lag figures only (cheap: they read the partial indexes of unpublished and of parked rows).
 * Parked events are counted apart: they wait for an operator, not for the relay.
 */
export async function outboxBacklog(database: Database, now: Date): Promise<{ unpublished: number; oldestAgeSeconds: number; parked: number }> {
  const [row] = await database.sql<{ unpublished: string; oldest: number | null; parked: string }[]>`
    select
      (select count(*) from fleet.outbox where published_at is null and parked_at is null) as unpublished,
      (select (extract(epoch from created_at) * 1000)::float8 from fleet.outbox where published_at is null and parked_at is null order by id limit 1) as oldest,
      (select count(*) from fleet.outbox where parked_at is not null and published_at is null) as parked`;
  const oldest = row?.oldest != null ? new Date(row.oldest) : null;
  return {
    unpublished: Number(row?.unpublished ?? 0),
    parked: Number(row?.parked ?? 0),
    oldestAgeSeconds: oldest ? Math.max(0, (now.getTime() - oldest.getTime()) / 1000) : 0,
  };
}

/**
 * Age of the oldest event waiting to be published (not parked), in seconds; 0 when none waits.
 * The first row of the unpublished index: cheap however long the backlog, unlike its count.
 */
export async function outboxOldestAgeSeconds(database: Database, now: Date): Promise<number> {
  const [row] = await database.sql<{ oldest: number | null }[]>`
    select (extract(epoch from created_at) * 1000)::float8 as oldest from fleet.outbox
     where published_at is null and parked_at is null order by id limit 1`;
  return row?.oldest != null ? Math.max(0, (now.getTime() - row.oldest) / 1000) : 0;
}

/** Deletes published rows older than the cutoff, in chunks; returns how many went. */
export async function prunePublished(database: Database, olderThan: Date, chunk = 5000): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await database.sql`
      delete from fleet.outbox where id in (
        select id from fleet.outbox where published_at is not null and published_at < ${olderThan.toISOString()}::timestamptz order by id limit ${chunk})`;
    total += result.count;
    if (result.count < chunk) return total;
  }
}
