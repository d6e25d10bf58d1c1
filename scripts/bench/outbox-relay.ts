/**
 * Outbox relay throughput: a backlog of N outbox rows (default 100,000) published by the
 * relay to the Kafka mock broker, next to a plain kafkajs producer sending the same messages
 * (same keys, values, headers, batch size and producer settings) in the same run.
 *
 *   npx tsx scripts/bench/outbox-relay.ts [--events 100000] [--batch 500] [--rounds 1] [--relay-only]
 *
 * Prints the heap and RSS of the process while the relay drains; `--relay-only` leaves the
 * plain producer (and its copy of every message) out, so they are the relay's own.
 *
 * Needs PostgreSQL (TEST_DATABASE_URL or postgres://postgres@127.0.0.1:5432/postgres) and
 * gcc + librdkafka-dev for the mock broker (built on first use).
 */
import { parseArgs } from 'node:util';
import { Kafka, Partitioners, logLevel } from 'kafkajs';
import postgres from 'postgres';
import { openDatabase } from '../../libs/db/client.js';
import { runMigrations } from '../../libs/db/migrate.js';
import { relayLeases, outboxBacklog, prunePublished, type UnpublishedEvent } from '../../libs/db/repositories/outbox-relay.js';
import { kafkajsPublisher, outgoingEvent } from '../../libs/events/kafka.js';
import { silentLogger } from '../../libs/log/index.js';
import { systemClock } from '../../libs/runtime/clock.js';
import { startKafkaMock } from '../../libs/testing/kafka-mock.js';
import { TEST_ADMIN_DB_URL, randomSuffix, withDatabase } from '../../libs/testing/services.js';
import { createOutboxRelay } from '../../workers/outbox-relay/relay.js';

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '100000' },
    batch: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '1' },
    'relay-only': { type: 'boolean', default: false },
  },
});
const EVENTS = Number(args.events);
const BATCH = Number(args.batch);
const ROUNDS = Number(args.rounds);
const RELAY_ONLY = args['relay-only'] === true;

const admin = postgres(TEST_ADMIN_DB_URL, { max: 1, onnotice: () => {} });
const dbName = `fleet_bench_relay_${randomSuffix()}`;
await admin.unsafe(`create database "${dbName}"`);
const url = withDatabase(TEST_ADMIN_DB_URL, dbName);
const mock = await startKafkaMock();
const database = openDatabase({ url, poolMax: 4, statementTimeoutMs: 300_000, idleInTransactionTimeoutMs: 300_000 });
const leases = relayLeases(database);

const rate = (n: number, ms: number) => Math.round((n / ms) * 1000);

async function fillBacklog() {
  await database.sql`truncate fleet.outbox`;
  const t0 = performance.now();
  // Realistic rows: 10,000 entities over the three topics, ids-only payloads.
  await database.sql`
    insert into fleet.outbox (event_id, event_type, version, topic, key, producer, payload, occurred_at)
    select gen_random_uuid(),
           (array['patient.created','therapist.updated','import.failed'])[1 + i % 3],
           1,
           (array['patient-events','therapist-events','import-events'])[1 + i % 3],
           (i % 10000)::text,
           'curavani-fleet',
           jsonb_build_object('entityId', i % 10000, 'changed', jsonb_build_array('status', 'plz')),
           now()
    from generate_series(1, ${EVENTS}) as i`;
  await database.sql`vacuum analyze fleet.outbox`;
  return performance.now() - t0;
}

