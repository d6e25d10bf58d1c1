import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { listOutbox } from '../../libs/db/repositories/outbox.js';
import { appendEvent, type EventEnvelope } from '../../libs/events/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { collectMessages, startKafkaMock, type KafkaMock, type MessageCollector, type ReceivedMessage, fastRelaySettings } from '../../libs/testing/kafka-mock.js';
import { TEST_REDIS_URL, randomSuffix } from '../../libs/testing/services.js';
import { until } from '../../libs/testing/until.js';
import { outboxRelayComponents } from './worker.js';

let db: TestDatabase;
let kafka: KafkaMock;
let consumer: MessageCollector;
const contexts: FleetContext[] = [];
const running: Component[] = [];

function relayContext(env: Record<string, string> = {}): FleetContext {
  const config = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: db.url,
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: `relay_${randomSuffix()}`,
    ...fastRelaySettings(kafka.brokers),
    ...env,
  });
  const ctx = openContext(config, silentLogger());
  contexts.push(ctx);
  return ctx;
}

async function startRelay(ctx: FleetContext): Promise<Component> {
  const [relay] = outboxRelayComponents(ctx);
  await relay!.start();
  running.push(relay!);
  return relay!;
}

async function stopRelay(relay: Component) {
  await relay.stop(5000);
  running.splice(running.indexOf(relay), 1);
}

async function metric(ctx: FleetContext, name: string): Promise<number | undefined> {
  const m = await ctx.metrics.registry.getSingleMetric(name)?.get();
  return m?.values.reduce((a, v) => a + v.value, 0);
}


const byEventId = (msgs: ReceivedMessage[], ids: Set<string>) => msgs.filter((m) => ids.has(m.headers['event-id']!));

beforeAll(async () => {
  db = await createTestDatabase();
  kafka = await startKafkaMock();
  consumer = await collectMessages(kafka.brokers);
});

afterEach(async () => {
  // A failed test must not leave its relay publishing into the next one.
  for (const r of running.splice(0)) await r.stop(2000).catch(() => {});
});

afterAll(async () => {
  await consumer?.close().catch(() => {});
  for (const ctx of contexts) await ctx.close().catch(() => {});
  await kafka?.close();
  await db?.drop();
});

