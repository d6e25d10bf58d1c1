import { rm } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { listOutbox } from '../../libs/db/repositories/outbox.js';
import { appendEvent, type EventEnvelope } from '../../libs/events/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { collectMessages, startKafkaMock, type KafkaMock, type MessageCollector } from '../../libs/testing/kafka-mock.js';
import type { ProxySecurity, SaslMechanism } from '../../libs/testing/kafka-proxy.js';
import { TEST_REDIS_URL, randomSuffix } from '../../libs/testing/services.js';
import { until } from '../../libs/testing/until.js';
import { makeTestCertificates, type TestCertificates } from '../../libs/testing/tls-certs.js';
import { outboxRelayComponents } from './worker.js';

/**
 * The relay against a broker listener that wants TLS and SASL, configured only through the
 * KAFKA_SSL* and KAFKA_SASL_* variables (as an operator would): the proxy in front of the mock
 * broker terminates TLS and checks the SASL credentials itself; a plain listener on the same
 * broker lets the test's consumer read what arrived.
 */
const PASSWORD = 'kafka-secret-8f2c41d9';
let certs: TestCertificates;
const cleanups: Array<() => Promise<unknown>> = [];
const running: Component[] = [];

beforeAll(async () => {
  certs = await makeTestCertificates();
});

