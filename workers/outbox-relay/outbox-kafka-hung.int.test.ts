import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { appendEvent, type EventEnvelope } from '../../libs/events/index.js';
import { outboxRelayStatuses } from '../../libs/queues/index.js';
import type { Component, FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { collectMessages, type KafkaMock, type MessageCollector, type ReceivedMessage } from '../../libs/testing/kafka-mock.js';
import { until } from '../../libs/testing/until.js';
import { startMockKafkaRelayHarness, type MockKafkaRelayHarness } from './int-harness.js';
import { outboxRelayComponents } from './worker.js';

/**
 * A broker that accepts connections and requests but stops answering (hung, or a partition that
 * drops packets): real PostgreSQL, the real relay role and kafkajs producer, the mock broker
 * behind the test proxy, which holds everything back while "hung". kafkajs's own limit is set
 * far out (KAFKA_REQUEST_TIMEOUT_MS 120 s per request, times its tries): the relay must notice
 * by its own limit (OUTBOX_RELAY_KAFKA_TIMEOUT_MS), say so in readiness and metrics, and go on
 * by itself once the broker answers, every event arriving, the first copy of each in order per
 * key, a repeat only with the same event id and envelope.
 */

let t: MockKafkaRelayHarness;
let db: TestDatabase;
let kafka: KafkaMock;
let consumer: MessageCollector;
let ctx: FleetContext;
let relay: Component | undefined;

beforeAll(async () => {
  t = await startMockKafkaRelayHarness('hung', {
    env: {
      KAFKA_CONNECTION_TIMEOUT_MS: '1000',
      KAFKA_REQUEST_TIMEOUT_MS: '120000',
      OUTBOX_RELAY_KAFKA_TIMEOUT_MS: '1000',
      OUTBOX_RELAY_BATCH_SIZE: '4',
    },
  });
  ({ db, kafka, ctx } = t);
  consumer = t.consumer!;
  [relay] = outboxRelayComponents(ctx);
  await relay!.start();
  const warm = await append('warm-up', 0);
  await consumer.waitFor((m) => m.some((x) => x.headers['event-id'] === warm.eventId));
});

// A test that failed while the broker hung must not leave it hung for the next.
afterEach(() => kafka?.resume());

afterAll(() => t?.close(relay));

const append = (key: string, n: number) => db.db.transaction((tx) => appendEvent(tx, { eventType: 'patient.updated', key, payload: { patientId: key, n } }));

async function kafkaUp(): Promise<number | undefined> {
  return (await ctx.metrics.registry.getSingleMetric('fleet_outbox_kafka_up')?.get())?.values[0]?.value;
}

/** Events of three keys, interleaved, each in a transaction of its own. */
async function appendMany(tag: string, count: number): Promise<EventEnvelope[]> {
  const out: EventEnvelope[] = [];
  for (let n = 0; n < count; n++) out.push(await append(`${tag}-${n % 3}`, n));
  return out;
}

/** Every event arrived; per key, the first copies in the order appended; repeats identical to the first copy. */
function expectDelivered(sent: EventEnvelope[], got: ReceivedMessage[]) {
  const ids = new Set(sent.map((e) => e.eventId));
  const ours = got.filter((m) => ids.has(m.headers['event-id']!));
  const first = new Map<string, ReceivedMessage>();
  for (const m of ours) {
    const earlier = first.get(m.headers['event-id']!);
    if (earlier) expect({ key: m.key, value: m.value, topic: m.topic }).toEqual({ key: earlier.key, value: earlier.value, topic: earlier.topic });
    else first.set(m.headers['event-id']!, m);
  }
  expect(first.size).toBe(sent.length);
  for (const key of new Set(sent.map((e) => (e.payload as { patientId: string }).patientId))) {
    const want = sent.filter((e) => (e.payload as { patientId: string }).patientId === key).map((e) => e.eventId);
    expect([...first.values()].filter((m) => m.key === key).map((m) => m.headers['event-id'])).toEqual(want);
  }
  return ours.length - first.size;
}

async function waitKafkaDown() {
  const down = await until(
    'readiness and fleet_outbox_kafka_up to say Kafka does not answer',
    async () => {
      const r = await relay!.ready!();
      return !r.ok && (await kafkaUp()) === 0 && r;
    },
    60_000,
  );
  expect(down.detail).toMatch(/^kafka down since .*: .*no answer from Kafka within 1000 ms/);
}

async function waitKafkaBack(sent: EventEnvelope[], collector = consumer) {
  const got = await collector.waitFor((m) => sent.every((e) => m.some((x) => x.headers['event-id'] === e.eventId)), 60_000);
  await until('readiness to say Kafka is reachable again', async () => (await relay!.ready!()).ok && (await kafkaUp()) === 1, 30_000);
  return got;
}

describe('a broker that stops answering', () => {
  it('hung: readiness and kafka_up say so, nothing is published meanwhile; once it answers, every event goes out in order per key', { timeout: 180_000 }, async () => {
    kafka.hang();
    const sent = await appendMany('hung', 9);
    await waitKafkaDown();
    expect(consumer.messages.filter((m) => m.key?.startsWith('hung-'))).toEqual([]);
    // Recorded in Redis for the CLI (fleet status, daily, events stats), whose terminal need not have KAFKA_BROKERS.
    const recorded = await until('the relay to record Kafka down', async () => (await outboxRelayStatuses(ctx.queues, new Date())).find((r) => r.kafkaUp === false), 30_000);
    expect(recorded).toMatchObject({ role: 'leader', brokers: ctx.config.kafka.brokers, kafkaDownSince: expect.any(String), kafkaError: expect.stringContaining('no answer from Kafka within 1000 ms') });
    kafka.resume();
    expectDelivered(sent, await waitKafkaBack(sent));
    const back = await until('the relay to record Kafka up', async () => (await outboxRelayStatuses(ctx.queues, new Date())).find((r) => r.kafkaUp === true && r.lastPublishedAt), 30_000);
    expect(back).toMatchObject({ role: 'leader', kafkaDownSince: null, kafkaError: null });
  });

  it('hung after writing: the batches it wrote without answering are sent again with the same event ids; order per key holds', { timeout: 180_000 }, async () => {
    const produced = kafka.produceRequests();
    kafka.hang({ writes: true });
    const sent = await appendMany('writes', 9);
    await waitKafkaDown();
    // The broker got (and wrote) a batch it did not answer. On a busy machine the relay's probe
    // can find the broker hung before its first publish: the publish comes with its next try.
    await until('the broker to get a batch it does not answer', () => kafka.produceRequests() > produced, 60_000);
    kafka.resume();
    expectDelivered(sent, await waitKafkaBack(sent));
  });

  it('connections that went dead (the broker answers new ones): the relay goes on by itself over new connections', { timeout: 180_000 }, async () => {
    kafka.hang({ openOnly: true });
    // The test's consumer was cut off with them: a new one, on new connections, sees what arrives.
    const fresh = await collectMessages(kafka.brokers);
    try {
      const sent = await appendMany('dead', 9);
      await waitKafkaDown();
      // No resume(): the old connections never answer again.
      expectDelivered(sent, await waitKafkaBack(sent, fresh));
    } finally {
      await fresh.close().catch(() => {});
    }
  });

  it('slow, not hung (every answer after the limit): the limit doubles until the answers fit, for connecting as for publishing, and the events go out', { timeout: 180_000 }, async () => {
    // A new producer's connect is a few requests one after another: at 1.5 s each it never fits
    // the 1 s limit, nor does a publish; with the limit doubled after each cut-off they do.
    kafka.slow(1500);
    try {
      const sent = await appendMany('slow', 6);
      await waitKafkaDown();
      expectDelivered(sent, await waitKafkaBack(sent));
    } finally {
      kafka.slow(0);
    }
    // On time again: an answer within the base limit sets it back, so a hang is noticed within 1 s again.
    const sent = await appendMany('fast', 3);
    expectDelivered(sent, await waitKafkaBack(sent));
    kafka.hang();
    await appendMany('hang-again', 3);
    await waitKafkaDown();
  });
});
