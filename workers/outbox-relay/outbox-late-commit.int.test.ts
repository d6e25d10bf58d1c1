import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { appendEvent } from '../../libs/events/index.js';
import type { EventPublisher, OutgoingEvent } from '../../libs/events/kafka.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { randomSuffix } from '../../libs/testing/services.js';
import { until } from '../../libs/testing/until.js';
import { outboxRelayComponents } from './worker.js';

/**
 * An event whose transaction commits late (its id was taken early, a long import) while the
 * relay drains a backlog, with the real PostgreSQL outbox and the real relay role: the next
 * event of the same key (written after the first one committed, as a change that locks the
 * entity row does) must not go out first. The publisher (the Kafka port) records what it is
 * given and holds the first batch until the test lets it go.
 */

let db: TestDatabase;
let ctx: FleetContext;
let relay: Component | undefined;

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

const append = (eventType: string, key: string) => db.db.transaction((tx) => appendEvent(tx, { eventType, key, payload: { key } }));

beforeAll(async () => {
  db = await createTestDatabase();
  const config = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: db.url,
    QUEUE_PREFIX: `latecommit_${randomSuffix()}`,
    KAFKA_BROKERS: '127.0.0.1:9', // never dialled: the publisher is the test's
    OUTBOX_RELAY_BATCH_SIZE: '2',
    OUTBOX_RELAY_POLL_INTERVAL_MS: '50',
  });
  ctx = openContext(config, silentLogger());
});

afterAll(async () => {
  releaseFirst();
  await relay?.stop(2000).catch(() => {});
  await ctx?.close().catch(() => {});
  await db?.drop();
});

describe('an event committed late, below ids the relay has read already', () => {
  it('goes out before the later event of its key', { timeout: 60_000 }, async () => {
    await append('patient.created', 'x0');
    // K's first event takes its id now, its transaction commits only later.
    let commitK1!: () => void;
    const k1Committable = new Promise<void>((resolve) => (commitK1 = resolve));
    let k1Inserted!: () => void;
    const k1InTx = new Promise<void>((resolve) => (k1Inserted = resolve));
    const k1 = db.db.transaction(async (tx) => {
      const e = await appendEvent(tx, { eventType: 'patient.updated', key: 'K', payload: { key: 'K' } });
      k1Inserted();
      await k1Committable;
      return e;
    });
    await k1InTx;
    for (let i = 1; i <= 6; i++) await append('patient.created', `x${i}`);

    const [component] = outboxRelayComponents(ctx, { publisher });
    relay = component!;
    await relay.start();
    await until('the first batch on its way to Kafka', () => calls >= 1);

    // While the first batch is in flight: K's first event commits, then its second is written.
    commitK1();
    const k1Event = await k1;
    const k2 = await append('patient.updated', 'K');
    releaseFirst();

    await until('all published', async () => {
      const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from fleet.outbox where published_at is null`;
      return row!.n === 0;
    });
    const ofK = sent.filter((m) => m.key === 'K').map((m) => m.headers['event-id']);
    expect(ofK.filter((id, i) => ofK.indexOf(id) === i)).toEqual([k1Event.eventId, k2.eventId]);
  });
});
