import type { RelayLease } from '../../libs/db/repositories/outbox-relay.js';
import { missingTopicsOf, type EventPublisher } from '../../libs/events/kafka.js';
import type { Logger } from '../../libs/log/index.js';
import { daysBefore, type Clock } from '../../libs/runtime/clock.js';
import { settlesWithin } from '../../libs/runtime/within.js';
import { backoffMs } from './backoff.js';
import { PublishFailedError, drainOutbox, type ParkedEvent, type RelayBatchResult } from './process-batch.js';

export interface RelaySettings {
  batchSize: number;
  /** Wait between polls when the outbox is empty, and between tries to become leader. */
  pollIntervalMs: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  /** Published rows older than this are deleted (0: never). */
  retentionDays: number;
  pruneIntervalMs: number;
  /** How often an idle relay or a standby asks Kafka whether it is there (for readiness). */
  probeIntervalMs: number;
  /** Batches published back to back before the leader checks its lease again (default 20). */
  maxBatchesPerLeaseCheck?: number;
}

export interface RelayDeps {
  /** Tries to become the one publishing relay; null while another relay is leader. */
  acquireLease(): Promise<RelayLease | null>;
  /** null when no brokers are configured: the relay stays idle and events stay in the outbox. */
  publisher: EventPublisher | null;
  prunePublished(olderThan: Date): Promise<number>;
  clock: Clock;
  log: Logger;
  /** Sleeps, or returns early when the signal aborts. */
  sleep?(ms: number, signal: AbortSignal): Promise<void>;
  random?(): number;
  onBatch?(result: RelayBatchResult): void;
  onPublishFailure?(): void;
  onRoleChange?(role: RelayRole): void;
  onKafkaChange?(up: boolean): void;
  /** The topics Kafka answered it does not have (empty again once they exist, or when the relay stops leading). */
  onTopicsMissing?(topics: string[]): void;
}

export type RelayRole = 'disabled' | 'starting' | 'standby' | 'leader' | 'stopped';

export interface OutboxRelay {
  start(): void;
  /** Finishes the batch in hand (up to timeoutMs), gives up the lease and disconnects. */
  stop(timeoutMs: number): Promise<void>;
  ready(): Promise<{ ok: boolean; detail?: string }>;
  role(): RelayRole;
  /** null: not known yet. */
  kafkaUp(): boolean | null;
  /** Topics the events wait for: Kafka answers but does not have them (empty: none). */
  missingTopics(): string[];
  /** Since when Kafka has not answered, and why (null while it answers or before it was asked). */
  kafkaDown(): { since: Date; error: string } | null;
}

const defaultSleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });

const message = (err: unknown) => (err as Error)?.message ?? String(err);

/**
 * The outbox relay loop. Only the relay holding the lease (a PostgreSQL advisory lock)
 * publishes; the others wait on standby and take over when the leader's session ends.
 * One publisher sending batches in id order, one request in flight, keeps the per-key order.
 * Kafka down: back off (exponential, capped) and try again; the backlog waits in PostgreSQL
 * and nothing else in the fleet waits for Kafka.
 * A topic missing on Kafka (UNKNOWN_TOPIC_OR_PARTITION: `fleet events setup` was skipped) is
 * not an outage either: the brokers answer, so Kafka counts as up, and the relay says which
 * topic to create. The events wait in order, retried with the same backoff, and go out once
 * it exists.
 * Kafka refusing an event for good (too large, invalid, topic not authorised) is not an
 * outage: Kafka answered. That event and the later ones of its topic and key are parked (see
 * process-batch.ts), everything else flows on, and readiness stays "kafka reachable".
 */