afterEach(async () => {
  for (const r of running.splice(0)) await r.stop(2000).catch(() => {});
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

afterAll(async () => {
  if (certs) await rm(certs.dir, { recursive: true, force: true });
});

interface Setup {
  db: TestDatabase;
  kafka: KafkaMock;
  consumer: MessageCollector;
  secure: NonNullable<KafkaMock['secure']>;
}

async function brokerWith(security: ProxySecurity): Promise<Setup> {
  const db = await createTestDatabase();
  cleanups.push(() => db.drop());
  const kafka = await startKafkaMock({ secure: security });
  cleanups.push(() => kafka.close());
  const consumer = await collectMessages(kafka.brokers);
  cleanups.push(() => consumer.close());
  return { db, kafka, consumer, secure: kafka.secure! };
}

async function startRelay(db: TestDatabase, env: Record<string, string>): Promise<{ relay: Component; ctx: FleetContext }> {
  const ctx = openContext(
    loadConfig({
      NODE_ENV: 'test',
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: `relay_${randomSuffix()}`,
      KAFKA_CONNECTION_TIMEOUT_MS: '1000',
      KAFKA_REQUEST_TIMEOUT_MS: '3000',
      OUTBOX_RELAY_POLL_INTERVAL_MS: '50',
      OUTBOX_RELAY_BACKOFF_MIN_MS: '100',
      OUTBOX_RELAY_BACKOFF_MAX_MS: '500',
      ...env,
    }),
    silentLogger(),
  );
  cleanups.push(() => ctx.close());
  const [relay] = outboxRelayComponents(ctx);
  await relay!.start();
  running.push(relay!);
  return { relay: relay!, ctx };
}


const appendOne = (db: TestDatabase, key: number): Promise<EventEnvelope> =>
  db.db.transaction((tx) => appendEvent(tx, { eventType: 'patient.created', key, payload: { patientId: key } }));

describe('outbox relay to a broker listener with TLS and SASL', () => {
  it.each<{ name: string; mechanism: SaslMechanism; tls: boolean; clientCertificate?: boolean }>([
    { name: 'SCRAM-SHA-512 over TLS with a client certificate', mechanism: 'scram-sha-512', tls: true, clientCertificate: true },
    { name: 'SCRAM-SHA-256 without TLS', mechanism: 'scram-sha-256', tls: false },
    { name: 'PLAIN over TLS', mechanism: 'plain', tls: true },
  ])('$name: the event arrives, authenticated', async ({ mechanism, tls, clientCertificate }) => {
    const { db, consumer, secure } = await brokerWith({
      tls: tls ? { cert: certs.serverCert, key: certs.serverKey, clientCa: clientCertificate ? certs.ca : undefined } : undefined,
      sasl: { mechanism, username: 'fleet-relay', password: PASSWORD },
    });
    const env = await appendOne(db, 4711);
    const { relay } = await startRelay(db, {
      KAFKA_BROKERS: secure.brokers.join(','),
      KAFKA_SSL: String(tls),
      KAFKA_SSL_CA_FILE: tls ? certs.caFile : '',
      KAFKA_SSL_CERT_FILE: clientCertificate ? certs.clientCertFile : '',
      KAFKA_SSL_KEY_FILE: clientCertificate ? certs.clientKeyFile : '',
      KAFKA_SASL_MECHANISM: mechanism,
      KAFKA_SASL_USERNAME: 'fleet-relay',
      KAFKA_SASL_PASSWORD: PASSWORD,
    });
    const [msg] = await consumer.waitFor((m) => m.some((x) => x.headers['event-id'] === env.eventId));
    expect(msg).toBeDefined();
    const got = consumer.messages.find((x) => x.headers['event-id'] === env.eventId)!;
    expect(got.key).toBe('4711');
    expect(JSON.parse(got.value!)).toEqual(env);
    await until('row stamped published', async () => (await listOutbox(db.db)).every((r) => r.publishedAt));
    expect(secure.authentications().succeeded).toBeGreaterThan(0);
    expect(secure.authentications().failed).toBe(0);
    expect(await relay.ready!()).toMatchObject({ ok: true });
  });

  it('a wrong password: nothing is published, readiness names the failed authentication (never the password), the event waits; the right password publishes it', async () => {
    const { db, consumer, secure } = await brokerWith({
      tls: { cert: certs.serverCert, key: certs.serverKey },
      sasl: { mechanism: 'scram-sha-512', username: 'fleet-relay', password: PASSWORD },
    });
    const env = await appendOne(db, 815);
    const settings = {
      KAFKA_BROKERS: secure.brokers.join(','),
      KAFKA_SSL: 'true',
      KAFKA_SSL_CA_FILE: certs.caFile,
      KAFKA_SASL_MECHANISM: 'scram-sha-512',
      KAFKA_SASL_USERNAME: 'fleet-relay',
    };
    const wrong = await startRelay(db, { ...settings, KAFKA_SASL_PASSWORD: 'not-the-password-3c1e' });
    const down = await until('readiness to report Kafka down', async () => {
      const r = await wrong.relay.ready!();
      return !r.ok && r.detail?.includes('kafka down') && r;
    });
    expect(down.detail).toMatch(/authentication failed/i);
    expect(down.detail).not.toContain('not-the-password-3c1e');
    expect(secure.authentications().failed).toBeGreaterThan(0);
    expect(secure.authentications().succeeded).toBe(0);
    const [waiting] = await listOutbox(db.db, { unpublishedOnly: true });
    expect(waiting?.eventId).toBe(env.eventId);
    expect(waiting?.lastError ?? '').not.toContain('not-the-password-3c1e');
    expect(consumer.messages.some((m) => m.headers['event-id'] === env.eventId)).toBe(false);
    await wrong.relay.stop(2000);
    running.splice(running.indexOf(wrong.relay), 1);

    await startRelay(db, { ...settings, KAFKA_SASL_PASSWORD: PASSWORD });
    await consumer.waitFor((m) => m.some((x) => x.headers['event-id'] === env.eventId));
    await until('row stamped published', async () => (await listOutbox(db.db, { unpublishedOnly: true })).length === 0);
  });

  it.each([
    { name: 'a broker certificate from a CA the fleet was not given', caFile: false, wantsClientCertificate: false, error: /unable to verify the first certificate/ },
    { name: 'a listener that wants a client certificate the fleet does not have', caFile: true, wantsClientCertificate: true, error: /certificate required/ },
  ])('$name: refused, readiness says Kafka is down, the event waits', async ({ caFile, wantsClientCertificate, error }) => {
    const { db, consumer, secure } = await brokerWith({
      tls: { cert: certs.serverCert, key: certs.serverKey, clientCa: wantsClientCertificate ? certs.ca : undefined },
      sasl: { mechanism: 'scram-sha-256', username: 'fleet-relay', password: PASSWORD },
    });
    const env = await appendOne(db, 99);
    const { relay } = await startRelay(db, {
      KAFKA_BROKERS: secure.brokers.join(','),
      KAFKA_SSL: 'true',
      KAFKA_SSL_CA_FILE: caFile ? certs.caFile : '',
      KAFKA_SASL_MECHANISM: 'scram-sha-256',
      KAFKA_SASL_USERNAME: 'fleet-relay',
      KAFKA_SASL_PASSWORD: PASSWORD,
    });
    const down = await until('readiness to report Kafka down', async () => {
      const r = await relay.ready!();
      return !r.ok && r.detail?.includes('kafka down') && r;
    });
    expect(down.detail).toMatch(error);
    expect(secure.authentications().succeeded).toBe(0);
    expect((await listOutbox(db.db, { unpublishedOnly: true })).map((r) => r.eventId)).toEqual([env.eventId]);
    expect(consumer.messages.some((m) => m.headers['event-id'] === env.eventId)).toBe(false);
  });
});
