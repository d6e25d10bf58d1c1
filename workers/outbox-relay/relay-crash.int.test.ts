import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listOutbox } from '../../libs/db/repositories/outbox.js';
import { appendEvent } from '../../libs/events/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { collectMessages, startKafkaMock, type KafkaMock, type MessageCollector } from '../../libs/testing/kafka-mock.js';
import { until as untilWithin } from '../../libs/testing/until.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';

/**
 * The relay runs as a real `fleet start --only outbox-relay` process and is SIGKILLed while
 * the broker has written a batch whose acknowledgement the relay never got.
 */
const main = fileURLToPath(new URL('../../apps/cli/main.ts', import.meta.url));

let db: TestDatabase;
let kafka: KafkaMock;
let consumer: MessageCollector;
const children: ChildProcess[] = [];
// The relay processes record their state under the prefix (a killed one cannot remove it).
const queuePrefix = testQueuePrefix();

function startRelayProcess(): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', main, 'start', '--only', 'outbox-relay', '--no-migrate'], {
    env: {
      ...process.env,
      NODE_ENV: 'test',
      LOG_LEVEL: 'warn',
      LOG_PRETTY: 'false',
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: queuePrefix.prefix,
      KAFKA_BROKERS: kafka.brokers.join(','),
      KAFKA_CONNECTION_TIMEOUT_MS: '1000',
      KAFKA_REQUEST_TIMEOUT_MS: '30000',
      OUTBOX_RELAY_BATCH_SIZE: '50',
      OUTBOX_RELAY_POLL_INTERVAL_MS: '50',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.on('exit', (code, signal) => {
    if (code && code !== 0) console.error(`relay process exited with ${code} (${signal}): ${stderr}`);
  });
  children.push(child);
  return child;
}


const until = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000) => untilWithin(what, fn, timeoutMs, 25);

beforeAll(async () => {
  db = await createTestDatabase();
  kafka = await startKafkaMock();
  consumer = await collectMessages(kafka.brokers);
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await consumer?.close().catch(() => {});
  await kafka?.close();
  await db?.drop();
  await queuePrefix.cleanup();
});

describe('relay killed mid-batch', () => {
  // Two real CLI processes start here: ~20 s on a quiet machine, more when it is busy.
  it('after a SIGKILL and a restart every event arrives at least once; repeats carry the same event id and envelope', { timeout: 120_000 }, async () => {
    const keys = Array.from({ length: 10 }, (_, i) => `p-${i}`);
    const order = new Map<string, string[]>();
    for (let round = 0; round < 60; round++) {
      const ids = await db.db.transaction(async (tx) => {
        const out: Array<[string, string]> = [];
        for (const key of keys) out.push([key, (await appendEvent(tx, { eventType: 'patient.updated', key, payload: { round } })).eventId]);
        return out;
      });
      for (const [k, id] of ids) order.set(k, [...(order.get(k) ?? []), id]);
    }
    const all = new Set([...order.values()].flat());
    expect(all.size).toBe(600);

    // Three batches go through; the fourth is written by the broker but never acknowledged.
    kafka.holdProduceResponses({ after: 3 });
    const first = startRelayProcess();
    await until('the fourth produce request', () => kafka.produceRequests() >= 4);
    await until('the first three batches stamped', async () => (await listOutbox(db.db, { limit: 1000 })).filter((r) => r.publishedAt).length === 150);
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    kafka.releaseProduceResponses();
    const stamped = (await listOutbox(db.db, { limit: 1000 })).filter((r) => r.publishedAt);
    expect(stamped).toHaveLength(150); // the unacknowledged batch stays unpublished in PostgreSQL
    await until('the unacknowledged batch to reach the consumer', () => consumer.messages.filter((m) => all.has(m.headers['event-id']!)).length >= 200);

    const second = startRelayProcess();
    await consumer.waitFor((m) => new Set(m.map((x) => x.headers['event-id'])).size >= 600 && m.filter((x) => all.has(x.headers['event-id']!)).length >= 650, 40_000);
    await until('outbox drained', async () => (await listOutbox(db.db, { unpublishedOnly: true })).length === 0);
    second.kill('SIGTERM');
    await new Promise((r) => second.once('exit', r));

    const received = consumer.messages.filter((m) => all.has(m.headers['event-id']!));
    const seen = new Map<string, string>();
    let repeats = 0;
    for (const m of received) {
      const id = m.headers['event-id']!;
      expect(JSON.parse(m.value!).eventId).toBe(id);
      if (seen.has(id)) {
        repeats++;
        expect(m.value).toBe(seen.get(id)); // the very same envelope
      } else seen.set(id, m.value!);
    }
    expect(seen.size).toBe(600); // none lost
    expect(repeats).toBe(50); // exactly the batch in flight at the kill, published again
    // Dropping repeats by event id leaves every key's events in their original order.
    for (const [key, ids] of order) {
      const firsts: string[] = [];
      for (const m of received) if (m.key === key && !firsts.includes(m.headers['event-id']!)) firsts.push(m.headers['event-id']!);
      expect(firsts).toEqual(ids);
    }
  });
});
