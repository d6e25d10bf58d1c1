import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendEvent } from '../../libs/events/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { startKafkaMock, type KafkaMock } from '../../libs/testing/kafka-mock.js';
import { closedPort, silentServer } from '../../libs/testing/ports.js';
import { runCli } from './run-cli.js';

let db: TestDatabase;
let kafka: KafkaMock;

function fleet(env: Record<string, string>, ...args: string[]) {
  return runCli(args, { DATABASE_URL: db.url, LOG_LEVEL: 'warn', KAFKA_BROKERS: '', ...env });
}

beforeAll(async () => {
  db = await createTestDatabase();
  // A broker without the event topics: `events setup` has to create them.
  kafka = await startKafkaMock({ topics: ['unrelated'] });
});

afterAll(async () => {
  await kafka?.close();
  await db?.drop();
});

describe('fleet events', () => {
  // Each test starts the real CLI process (a few seconds each on a busy machine).
  it('list and stats show what waits in the outbox (Kafka not configured)', { timeout: 90_000 }, async () => {
    const env = await db.db.transaction(async (tx) => {
      await appendEvent(tx, { eventType: 'therapist.created', key: 17, payload: { therapistId: 17 } });
      return appendEvent(tx, { eventType: 'patient.created', key: 42, payload: { patientId: 42 } });
    });
    await db.sql`update fleet.outbox set published_at = now() where key = '17'`;

    const list = await fleet({}, 'events', 'list', '--unpublished');
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(env.eventId);
    expect(list.stdout).toContain('patient.created');
    expect(list.stdout).not.toContain('therapist.created');

    const stats = await fleet({}, 'events', 'stats', '--json');
    expect(JSON.parse(stats.stdout)).toMatchObject({ kafkaBrokers: null, unpublished: 1, published: 1, failing: 0, oldestLastError: null });

    // Why the oldest waiting event has not gone out, in full (the list cuts errors short).
    const why = 'no topic patient-events on Kafka (create it: fleet events setup)';
    await db.sql`update fleet.outbox set attempts = 3, last_error = ${why} where key = '42'`;
    const text = await fleet({}, 'events', 'stats');
    expect(text.stdout).toContain(`oldest failed:     ${why}`);

    // A parked event says so (it waits for an operator, not for Kafka).
    await db.sql`update fleet.outbox set parked_at = now(), park_reason = 'message too large' where key = '42'`;
    const parked = await fleet({}, 'events', 'list', '--unpublished');
    const line = parked.stdout.split('\n').find((l) => l.includes(env.eventId));
    expect(line).toMatch(/\bPARKED\b/);

    // An empty --topic ("$TOPIC" unset in a script) names no topic: refused, not read as every topic.
    const empty = await fleet({}, 'events', 'retry-parked', '--all', '--topic', '', '--reason', 'size limit raised');
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain('unknown topic ""; topics: ');
    const [still] = await db.sql`select id, parked_at from fleet.outbox where key = '42'`;
    expect(still!.parked_at).not.toBeNull();

    // fleet events parked shows the event id first (what retry-parked takes); the outbox row
    // number (the id of fleet events list) is taken too.
    const shown = await fleet({}, 'events', 'parked');
    expect(shown.stdout.split('\n')[0]).toMatch(/^event id\s+type\s+topic/);
    expect(shown.stdout.split('\n')[1]!.startsWith(env.eventId)).toBe(true);
    const none = await fleet({}, 'events', 'retry-parked', '999999', '--reason', 'size limit raised');
    expect({ code: none.code, stderr: none.stderr }).toEqual({ code: 3, stderr: 'fleet: no parked event in outbox row 999999 (fleet events parked lists them)\n' });
    const byRow = await fleet({}, 'events', 'retry-parked', String(still!.id), '--reason', 'size limit raised', '--json');
    expect({ code: byRow.code, out: JSON.parse(byRow.stdout) }).toEqual({ code: 0, out: { retried: 1 } });
    const [back] = await db.sql`select parked_at from fleet.outbox where key = '42'`;
    expect(back!.parked_at).toBeNull();
  });

  it('setup says clearly that a broker without CreateTopics (the mock) cannot create the topics', { timeout: 90_000 }, async () => {
    const mock = await fleet({ KAFKA_BROKERS: kafka.brokers.join(',') }, 'events', 'setup', '--partitions', '3', '--replication-factor', '1');
    expect(mock.code).toBe(1);
    expect(mock.stderr).toMatch(/does not implement CreateTopics .*create the topics patient-events, therapist-events, import-events on the broker itself/);
  });

  it('setup against a Kafka it cannot reach fails with exit 1 naming KAFKA_BROKERS: refused at once, silent after OUTBOX_RELAY_KAFKA_TIMEOUT_MS', { timeout: 90_000 }, async () => {
    // A broker that takes the connection and never answers (hung, a network that drops packets):
    // kafkajs's own timeouts held the command ~30 s and it then said only "Broker not connected".
    const silent = await silentServer();
    const silentPort = silent.port;
    const refusing = await closedPort();
    try {
      const [refused, hung] = await Promise.all([
        fleet({ KAFKA_BROKERS: `127.0.0.1:${refusing}` }, 'events', 'setup'),
        (async () => {
          const started = Date.now();
          const r = await fleet({ KAFKA_BROKERS: `127.0.0.1:${silentPort}`, OUTBOX_RELAY_KAFKA_TIMEOUT_MS: '2000' }, 'events', 'setup');
          return { ...r, ms: Date.now() - started };
        })(),
      ]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe(`fleet: kafka not reachable at 127.0.0.1:${refusing} (KAFKA_BROKERS): Connection error: connect ECONNREFUSED 127.0.0.1:${refusing}\n`);
      expect(hung.code).toBe(1);
      expect(hung.stderr).toBe(`fleet: kafka not reachable at 127.0.0.1:${silentPort} (KAFKA_BROKERS): no answer within 2000 ms (connect)\n`);
      // Ended by its own limit (2 s after a start of a few seconds), not by kafkajs's 30 s.
      expect(hung.ms).toBeLessThan(25_000);
    } finally {
      await silent.close();
    }
  });

  it('setup leaves topics that exist alone', { timeout: 90_000 }, async () => {
    const full = await startKafkaMock();
    try {
      const r = await fleet({ KAFKA_BROKERS: full.brokers.join(',') }, 'events', 'setup', '--json');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([
        { topic: 'patient-events', outcome: 'exists' },
        { topic: 'therapist-events', outcome: 'exists' },
        { topic: 'import-events', outcome: 'exists' },
      ]);
    } finally {
      await full.close();
    }
  });
});