export function createOutboxRelay(deps: RelayDeps, settings: RelaySettings): OutboxRelay {
  const { log, clock } = deps;
  const sleep = deps.sleep ?? defaultSleep;
  const controller = new AbortController();
  let role: RelayRole = deps.publisher ? 'starting' : 'disabled';
  let kafka: boolean | null = null;
  let kafkaError: string | undefined;
  let kafkaDownSince: Date | null = null;
  let missing: { topics: string[]; since: Date } | null = null;
  let loop: Promise<void> | null = null;
  let lease: RelayLease | null = null;

  /** Forgets the missing topics; `found`: because the events went out (logged), else quietly (no longer known). */
  const clearMissing = (found: boolean) => {
    if (!missing) return;
    if (found) log.info({ topics: missing.topics, missingSince: missing.since.toISOString() }, 'kafka topics exist now: publishing the backlog');
    missing = null;
    deps.onTopicsMissing?.([]);
  };
  const setRole = (r: RelayRole) => {
    if (r === role) return;
    role = r;
    // Only the leader publishes, so only the leader knows whether a topic is still missing.
    if (r !== 'leader') clearMissing(false);
    deps.onRoleChange?.(r);
  };
  const setKafka = (up: boolean, err?: unknown) => {
    if (up) {
      if (kafka === false) log.info({ downSince: kafkaDownSince?.toISOString() }, missing ? 'kafka reachable again' : 'kafka reachable again: publishing the backlog');
      kafkaDownSince = null;
      kafkaError = undefined;
    } else {
      kafkaError = message(err);
      clearMissing(false);
      if (kafka !== false) {
        kafkaDownSince = clock.now();
        log.warn({ err: kafkaError }, 'kafka down (unreachable or not answering): events wait in the outbox, retrying with backoff');
      }
    }
    if (kafka !== up) deps.onKafkaChange?.(up);
    kafka = up;
  };
  /** Kafka answered that it has no such topic(s): up, but these events cannot go out yet. Logged once per set of topics. */
  const setMissing = (topics: string[], err: unknown) => {
    const same = missing !== null && missing.topics.join() === topics.join();
    if (!same) {
      log.warn({ topics, err: message(err) }, 'kafka has no topic for these events: they wait in the outbox, in order; create it: fleet events setup');
      missing = { topics, since: missing?.since ?? clock.now() };
      deps.onTopicsMissing?.(topics);
    }
    setKafka(true);
  };
  const giveUpLease = async () => {
    const l = lease;
    lease = null;
    if (l) await l.release().catch(() => {});
  };

  const logParked = (parked: ParkedEvent[]) => {
    const held: ParkedEvent[] = [];
    for (const p of parked) {
      if (p.heldBehind) held.push(p);
      // Ids, types and Kafka's own refusal only: no payload, no key (the key is an entity id, but a reason needs none).
      else log.warn({ eventId: p.eventId, eventType: p.eventType, topic: p.topic, reason: p.reason }, 'outbox event refused by Kafka: parked, later events of its key held (fleet events parked)');
    }
    if (held.length) {
      log.warn({ held: held.length, behind: [...new Set(held.map((p) => p.heldBehind))].slice(0, 20) }, 'outbox events held behind a parked event of their key');
    }
  };

  async function probe(publisher: EventPublisher) {
    try {
      await publisher.probe();
      setKafka(true);
    } catch (err) {
      setKafka(false, err);
    }
  }

  async function run(publisher: EventPublisher): Promise<void> {
    const signal = controller.signal;
    let failures = 0;
    let lastProbe = 0;
    let lastPrune = 0;
    while (!signal.aborted) {
      // Become leader, or wait on standby.
      if (!lease) {
        try {
          lease = await deps.acquireLease();
        } catch (err) {
          failures++;
          log.warn({ err: message(err) }, 'outbox relay cannot reach PostgreSQL; retrying');
          await sleep(backoffMs(failures, { minMs: settings.backoffMinMs, maxMs: settings.backoffMaxMs }, deps.random), signal);
          continue;
        }
        if (!lease) {
          setRole('standby');
          if (clock.now().getTime() - lastProbe >= settings.probeIntervalMs) {
            lastProbe = clock.now().getTime();
            await probe(publisher);
          }
          await sleep(settings.pollIntervalMs, signal);
          continue;
        }
        failures = 0;
        setRole('leader');
        log.info('outbox relay is the leader: publishing');
      }

      try {
        if (!(await lease.held())) {
          log.warn('outbox relay lost its lease: back to standby');
          await giveUpLease();
          setRole('standby');
          continue;
        }
        if (settings.retentionDays > 0 && clock.now().getTime() - lastPrune >= settings.pruneIntervalMs) {
          lastPrune = clock.now().getTime();
          const cutoff = daysBefore(clock.now(), settings.retentionDays);
          const pruned = await deps.prunePublished(cutoff);
          if (pruned > 0) log.info({ pruned, cutoff: cutoff.toISOString() }, 'published outbox rows pruned');
        }
        const drainLease = lease;
        const result = await drainLease.whileDraining(() => drainOutbox(
          {
            source: drainLease,
            publisher,
            clock,
            keepGoing: () => !signal.aborted,
            onBatch: (batch) => {
              // Kafka answered, unless every event of the batch was only held (none was sent).
              if (batch.published > 0 || batch.parked.some((p) => !p.heldBehind)) {
                clearMissing(true);
                setKafka(true);
                failures = 0;
              }
              if (batch.parked.length) logParked(batch.parked);
              deps.onBatch?.(batch);
            },
          },
          { batchSize: settings.batchSize, maxBatches: settings.maxBatchesPerLeaseCheck ?? 20 },
        ));
        if (result.published > 0 || result.parked > 0) log.debug({ published: result.published, parked: result.parked, batches: result.batches }, 'outbox batches published');
        if (result.caughtUp) {
          // Idle: make sure readiness still tells the truth about Kafka, then wait.
          if (result.published === 0 && clock.now().getTime() - lastProbe >= settings.probeIntervalMs) {
            lastProbe = clock.now().getTime();
            await probe(publisher);
          }
          await sleep(settings.pollIntervalMs, signal);
        }
      } catch (err) {
        failures++;
        const wait = backoffMs(failures, { minMs: settings.backoffMinMs, maxMs: settings.backoffMaxMs }, deps.random);
        if (err instanceof PublishFailedError) {
          deps.onPublishFailure?.();
          const topics = missingTopicsOf(err.cause);
          if (topics) setMissing(topics, err.cause);
          else setKafka(false, err.cause);
          log.debug({ failures, waitMs: wait }, 'outbox publish failed: backing off');
        } else {
          // PostgreSQL trouble: give the lease up (the session may be gone) and start over.
          log.warn({ err: message(err), failures, waitMs: wait }, 'outbox relay database error: giving up the lease, retrying');
          await giveUpLease();
          setRole('standby');
        }
        await sleep(wait, signal);
      }
    }
  }

  return {
    start() {
      if (!deps.publisher) {
        log.warn('KAFKA_BROKERS not set: the outbox relay stays idle and events stay in the outbox');
        return;
      }
      const publisher = deps.publisher;
      loop = run(publisher).catch((err) => log.error({ err }, 'outbox relay loop ended unexpectedly'));
    },
    async stop(timeoutMs) {
      controller.abort();
      if (loop) {
        if (!(await settlesWithin(loop, timeoutMs))) log.warn({ timeoutMs }, 'outbox relay batch still in flight at shutdown: it will be published again');
      }
      await giveUpLease();
      await deps.publisher?.disconnect().catch(() => {});
      setRole('stopped');
    },
    async ready() {
      if (!deps.publisher) return { ok: true, detail: 'kafka not configured: events stay in the outbox' };
      if (kafka === null) return { ok: false, detail: `kafka not reached yet (relay ${role})` };
      if (!kafka) {
        return { ok: false, detail: `kafka down since ${kafkaDownSince?.toISOString()}: ${kafkaError ?? 'unreachable'}; events wait in the outbox` };
      }
      if (missing) {
        return {
          ok: false,
          detail: `kafka reachable, but has no topic ${missing.topics.join(', ')} (since ${missing.since.toISOString()}): create it: fleet events setup; events wait in the outbox`,
        };
      }
      return { ok: true, detail: `kafka reachable (relay ${role})` };
    },
    role: () => role,
    kafkaUp: () => kafka,
    missingTopics: () => missing?.topics ?? [],
    kafkaDown: () => (kafka === false && kafkaDownSince ? { since: kafkaDownSince, error: kafkaError ?? 'unreachable' } : null),
  };
}
