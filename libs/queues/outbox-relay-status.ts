import type { QueueSet } from './queue-set.js';

/**
 * What each running outbox relay says about itself, so that `fleet status`, `fleet daily` and
 * `fleet events stats` judge Kafka from what the fleet does instead of from the environment of
 * the terminal they are typed in: one Redis hash under the fleet's prefix, one field per
 * process, written when its state changes and every RELAY_STATUS_HEARTBEAT_MS. Broker addresses
 * only (`host:port`; never SASL or TLS settings). A record older than RELAY_STATUS_FRESH_MS is
 * a process that ended without saying so (SIGKILL) and is not read as running.
 */
export interface OutboxRelayRecord {
  /** The writing process: its application name (with FLEET_INSTANCE), host and pid. */
  process: string;
  /** `disabled`: KAFKA_BROKERS empty on that process; `leader`: it holds the lease and publishes. */
  role: 'disabled' | 'starting' | 'standby' | 'leader' | 'stopped';
  /** Its KAFKA_BROKERS (`host:port` each); null: not set. */
  brokers: string[] | null;
  /** Whether Kafka answered it last time; null: not asked yet. */
  kafkaUp: boolean | null;
  /** Since when Kafka has not answered (ISO); null while it does. */
  kafkaDownSince: string | null;
  /** Why (the client's error) while Kafka does not answer. */
  kafkaError: string | null;
  /** Topics Kafka answered it does not have (the leader's view; empty: none). */
  missingTopics: string[];
  /** The last time this process published an event (ISO); null: none since it started. */
  lastPublishedAt: string | null;
  /** When this record was written (ISO). */
  updatedAt: string;
}

export const RELAY_STATUS_HEARTBEAT_MS = 15_000;
export const RELAY_STATUS_FRESH_MS = 60_000;

function relayStatusKey(queues: QueueSet): string {
  return `${queues.prefix}:outbox-relays`;
}

/** `host:port` of each broker: anything before an `@` (credentials someone put into the address) is left out. */
export function brokerAddresses(brokers: string[] | undefined | null): string[] | null {
  return brokers?.length ? brokers.map((b) => b.replace(/^[^@]*@/, '')) : null;
}

/** Writes this process's record, and drops records of processes silent for an hour. */
export async function recordOutboxRelayStatus(queues: QueueSet, record: OutboxRelayRecord): Promise<void> {
  const redis = await queues.redis();
  const key = relayStatusKey(queues);
  await redis.hset(key, record.process, JSON.stringify(record));
  const all = await redis.hgetall(key);
  const cutoff = Date.parse(record.updatedAt) - 3_600_000;
  const gone = Object.entries(all).filter(([, v]) => !(Date.parse(parse(v)?.updatedAt ?? '') >= cutoff)).map(([k]) => k);
  if (gone.length) await redis.hdel(key, ...gone);
}

/** Removes this process's record (a relay that stops). */
export async function removeOutboxRelayStatus(queues: QueueSet, process: string): Promise<void> {
  await (await queues.redis()).hdel(relayStatusKey(queues), process);
}

function parse(v: string): OutboxRelayRecord | null {
  try {
    return JSON.parse(v) as OutboxRelayRecord;
  } catch {
    return null;
  }
}

/** The records written within RELAY_STATUS_FRESH_MS of `now` (running relays), newest first. Reads only. */
export async function outboxRelayStatuses(queues: QueueSet, now: Date): Promise<OutboxRelayRecord[]> {
  const all = await (await queues.redis()).hgetall(relayStatusKey(queues));
  return Object.values(all)
    .map(parse)
    .filter((r): r is OutboxRelayRecord => r !== null && now.getTime() - Date.parse(r.updatedAt) <= RELAY_STATUS_FRESH_MS)
    .sort((a, b) => b.updatedAt.localeCompare(a.updatedAt));
}
