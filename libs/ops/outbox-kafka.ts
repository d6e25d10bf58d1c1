import type { Database } from '../db/client.js';
import { currentLeaseHolders } from '../db/lease.js';
import { outboxRelayStatuses, type OutboxRelayRecord, type QueueSet } from '../queues/index.js';
import { within } from '../runtime/within.js';

/**
 * Kafka as the fleet's outbox relays see it, for `fleet status`, `fleet daily` (/daily) and
 * `fleet events stats`: judged from what the fleet does (the relay lease in PostgreSQL, the
 * records the relays keep in Redis, see outbox-relay-status.ts), never from the KAFKA_BROKERS of
 * the process that asks (an operator's terminal need not have the fleet's environment).
 *
 * - `publishing`: a relay holds the lease and Kafka answered it last time;
 * - `unreachable`: the leading relay cannot reach Kafka, or Kafka does not answer (since `since`);
 * - `topic_missing`: Kafka answers, but has no topic `missingTopics` (fleet events setup);
 * - `leading`: a relay holds the lease (so it has KAFKA_BROKERS) but recorded nothing under this
 *   queue prefix (another QUEUE_PREFIX or REDIS_URL here, or a version that does not record);
 * - `standby_only`: relays run, none holds the lease (they cannot take it in PostgreSQL);
 * - `not_configured`: the running relays have no KAFKA_BROKERS: they stay idle by configuration;
 * - `no_relay`: no process with the outbox-relay role runs (none holds the lease, none recorded
 *   itself within a minute);
 * - `unknown`: PostgreSQL could not say who holds the lease, and no relay recorded itself.
 */
export type OutboxKafkaStateName = 'publishing' | 'unreachable' | 'topic_missing' | 'leading' | 'standby_only' | 'not_configured' | 'no_relay' | 'unknown';

export interface OutboxKafkaState {
  state: OutboxKafkaStateName;
  /** The leading (else any running) relay's KAFKA_BROKERS, `host:port` each; null: not known or not set. */
  brokers: string[] | null;
  /** The process holding the relay lease (its PostgreSQL application_name), if any. */
  leader: string | null;
  /** `unreachable`: since when (ISO). */
  since: string | null;
  /** `unreachable`: the Kafka client's error; `unknown`: why PostgreSQL could not say. */
  error: string | null;
  missingTopics: string[];
  /** The leading relay's last publish (ISO); null: none since it started, or not recorded. */
  lastPublishedAt: string | null;
  /** Relays that recorded themselves within the last minute. */
  relaysRunning: number;
}

export async function outboxKafkaState(deps: { database: Database; queues: QueueSet; now: Date }): Promise<OutboxKafkaState> {
  const [holders, records] = await Promise.all([
    within(currentLeaseHolders(deps.database.sql), 5_000).catch((err: unknown) => err as Error),
    outboxRelayStatuses(deps.queues, deps.now).catch(() => [] as OutboxRelayRecord[]),
  ]);
  const holder = Array.isArray(holders) ? (holders.find((h) => h.lease === 'outboxRelay') ?? null) : null;
  const lead = records.find((r) => r.role === 'leader');
  const withBrokers = records.find((r) => r.brokers);
  const base = {
    brokers: (lead ?? withBrokers)?.brokers ?? null,
    leader: holder?.applicationName ?? null,
    since: null,
    error: null,
    missingTopics: [],
    lastPublishedAt: lead?.lastPublishedAt ?? null,
    relaysRunning: records.length,
  };
  if (lead) {
    if (lead.kafkaUp === false) return { ...base, state: 'unreachable', since: lead.kafkaDownSince, error: lead.kafkaError };
    if (lead.missingTopics.length) return { ...base, state: 'topic_missing', missingTopics: lead.missingTopics };
    if (lead.kafkaUp) return { ...base, state: 'publishing' };
    return { ...base, state: 'leading' };
  }
  if (holder) return { ...base, state: 'leading' };
  if (holders instanceof Error && !records.length) return { ...base, state: 'unknown', error: holders.message };
  if (records.some((r) => r.role === 'standby' || r.role === 'starting')) return { ...base, state: 'standby_only' };
  if (records.length && records.every((r) => r.role === 'disabled')) return { ...base, state: 'not_configured' };
  return { ...base, state: 'no_relay' };
}

/**
 * One line on Kafka as the fleet sees it, `localTime` for the times the reader's way, e.g.
 * `Kafka unreachable since 2026-12-07 18:31 +01:00 (brokers kafka-1:9092): connect ECONNREFUSED …`.
 */
export function outboxKafkaLine(k: OutboxKafkaState, localTime: (d: Date) => string): string {
  const brokers = k.brokers ? ` (brokers ${k.brokers.join(',')})` : '';
  switch (k.state) {
    case 'publishing':
      return `Kafka reachable${brokers}: ${k.leader ?? 'the leading relay'} publishes${k.lastPublishedAt ? `, last publish ${localTime(new Date(k.lastPublishedAt))}` : ''}`;
    case 'unreachable':
      return `Kafka unreachable since ${k.since ? localTime(new Date(k.since)) : '?'}${brokers}: ${k.error ?? 'no answer'}; events wait in the outbox and go out in order once it answers`;
    case 'topic_missing':
      return `Kafka answers${brokers} but has no topic ${k.missingTopics.join(', ')}: events wait in the outbox; create it: fleet events setup`;
    case 'leading':
      return `outbox relay ${k.leader ? `${k.leader} ` : ''}leads (so the fleet has KAFKA_BROKERS set); whether Kafka answers it is not recorded under this queue prefix yet (is QUEUE_PREFIX the fleet's?)`;
    case 'standby_only':
      return `${k.relaysRunning} outbox relay(s) run but none holds the publishing lease: they cannot take it in PostgreSQL (their log says why); events wait in the outbox`;
    case 'not_configured':
      return 'Kafka not configured on the fleet (its outbox relays run with KAFKA_BROKERS empty): events wait in the outbox and are published once it is set';
    case 'no_relay':
      return 'no outbox relay runs (no process with the outbox-relay role holds its lease or recorded itself within a minute): events wait in the outbox until one does';
    case 'unknown':
      return `which outbox relay publishes is not known: PostgreSQL (DATABASE_URL): ${k.error ?? '?'}`;
  }
}

/**
 * When this process's KAFKA_BROKERS (the terminal's) differ from the fleet's relay's: the
 * warning to print (null: the same, or the fleet's not known). Only `fleet events setup` uses
 * the terminal's.
 */
export function kafkaBrokersMismatch(k: OutboxKafkaState, here: string[] | undefined | null): string | null {
  if (!k.brokers) return null;
  const mine = here?.length ? here.map((b) => b.replace(/^[^@]*@/, '')) : null;
  if (mine && [...mine].sort().join(',') === [...k.brokers].sort().join(',')) return null;
  return `this terminal's KAFKA_BROKERS (${mine ? mine.join(',') : 'not set'}) is not the fleet's (${k.brokers.join(',')}, as its outbox relay records): the Kafka state shown is the fleet's; fleet events setup would use this terminal's`;
}