async function plainProducer(messages: ReturnType<typeof outgoingEvent>[]) {
  const kafka = new Kafka({ clientId: 'bench-plain', brokers: mock.brokers, logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const t0 = performance.now();
  for (let i = 0; i < messages.length; i += BATCH) {
    const byTopic = new Map<string, typeof messages>();
    for (const m of messages.slice(i, i + BATCH)) byTopic.set(m.topic, [...(byTopic.get(m.topic) ?? []), m]);
    await producer.sendBatch({
      acks: -1,
      topicMessages: [...byTopic].map(([topic, ms]) => ({
        topic,
        messages: ms.map((m) => ({ key: m.key, value: m.value, headers: m.headers, timestamp: String(m.timestamp!.getTime()) })),
      })),
    });
  }
  const ms = performance.now() - t0;
  await producer.disconnect();
  return ms;
}

/** Heap and RSS of this process while the relay drains (sampled every 250 ms), in MB. */
const memory = { heapMin: Infinity, heapMax: 0, rssMin: Infinity, rssMax: 0 };
function sampleMemory() {
  const m = process.memoryUsage();
  memory.heapMin = Math.min(memory.heapMin, m.heapUsed / 2 ** 20);
  memory.heapMax = Math.max(memory.heapMax, m.heapUsed / 2 ** 20);
  memory.rssMin = Math.min(memory.rssMin, m.rss / 2 ** 20);
  memory.rssMax = Math.max(memory.rssMax, m.rss / 2 ** 20);
}

async function relay() {
  const publisher = kafkajsPublisher({ brokers: mock.brokers, clientId: 'bench-relay', connectionTimeoutMs: 3000, requestTimeoutMs: 30_000 }, silentLogger());
  await publisher.connect();
  let published = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const t0 = performance.now();
  const r = createOutboxRelay(
    {
      acquireLease: () => leases.acquire(),
      publisher,
      prunePublished: (d) => prunePublished(database, d),
      clock: systemClock,
      log: silentLogger(),
      onBatch: (b) => {
        published += b.published;
        if (published >= EVENTS) done();
      },
    },
    { batchSize: BATCH, pollIntervalMs: 20, backoffMinMs: 100, backoffMaxMs: 1000, retentionDays: 7, pruneIntervalMs: 3_600_000, probeIntervalMs: 60_000 },
  );
  r.start();
  sampleMemory();
  const sampler = setInterval(sampleMemory, 250);
  await finished;
  const ms = performance.now() - t0;
  clearInterval(sampler);
  await r.stop(5000);
  const left = await outboxBacklog(database, new Date());
  if (left.unpublished !== 0) throw new Error(`relay left ${left.unpublished} rows unpublished`);
  return ms;
}

try {
  await runMigrations(url, { platform: false });
  const results: Array<{ round: number; plain: number; relay: number }> = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const fillMs = await fillBacklog();
    if (RELAY_ONLY) {
      const relayMs = await relay();
      process.stdout.write(`round ${round}: backlog of ${EVENTS} rows written in ${(fillMs / 1000).toFixed(1)} s; relay ${rate(EVENTS, relayMs)} events/s (${(relayMs / 1000).toFixed(1)} s)\n`);
      continue;
    }
    // The same messages the relay will send, read the way the relay reads them.
    const lease = (await leases.acquire())!;
    const rows: UnpublishedEvent[] = await lease.fetchUnpublished(EVENTS);
    await lease.release();
    const messages = rows.map(outgoingEvent);
    // Alternate which goes first, so a busy spell on the machine does not always hit the same one.
    let plainMs: number;
    let relayMs: number;
    if (round % 2 === 1) {
      plainMs = await plainProducer(messages);
      relayMs = await relay();
    } else {
      relayMs = await relay();
      plainMs = await plainProducer(messages);
    }
    const plain = rate(EVENTS, plainMs);
    const relayRate = rate(EVENTS, relayMs);
    results.push({ round, plain, relay: relayRate });
    process.stdout.write(
      `round ${round}: backlog of ${EVENTS} rows written in ${(fillMs / 1000).toFixed(1)} s; ` +
        `plain kafkajs producer ${plain} events/s (${(plainMs / 1000).toFixed(1)} s), ` +
        `relay ${relayRate} events/s (${(relayMs / 1000).toFixed(1)} s) = ${Math.round((relayRate / plain) * 100)}% of plain\n`,
    );
  }
  const mem = `while the relay drained: heap used ${memory.heapMin.toFixed(0)}-${memory.heapMax.toFixed(0)} MB, rss ${memory.rssMin.toFixed(0)}-${memory.rssMax.toFixed(0)} MB`;
  if (RELAY_ONLY) process.stdout.write(`${mem}\n`);
  else printComparison(results, mem);
} finally {
  await leases.close();
  await database.close();
  await mock.close();
  await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
  await admin.end();
}

function printComparison(results: Array<{ round: number; plain: number; relay: number }>, mem: string) {
  const best = (k: 'plain' | 'relay') => Math.max(...results.map((r) => r[k]));
  const ratios = results.map((r) => r.relay / r.plain).sort((a, b) => a - b);
  const median = ratios[Math.floor(ratios.length / 2)]!;
  process.stdout.write(
    `\nevents ${EVENTS}, batch ${BATCH}, idempotent producer, acks all, 1 request in flight, mock broker behind the test proxy\n` +
      `best plain ${best('plain')} events/s, best relay ${best('relay')} events/s (${Math.round((best('relay') / best('plain')) * 100)}%); ` +
      `median relay/plain over ${results.length} round(s): ${Math.round(median * 100)}%\n` +
      // The process also holds the plain producer's copy of every message (read once, up front).
      `${mem}\n`,
  );
}
