import { loadConfig } from '../../libs/config/index.js';
import { appendEvent, type EventEnvelope } from '../../libs/events/index.js';
import type { EventPublisher, OutgoingEvent } from '../../libs/events/kafka.js';
import { silentLogger, type Logger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { collectMessages, fastRelaySettings, startKafkaMock, type KafkaMock, type MessageCollector, type TopicSpec } from '../../libs/testing/kafka-mock.js';
import { TEST_REDIS_URL, randomSuffix } from '../../libs/testing/services.js';
import { outboxRelayComponents } from './worker.js';

/**
 * For relay integration tests that need a batch in flight: the real PostgreSQL outbox and the
 * real relay role, with a publisher (the Kafka port) that records what it is given (`sent`) and
 * holds the first batch until `releaseFirst()`. Batches of two, polled every 50 ms.
 */
export interface HeldRelayHarness {
  db: TestDatabase;
  ctx: FleetContext;
  sent: OutgoingEvent[];
  /** Publish calls so far (1: the first batch is on its way). */
  calls(): number;
  releaseFirst(): void;
  /** One event in a transaction of its own. */
  append(eventType: string, key: string): Promise<EventEnvelope<{ key: string }>>;
  /** Starts the relay role. */
  startRelay(): Promise<void>;
  close(): Promise<void>;
}

export async function startHeldRelayHarness(name: string): Promise<HeldRelayHarness> {
  const db = await createTestDatabase();
  const ctx = openContext(
    loadConfig({
      NODE_ENV: 'test',
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: `${name}_${randomSuffix()}`,
      KAFKA_BROKERS: '127.0.0.1:9', // never dialled: the publisher is the test's
      OUTBOX_RELAY_BATCH_SIZE: '2',
      OUTBOX_RELAY_POLL_INTERVAL_MS: '50',
    }),
    silentLogger(),
  );
  const sent: OutgoingEvent[] = [];
  let releaseFirst!: () => void;
  const firstHeld = new Promise<void>((resolve) => (releaseFirst = resolve));
  let calls = 0;
  const publisher: EventPublisher = {
    connect: async () => {},
    async publish(batch) {
      if (calls++ === 0) await firstHeld;
      sent.push(...batch);
    },
    probe: async () => {},
    disconnect: async () => {},
    healthy: () => true,
  };
  let relay: Component | undefined;
  return {
    db,
    ctx,
    sent,
    calls: () => calls,
    releaseFirst: () => releaseFirst(),
    append: (eventType, key) => db.db.transaction((tx) => appendEvent(tx, { eventType, key, payload: { key } })),
    async startRelay() {
      [relay] = outboxRelayComponents(ctx, { publisher });
      await relay!.start();
    },
    async close() {
      releaseFirst();
      await relay?.stop(2000).catch(() => {});
      await ctx.close().catch(() => {});
      await db.drop();
    },
  };
}

/**
 * For relay integration tests against the mock broker: a database of the test's own, the mock
 * broker behind its proxy, a consumer of every event topic (unless `consumer: false`), and a
 * context with the fast relay settings (`env` on top). The test starts its relay role itself;
 * `close(relay)` stops it first, then everything else.
 */
export interface MockKafkaRelayHarness {
  db: TestDatabase;
  kafka: KafkaMock;
  consumer: MessageCollector | undefined;
  ctx: FleetContext;
  close(relay: Component | undefined): Promise<void>;
}

export async function startMockKafkaRelayHarness(
  name: string,
  opts: { env?: Record<string, string>; topics?: TopicSpec[]; log?: Logger; consumer?: boolean } = {},
): Promise<MockKafkaRelayHarness> {
  const db = await createTestDatabase();
  const kafka = await startKafkaMock(opts.topics ? { topics: opts.topics } : {});
  const consumer = opts.consumer === false ? undefined : await collectMessages(kafka.brokers);
  const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: `${name}_${randomSuffix()}`, ...fastRelaySettings(kafka.brokers), ...opts.env });
  const ctx = openContext(config, opts.log ?? silentLogger());
  return {
    db,
    kafka,
    consumer,
    ctx,
    async close(relay) {
      await relay?.stop(2000).catch(() => {});
      await consumer?.close().catch(() => {});
      await ctx.close().catch(() => {});
      await kafka.close();
      await db.drop();
    },
  };
}

