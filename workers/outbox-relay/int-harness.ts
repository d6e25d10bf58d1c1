import { loadConfig } from '../../libs/config/index.js';
import { appendEvent, type EventEnvelope } from '../../libs/events/index.js';
import type { EventPublisher, OutgoingEvent } from '../../libs/events/kafka.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { randomSuffix } from '../../libs/testing/services.js';
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
