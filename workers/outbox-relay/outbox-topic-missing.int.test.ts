import { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listOutbox } from '../../libs/db/repositories/outbox.js';
import { appendEvent, type EventEnvelope } from '../../libs/events/index.js';
import { createLogger } from '../../libs/log/index.js';
import { loadConfig } from '../../libs/config/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { collectMessages, fastRelaySettings, startKafkaMock, type KafkaMock, type MessageCollector } from '../../libs/testing/kafka-mock.js';
import { TEST_REDIS_URL, randomSuffix } from '../../libs/testing/services.js';
import { startMockKafkaRelayHarness, type MockKafkaRelayHarness } from './int-harness.js';
import { until } from '../../libs/testing/until.js';
import { outboxRelayComponents } from './worker.js';

/**
 * A broker that answers but lacks one of the fleet's topics (`fleet events setup` skipped):
 * kafkajs reports UNKNOWN_TOPIC_OR_PARTITION. The relay must say that (log, readiness, metric),
 * not "Kafka unreachable", and keep the events waiting in order until the topic exists.
 * The mock does not create topics because a client asked for them (see kafka-proxy.ts).
 */

let t: MockKafkaRelayHarness;
let db: TestDatabase;
let kafka: KafkaMock;
let consumer: MessageCollector | undefined;
let ctx: FleetContext;
let relay: Component | undefined;
const logs: Array<{ level: number; msg: string; [k: string]: unknown }> = [];

beforeAll(async () => {
  t = await startMockKafkaRelayHarness('topic', {
    topics: [{ name: 'patient-events', partitions: 3 }, { name: 'therapist-events', partitions: 3 }],
    env: { OUTBOX_RELAY_BATCH_SIZE: '4' },
    log: createLogger({ level: 'info', pretty: 'false' }, { write: (line: string) => void logs.push(JSON.parse(line)) }),
    consumer: false,
  });
  ({ db, kafka, ctx } = t);
});

afterAll(async () => {
  await consumer?.close().catch(() => {}); // the test's own, made once the topic exists
  await t?.close(relay);
});

async function metric(name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const m = await ctx.metrics.registry.getSingleMetric(name)?.get();
  return m?.values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}

const append = (eventType: string, key: string | number) => db.db.transaction((tx) => appendEvent(tx, { eventType, key, payload: { id: String(key) } }));

