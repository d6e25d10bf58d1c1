import { KafkaJSNonRetriableError, KafkaJSProtocolError } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit } from '../../libs/db/repositories/audit.js';
import { listParked, ParkedEventNotFound, retryParked } from '../../libs/db/repositories/outbox-parked.js';
import { outboxStats } from '../../libs/db/repositories/outbox-relay.js';
import { appendEvent } from '../../libs/events/index.js';
import { kafkajsPublisher, type EventPublisher } from '../../libs/events/kafka.js';
import { silentLogger } from '../../libs/log/index.js';
import type { Component, FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import type { MessageCollector } from '../../libs/testing/kafka-mock.js';
import { until } from '../../libs/testing/until.js';
import { startMockKafkaRelayHarness, type MockKafkaRelayHarness } from './int-harness.js';
import { outboxRelayComponents } from './worker.js';

/**
 * An event Kafka refuses for good, with the real PostgreSQL outbox, the real relay role and a
 * real kafkajs producer and consumer against the mock broker. The mock takes any message, so
 * the publisher in front of the real one refuses the chosen event ids the way kafkajs reports a
 * broker's MESSAGE_TOO_LARGE (the whole request fails, nothing of it is sent).
 */

let t: MockKafkaRelayHarness;
let db: TestDatabase;
let consumer: MessageCollector;
let ctx: FleetContext;
let relay: Component | undefined;

const refused = new Set<string>();

function refusingPublisher(inner: EventPublisher): EventPublisher {
  return {
    ...inner,
    async publish(batch) {
      if (batch.some((m) => refused.has(m.headers['event-id']!))) {
        const e = new KafkaJSProtocolError(
          Object.assign(new Error('The request included a message larger than the max message size the server will accept'), { type: 'MESSAGE_TOO_LARGE', code: 10, retriable: false }),
        );
        throw new (KafkaJSNonRetriableError as unknown as new (e: Error, m: { cause: Error }) => Error)(e, { cause: e });
      }
      await inner.publish(batch);
    },
  };
}

async function metric(name: string): Promise<number | undefined> {
  const m = await ctx.metrics.registry.getSingleMetric(name)?.get();
  return m?.values.reduce((a, v) => a + v.value, 0);
}

const append = (eventType: string, key: number) => db.db.transaction((tx) => appendEvent(tx, { eventType, key, payload: { id: key } }));

beforeAll(async () => {
  t = await startMockKafkaRelayHarness('parked');
  ({ db, ctx } = t);
  consumer = t.consumer!;
});

afterAll(() => t?.close(relay));

describe('an event Kafka refuses for good (real PostgreSQL)', () => {
  it('is parked with the later events of its key; the rest flows; an operator retries them once the cause is fixed', { timeout: 90_000 }, async () => {
    const p1 = await append('patient.created', 501);
    const bad = await append('patient.created', 502);
    const t1 = await append('therapist.updated', 502); // same key, another topic (another entity): not held
    const follower = await append('patient.updated', 502);
    const p2 = await append('patient.updated', 501);
    refused.add(bad.eventId);

    const [component] = outboxRelayComponents(ctx, {
      publisher: refusingPublisher(kafkajsPublisher({ ...ctx.config.kafka, brokers: ctx.config.kafka.brokers! }, silentLogger())),
    });
    relay = component!;
    await relay.start();

    const flowing = new Set([p1.eventId, t1.eventId, p2.eventId]);
    await consumer.waitFor((m) => m.filter((x) => flowing.has(x.headers['event-id']!)).length === 3);
    const parked = await until('both parked', async () => {
      const rows = await listParked(db.db);
      return rows.length === 2 && rows;
    });
    expect(parked.map((r) => [r.eventId, r.attempts])).toEqual([
      [bad.eventId, 1],
      [follower.eventId, 0],
    ]);
    expect(parked[0]!.reason).toMatch(/^MESSAGE_TOO_LARGE: /);
    expect(parked[1]!.reason).toBe(`held behind ${bad.eventId}`);

    // Kafka is up: readiness and metrics say so; the parked events are counted apart.
    expect(await relay.ready!()).toMatchObject({ ok: true });
    expect(await metric('fleet_outbox_kafka_up')).toBe(1);
    expect(await metric('fleet_outbox_parked')).toBe(2);
    expect(await metric('fleet_outbox_unpublished')).toBe(0);
    expect(await metric('fleet_outbox_lag_seconds')).toBe(0);
    expect(await outboxStats(db, new Date())).toMatchObject({ unpublished: 0, parked: 2, failing: 0 });

    // A new event of the parked key is held at once; one of another key goes out.
    const later = await append('patient.updated', 502);
    const p3 = await append('patient.updated', 501);
    await consumer.waitFor((m) => m.some((x) => x.headers['event-id'] === p3.eventId));
    await until('new follower held', async () => (await listParked(db.db)).length === 3);
    expect(consumer.messages.some((m) => [bad.eventId, follower.eventId, later.eventId].includes(m.headers['event-id']!))).toBe(false);

    // The cause is fixed; an operator puts the chain back by naming any of its events.
    refused.clear();
    await expect(retryParked(db.db, { eventId: p1.eventId }, { actor: 'test', reason: 'not parked' })).rejects.toBeInstanceOf(ParkedEventNotFound);
    expect(await retryParked(db.db, { eventId: follower.eventId }, { actor: 'ops-test', reason: 'broker limit raised' })).toEqual({ retried: 3 });
    const chain = [bad.eventId, follower.eventId, later.eventId];
    const got = await consumer.waitFor((m) => chain.every((id) => m.some((x) => x.headers['event-id'] === id)));
    // Same key, same partition: offsets in the original order.
    const offsets = chain.map((id) => Number(got.find((x) => x.headers['event-id'] === id)!.offset));
    expect([...offsets].sort((a, b) => a - b)).toEqual(offsets);
    await until('outbox drained', async () => (await outboxStats(db, new Date())).unpublished === 0 && (await metric('fleet_outbox_parked')) === 0);
    expect(await listParked(db.db)).toEqual([]);
    const [audit] = await listAudit(db.db, 1);
    expect(audit).toMatchObject({ actor: 'ops-test', action: 'events.retry-parked', target: follower.eventId, reason: 'broker limit raised', details: { retried: 3 } });
  });
});
