import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listParked } from '../../libs/db/repositories/outbox-parked.js';
import { appendEvent } from '../../libs/events/index.js';
import type { Component, FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import type { KafkaMock, MessageCollector } from '../../libs/testing/kafka-mock.js';
import { startMockKafkaRelayHarness, type MockKafkaRelayHarness } from './int-harness.js';
import { outboxRelayComponents } from './worker.js';

/**
 * The broker answers Produce with an error about itself, not about the messages, which kafkajs
 * marks non-retriable (BROKER_NOT_AVAILABLE, UNKNOWN_SERVER_ERROR): real PostgreSQL, the real
 * relay role and kafkajs producer, the mock broker answering with the error code on the wire.
 * That is an outage: nothing may be parked (which would wait for an operator); the events go
 * out once the broker answers normally again.
 */

let t: MockKafkaRelayHarness;
let db: TestDatabase;
let kafka: KafkaMock;
let consumer: MessageCollector;
let ctx: FleetContext;
let relay: Component | undefined;

const PRODUCE = 0;

const append = (key: string) => db.db.transaction((tx) => appendEvent(tx, { eventType: 'patient.updated', key, payload: { patientId: key } }));

beforeAll(async () => {
  t = await startMockKafkaRelayHarness('brokererr');
  ({ db, kafka, ctx } = t);
  consumer = t.consumer!;
  [relay] = outboxRelayComponents(ctx);
  await relay!.start();
  const warm = await append('warm-up');
  await consumer.waitFor((m) => m.some((x) => x.headers['event-id'] === warm.eventId));
});

afterAll(() => t?.close(relay));

describe('a broker answering errors about itself', () => {
  it.each([
    ['BROKER_NOT_AVAILABLE', 8],
    ['UNKNOWN_SERVER_ERROR', -1],
  ])('%s: an outage, nothing parked; the events arrive in order once it answers normally', { timeout: 60_000 }, async (name, code) => {
    await kafka.pushErrors(PRODUCE, code, 6);
    const sent = [await append(`${name}-a`), await append(`${name}-b`), await append(`${name}-a`)];
    const got = await consumer.waitFor((m) => sent.every((e) => m.some((x) => x.headers['event-id'] === e.eventId)));
    expect(await listParked(db.db)).toEqual([]);
    const ofA = got.filter((x) => x.key === `${name}-a`).map((x) => x.headers['event-id']);
    expect(ofA.filter((id, i) => ofA.indexOf(id) === i)).toEqual([sent[0]!.eventId, sent[2]!.eventId]);
  });
});