describe('an event topic that does not exist on Kafka', () => {
  it('is reported as a missing topic (not Kafka down); the events wait in order and all go out once when the topic is created', { timeout: 90_000 }, async () => {
    const appended: EventEnvelope[] = [];
    for (const [type, key] of [
      ['patient.created', 701],
      ['import.completed', 'pf-1'],
      ['patient.updated', 701],
      ['therapist.updated', 88],
      ['import.failed', 'pf-1'],
      ['patient.updated', 702],
      ['patient.updated', 701],
      ['import.completed', 'pf-2'],
      ['therapist.updated', 88],
    ] as const) {
      appended.push(await append(type, key));
    }

    [relay] = outboxRelayComponents(ctx);
    await relay!.start();

    const missing = await until('readiness to name the missing topic', async () => {
      const r = await relay!.ready!();
      return !r.ok && r.detail?.includes('import-events') && r;
    });
    expect(missing.detail).toMatch(/no topic import-events .*fleet events setup.*events wait in the outbox/);
    expect(missing.detail).not.toMatch(/kafka down/);
    // The brokers answer: Kafka is up; the missing topic has its own gauge.
    expect(await metric('fleet_outbox_kafka_up')).toBe(1);
    expect(await metric('fleet_outbox_topic_missing', { topic: 'import-events' })).toBe(1);
    expect(await metric('fleet_outbox_topic_missing', { topic: 'patient-events' })).toBe(0);

    // Let the relay retry a few times: still waiting, nothing parked, nothing sent (the first batch holds the import event).
    await until('a few retries', async () => (await listOutbox(db.db, { unpublishedOnly: true })).some((r) => r.attempts >= 3));
    const waiting = await listOutbox(db.db, { unpublishedOnly: true, limit: 100 });
    expect(waiting).toHaveLength(appended.length);
    expect(waiting.every((r) => !r.parkedAt)).toBe(true);
    expect(waiting[0]!.lastError).toMatch(/no topic import-events/);
    expect(kafka.produceRequests()).toBe(0);

    const warnings = logs.filter((l) => l.level === 40);
    expect(warnings.filter((l) => /fleet events setup/.test(l.msg))).toHaveLength(1);
    expect(warnings.find((l) => /fleet events setup/.test(l.msg))).toMatchObject({ topics: ['import-events'] });
    expect(warnings.filter((l) => /kafka down/.test(l.msg))).toEqual([]);

    // The operator creates the topic: everything goes out, once each, in order per key.
    await kafka.createTopic({ name: 'import-events', partitions: 3 });
    consumer = await collectMessages(kafka.brokers);
    const ids = new Set(appended.map((e) => e.eventId));
    const got = await consumer.waitFor((m) => m.filter((x) => ids.has(x.headers['event-id']!)).length >= appended.length);
    await until('outbox drained', async () => (await listOutbox(db.db, { unpublishedOnly: true })).length === 0);
    await new Promise((r) => setTimeout(r, 500)); // a duplicate would have arrived by now
    const mine = consumer.messages.filter((x) => ids.has(x.headers['event-id']!));
    expect(mine.map((m) => m.headers['event-id']).sort()).toEqual([...ids].sort());
    for (const key of ['701', 'pf-1', '88']) {
      const sent = appended.filter((e) => String(e.payload.id) === key).map((e) => e.eventId);
      const offsets = sent.map((id) => Number(got.find((m) => m.headers['event-id'] === id)!.offset));
      expect(offsets, `key ${key}`).toEqual([...offsets].sort((a, b) => a - b));
    }

    expect(await relay!.ready!()).toMatchObject({ ok: true });
    expect(await metric('fleet_outbox_topic_missing', { topic: 'import-events' })).toBe(0);
    expect(logs.some((l) => l.level === 30 && /publishing the backlog/.test(l.msg) && (l.topics as string[])?.includes('import-events'))).toBe(true);
  });

  it('is not created by a broker that would create topics on request (auto.create.topics.enable, Kafka default): the producer never asks', { timeout: 120_000 }, async () => {
    // One relay leads per database: the first test's gives way.
    await relay?.stop(2000);
    relay = undefined;
    const autoKafka = await startKafkaMock({ topics: [{ name: 'patient-events', partitions: 3 }], autoCreateTopics: true });
    const autoCtx = openContext(loadConfig({ NODE_ENV: 'test', DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: `topic_${randomSuffix()}`, ...fastRelaySettings(autoKafka.brokers) }), ctx.log);
    const [autoRelay] = outboxRelayComponents(autoCtx);
    try {
      const event = await append('therapist.updated', 99);
      await autoRelay!.start();
      // A publish attempt has failed, or (a topic created on request) the event went out.
      const [row] = await until(
        'a publish attempt',
        async () => {
          const rows = (await listOutbox(db.db, { limit: 1000 })).filter((x) => x.eventId === event.eventId);
          return rows.length === 1 && (rows[0]!.attempts >= 1 || rows[0]!.publishedAt !== null) && rows;
        },
        60_000,
        200,
      );
      expect(row!.publishedAt).toBeNull();
      expect(row!.lastError).toMatch(/no topic therapist-events/);
      const admin = new Kafka({ clientId: 'topic-check', brokers: autoKafka.brokers, logLevel: logLevel.NOTHING }).admin();
      await admin.connect();
      try {
        expect(await admin.listTopics()).not.toContain('therapist-events');
      } finally {
        await admin.disconnect();
      }
    } finally {
      await autoRelay!.stop(2000).catch(() => {});
      await autoCtx.close().catch(() => {});
      await autoKafka.close();
    }
  });
});