describe('outbox relay against a Kafka-protocol broker', () => {
  it('publishes committed events with the envelope, the entity id as key and the event id header; rolled back ones never', async () => {
    const envelopes: Array<{ env: EventEnvelope; key: string; topic: string }> = [];
    await db.db.transaction(async (tx) => {
      envelopes.push({ env: await appendEvent(tx, { eventType: 'patient.created', key: 4711, payload: { patientId: 4711 } }), key: '4711', topic: 'patient-events' });
      envelopes.push({
        env: await appendEvent(tx, { eventType: 'therapist.updated', key: 88, payload: { therapistId: 88, changed: ['telefon'] } }),
        key: '88',
        topic: 'therapist-events',
      });
      envelopes.push({
        env: await appendEvent(tx, { eventType: 'import.failed', key: 'pf-12', payload: { fileId: 12, reason: 'invalid' } }),
        key: 'pf-12',
        topic: 'import-events',
      });
    });
    let rolledBack: EventEnvelope | undefined;
    await expect(
      db.db.transaction(async (tx) => {
        rolledBack = await appendEvent(tx, { eventType: 'patient.created', key: 999, payload: { patientId: 999 } });
        throw new Error('the change failed');
      }),
    ).rejects.toThrow('the change failed');

    const ctx = relayContext();
    const relay = await startRelay(ctx);
    const ids = new Set(envelopes.map((e) => e.env.eventId));
    const got = await consumer.waitFor((m) => byEventId(m, ids).length >= 3);
    for (const { env, key, topic } of envelopes) {
      const msg = got.find((m) => m.headers['event-id'] === env.eventId)!;
      expect(msg.topic).toBe(topic);
      expect(msg.key).toBe(key);
      expect(msg.headers['event-type']).toBe(env.eventType);
      expect(JSON.parse(msg.value!)).toEqual(env);
    }
    expect(byEventId(consumer.messages, ids)).toHaveLength(3);
    expect(consumer.messages.some((m) => m.headers['event-id'] === rolledBack!.eventId)).toBe(false);

    const rows = await until('rows stamped published', async () => {
      const r = await listOutbox(db.db);
      return r.every((row) => row.publishedAt) && r;
    });
    expect(rows.map((r) => r.eventId).sort()).toEqual([...ids].sort());
    expect(await relay.ready!()).toMatchObject({ ok: true });
    expect(await metric(ctx, 'fleet_outbox_published_total')).toBe(3);
    expect(await metric(ctx, 'fleet_outbox_unpublished')).toBe(0);
    expect(await metric(ctx, 'fleet_outbox_relay_leader')).toBe(1);
    await stopRelay(relay);
  });

  it('broker down while 200 events are appended: appends never wait, readiness says Kafka is down, all 200 arrive after restart', async () => {
    const ctx = relayContext();
    const relay = await startRelay(ctx);
    await until('relay ready', async () => (await relay.ready!()).ok);
    await kafka.stop();

    // 200 "imports": each commits a change with its event while Kafka is away.
    const started = Date.now();
    const appended = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        db.db.transaction((tx) => appendEvent(tx, { eventType: 'patient.created', key: 10_000 + i, payload: { patientId: 10_000 + i } })),
      ),
    );
    const appendMs = Date.now() - started;
    expect(appendMs).toBeLessThan(15_000); // generous: they only wait for PostgreSQL, never for Kafka
    const ids = new Set(appended.map((e) => e.eventId));

    const down = await until('readiness to report Kafka down', async () => {
      const r = await relay.ready!();
      return !r.ok && r;
    });
    expect(down.detail).toMatch(/kafka down/);
    expect(await metric(ctx, 'fleet_outbox_unpublished')).toBe(200);
    expect(await metric(ctx, 'fleet_outbox_lag_seconds')).toBeGreaterThan(0);
    expect(await metric(ctx, 'fleet_outbox_kafka_up')).toBe(0);
    expect(await metric(ctx, 'fleet_outbox_publish_failures_total')).toBeGreaterThan(0);
    const waiting = await listOutbox(db.db, { unpublishedOnly: true, limit: 1000 });
    expect(waiting).toHaveLength(200);
    expect(waiting.some((r) => r.lastError)).toBe(true);

    await kafka.start();
    const got = await consumer.waitFor((m) => new Set(byEventId(m, ids).map((x) => x.headers['event-id'])).size === 200, 40_000);
    expect(new Set(byEventId(got, ids).map((x) => x.headers['event-id'])).size).toBe(200);
    await until('outbox drained', async () => (await listOutbox(db.db, { unpublishedOnly: true })).length === 0);
    await until('readiness ok again', async () => (await relay.ready!()).ok);
    expect(await metric(ctx, 'fleet_outbox_unpublished')).toBe(0);
    expect(await metric(ctx, 'fleet_outbox_lag_seconds')).toBe(0);
    await stopRelay(relay);
  });

  it('two relays at once: one publishes, every event arrives exactly once, per-key order kept; the standby takes over', async () => {
    const a = relayContext({ OUTBOX_RELAY_BATCH_SIZE: '37' });
    const b = relayContext({ OUTBOX_RELAY_BATCH_SIZE: '37' });
    const relayA = await startRelay(a);
    const relayB = await startRelay(b);
    const keys = Array.from({ length: 12 }, (_, i) => 20_000 + i);
    const seqs = new Map<string, string[]>(); // key -> event ids in append order
    const append = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const batch = keys.map((k) =>
          db.db.transaction(async (tx) => {
            const env = await appendEvent(tx, { eventType: 'therapist.updated', key: k, payload: { therapistId: k } });
            return [String(k), env.eventId] as const;
          }),
        );
        // Events of one key are appended one after another (their changes would lock the same row).
        for (const [k, id] of await Promise.all(batch)) seqs.set(k, [...(seqs.get(k) ?? []), id]);
      }
    };
    await append(25); // 300 events while both relays run
    const leaders = async () => [(await metric(a, 'fleet_outbox_relay_leader')) ?? 0, (await metric(b, 'fleet_outbox_relay_leader')) ?? 0];
    const allIds = () => new Set([...seqs.values()].flat());
    await consumer.waitFor((m) => new Set(byEventId(m, allIds()).map((x) => x.headers['event-id'])).size === 300, 30_000);
    expect((await leaders()).sort()).toEqual([0, 1]);
    const published = [(await metric(a, 'fleet_outbox_published_total')) ?? 0, (await metric(b, 'fleet_outbox_published_total')) ?? 0];
    expect(published.sort((x, y) => x - y)).toEqual([0, 300]);

    // The leader stops; the standby takes over and publishes what comes next.
    const [leaderRelay, standby, standbyCtx] = (await leaders())[0] === 1 ? [relayA, relayB, b] : [relayB, relayA, a];
    await stopRelay(leaderRelay);
    await append(5);
    await consumer.waitFor((m) => new Set(byEventId(m, allIds()).map((x) => x.headers['event-id'])).size === 360, 30_000);
    expect(await metric(standbyCtx, 'fleet_outbox_relay_leader')).toBe(1);

    const received = byEventId(consumer.messages, allIds());
    expect(received).toHaveLength(360); // each exactly once
    for (const [key, ids] of seqs) {
      const order = received.filter((m) => m.key === key).map((m) => m.headers['event-id']);
      expect(order).toEqual(ids);
    }
    await stopRelay(standby);
  });

  it('PostgreSQL ends the leader\'s lock session (a restart, a failover): the process lives on, the relay leads again and publishes', async () => {
    const ctx = relayContext();
    const relay = await startRelay(ctx);
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      await until('the relay to lead', async () => (await metric(ctx, 'fleet_outbox_relay_leader')) === 1, 10_000);
      // The session holding the relay's advisory lock (objsubid 2, object 1, as the relay checks it; object 2 is the parking lock it takes during each drain).
      const holders = await db.sql<Array<{ pid: number }>>`select pid from pg_locks where locktype = 'advisory' and objsubid = 2 and objid = 1 and granted and database = (select oid from pg_database where datname = current_database())`;
      expect(holders).toHaveLength(1);
      await db.sql`select pg_terminate_backend(${holders[0]!.pid})`;
      const ids = new Set<string>();
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 300));
        ids.add((await db.db.transaction((tx) => appendEvent(tx, { eventType: 'patient.created', key: 30_000 + i, payload: { patientId: 30_000 + i } }))).eventId);
      }
      await consumer.waitFor((m) => byEventId(m, ids).length === 3, 30_000);
      expect(await metric(ctx, 'fleet_outbox_relay_leader')).toBe(1);
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    await stopRelay(relay);
  });

  it('the leader prunes published rows past OUTBOX_RETENTION_DAYS and keeps the rest', async () => {
    const make = (key: number) => db.db.transaction((tx) => appendEvent(tx, { eventType: 'patient.created', key, payload: { patientId: key } }));
    const old = await make(40_001);
    const recent = await make(40_002);
    const waiting = await make(40_003);
    await db.sql`update fleet.outbox set published_at = now() - interval '10 days' where event_id = ${old.eventId}`;
    await db.sql`update fleet.outbox set published_at = now() - interval '6 days' where event_id = ${recent.eventId}`;
    const relay = await startRelay(relayContext({ OUTBOX_RETENTION_DAYS: '7' }));
    await consumer.waitFor((m) => m.some((x) => x.headers['event-id'] === waiting.eventId));
    const left = async () => new Set((await listOutbox(db.db, { limit: 10_000 })).map((r) => r.eventId));
    await until('the old row pruned', async () => !(await left()).has(old.eventId));
    const rows = await left();
    expect(rows.has(recent.eventId)).toBe(true);
    expect(rows.has(waiting.eventId)).toBe(true);
    // The pruned row was never sent again: it had been published already.
    expect(consumer.messages.some((m) => m.headers['event-id'] === old.eventId)).toBe(false);
    await stopRelay(relay);
  });

  it('without KAFKA_BROKERS the role is harmless: it stays idle, says so, and events stay in the outbox', async () => {
    const ctx = relayContext({ KAFKA_BROKERS: '' });
    expect(ctx.config.kafka.brokers).toBeUndefined();
    const relay = await startRelay(ctx);
    const env = await db.db.transaction((tx) => appendEvent(tx, { eventType: 'patient.created', key: 30_000, payload: { patientId: 30_000 } }));
    await new Promise((r) => setTimeout(r, 500));
    expect(await relay.ready!()).toEqual({ ok: true, detail: 'kafka not configured: events stay in the outbox' });
    const waiting = await listOutbox(db.db, { unpublishedOnly: true });
    expect(waiting.map((r) => r.eventId)).toEqual([env.eventId]);
    expect(await metric(ctx, 'fleet_outbox_unpublished')).toBe(1);
    // Kafka off by configuration: the alerts stand down on this gauge (FleetKafkaNotConfigured).
    expect(await metric(ctx, 'fleet_outbox_kafka_configured')).toBe(0);
    // Nothing was asked of Kafka: no "Kafka down" (a 0 here fired FleetKafkaDown after 15 minutes).
    expect(await ctx.metrics.registry.metrics()).not.toMatch(/^fleet_outbox_kafka_up /m);
    await stopRelay(relay);

    // A relay with Kafka publishes it later.
    const laterCtx = relayContext();
    const later = await startRelay(laterCtx);
    expect(await metric(laterCtx, 'fleet_outbox_kafka_configured')).toBe(1);
    await consumer.waitFor((m) => m.some((x) => x.headers['event-id'] === env.eventId));
    expect(await laterCtx.metrics.registry.metrics()).toMatch(/^fleet_outbox_kafka_up 1$/m);
    await stopRelay(later);
  });
});
