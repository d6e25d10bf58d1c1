import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { retryParked } from '../../libs/db/repositories/outbox-parked.js';
import { appendEvent } from '../../libs/events/index.js';
import type { EventPublisher, OutgoingEvent } from '../../libs/events/kafka.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { randomSuffix } from '../../libs/testing/services.js';
import { until } from '../../libs/testing/until.js';
import { outboxRelayComponents } from './worker.js';

/**
 * An operator puts a parked key back (`fleet events retry-parked`) while the relay is in the
 * middle of a drain, with the real PostgreSQL outbox and the real relay role. The publisher
 * (the Kafka port) records what it is given and holds the first batch until the test lets it go.
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
    QUEUE_PREFIX: `retryrace_${randomSuffix()}`,
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

describe('retry-parked while the relay drains a backlog', () => {
  it('the key goes back in order: no later event of it is published before the ones put back', { timeout: 60_000 }, async () => {
    // Key K: two events Kafka refused earlier (parked), then a backlog of other keys, then K's third event.
    const k1 = await append('patient.updated', 'K');
    const k2 = await append('patient.updated', 'K');
    await db.sql`update fleet.outbox set parked_at = now(), park_reason = 'MESSAGE_TOO_LARGE: test' where event_id in (${k1.eventId}, ${k2.eventId})`;
    for (let i = 0; i < 4; i++) await append('patient.created', `x${i}`);
    const k3 = await append('patient.updated', 'K');
    await append('patient.created', 'x9');

    const [component] = outboxRelayComponents(ctx, { publisher });
    relay = component!;
    await relay.start();
    await until('the first batch on its way to Kafka', () => calls >= 1);

    // The cause is fixed; the operator puts K back while the first batch is in flight.
    const retried = retryParked(db.db, { eventId: k1.eventId }, { actor: 'test', reason: 'limit raised' });
    await Promise.race([retried, new Promise((r) => setTimeout(r, 500))]);
    releaseFirst();
    await retried;
    await until('all published', async () => {
      const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from fleet.outbox where published_at is null`;
      return row!.n === 0;
    });

    const ofK = sent.filter((m) => m.key === 'K').map((m) => m.headers['event-id']);
    expect(ofK.filter((id, i) => ofK.indexOf(id) === i)).toEqual([k1.eventId, k2.eventId, k3.eventId]);
  });
});
