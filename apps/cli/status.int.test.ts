import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCK_KEYS, leaseHolder } from '../../libs/db/lease.js';
import { localTimeWithOffset, type DailyReport } from '../../libs/ops/daily.js';
import { recordOutboxRelayStatus, type OutboxRelayRecord } from '../../libs/queues/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { createTestQueues, workerHoldingItsJob } from '../../libs/testing/queues.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { runCli } from './run-cli.js';

let db: TestDatabase;
let redis: Redis;

beforeAll(async () => {
  db = await createTestDatabase();
  redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
});
afterAll(async () => {
  redis?.disconnect();
  await db?.drop();
});

/** Every key under a queue prefix (as BullMQ writes it: in braces). */
async function keysUnder(prefix: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `{${prefix}}*`, 'COUNT', 1000);
    cursor = next;
    found.push(...keys);
  } while (cursor !== '0');
  return found;
}

describe('read-only commands under a queue prefix no fleet uses (a terminal without QUEUE_PREFIX)', () => {
  it('write nothing to Redis: no queue meta keys appear under the prefix', { timeout: 90_000 }, async () => {
    const q = testQueuePrefix();
    try {
      const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' };
      for (const args of [['status'], ['status', '--json'], ['daily'], ['dlq', 'list']]) {
        await runCli(args, env);
        expect(await keysUnder(q.prefix), args.join(' ')).toEqual([]);
      }
    } finally {
      await q.cleanup();
    }
  });
});

describe('the queue prefix and Redis a command reads, and a warning when no fleet has used them', () => {
  it('status, daily and dlq list name them at the top and in --json; warn on stderr; dlq list exits 1; the fleet of the database is named', { timeout: 120_000 }, async () => {
    const q = testQueuePrefix();
    const env = { DATABASE_URL: db.url, REDIS_URL: `${TEST_REDIS_URL}/0`, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' };
    const where = `queue prefix "${q.prefix}" on redis 127.0.0.1:6379/0`;
    const warning = `fleet: warning: no fleet has used ${where}: is QUEUE_PREFIX (and REDIS_URL) the one the fleet runs with?`;
    // A scraper watcher of a fleet holds its lease on this database: a fleet runs, with another prefix.
    const watcher = leaseHolder(db, LOCK_KEYS.scraperWatcher, 'scraper-watcher');
    try {
      expect(await watcher.acquire()).not.toBeNull();

      const status = await runCli(['status'], env);
      expect(status.code).toBe(0);
      expect(status.stdout.startsWith(`${where} (QUEUE_PREFIX, REDIS_URL)\n\nqueue `)).toBe(true);
      expect(status.stderr).toContain(warning);
      expect(status.stderr).toContain('Yet the database (DATABASE_URL) shows a fleet: curavani-fleet:scraper-watcher watches the scraper folder: it runs with another QUEUE_PREFIX or REDIS_URL');
      // Not "is one running?" for every schedule: none is expected under a prefix no fleet uses.
      expect(status.stdout).toContain('  bucket-poll: NOT REGISTERED under this queue prefix (no fleet has used it: see the warning)\n');
      expect(status.stdout).not.toContain('is one running?');
      expect(JSON.parse((await runCli(['status', '--json'], env)).stdout)).toMatchObject({ source: { queuePrefix: q.prefix, redis: '127.0.0.1:6379/0', fleetSeen: false }, queues: expect.any(Array) });

      // "no dead letters" here is no all-clear: exit 1, so a script does not take it for one.
      const dlq = await runCli(['dlq', 'list'], env);
      expect(dlq.code).toBe(1);
      expect(dlq.stdout).toBe(`${where} (QUEUE_PREFIX, REDIS_URL)\n\nno dead letters\n`);
      expect(dlq.stderr).toContain(warning);
      const dlqJson = await runCli(['dlq', 'list', '--json'], env);
      expect(dlqJson.code).toBe(1);
      expect(JSON.parse(dlqJson.stdout)).toEqual({ source: { queuePrefix: q.prefix, redis: '127.0.0.1:6379/0', fleetSeen: false }, deadLetters: [] });

      const daily = await runCli(['daily'], env);
      expect(daily.code).toBe(0);
      expect(daily.stdout.split('\n')[1]).toBe(`${where} (QUEUE_PREFIX, REDIS_URL)`);
      expect(daily.stderr).toContain(warning);
      expect(daily.stdout).not.toContain('Else start one');
      const report = JSON.parse((await runCli(['daily', '--json'], env)).stdout) as DailyReport;
      expect(report.source).toEqual({ queuePrefix: q.prefix, redis: '127.0.0.1:6379/0', fleetSeen: false });
      expect(report.attention.map((a) => a.key)).toEqual(['queue_prefix_unused']);
    } finally {
      await watcher.close();
      await q.cleanup();
    }
  });

  it('says nothing of the kind once a fleet has used the prefix (a job was added); says why no outbox relay publishes', { timeout: 60_000 }, async () => {
    const t = createTestQueues();
    try {
      await t.queues.enqueue('patient-import', { ledgerId: 7 });
      const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: t.prefix, LOG_LEVEL: 'silent' };
      const dlq = await runCli(['dlq', 'list'], env);
      expect({ code: dlq.code, stderr: dlq.stderr }).toEqual({ code: 0, stderr: '' });
      const status = await runCli(['status'], env);
      expect(status.stderr).toBe('');
      // workers, waiting, active: a job waits and nothing serves the queue: said, not read as "slow".
      expect(status.stdout).toMatch(/\nqueue\s+workers\s+waiting\s+active\s+delayed/);
      expect(status.stdout).toMatch(/\npatient-import\s+0\s+1\s+0\s/);
      expect(status.stdout).toContain('\nno worker on patient-import: 1 job(s) wait and no process serves the queue: start a process with its role (fleet start --help lists them)\n');
      expect(JSON.parse((await runCli(['status', '--json'], env)).stdout).queues).toContainEqual(expect.objectContaining({ queue: 'patient-import', workers: 0, waiting: 1 }));
      // Emails waiting for a retry after a failed provider request: counted, with the latest error.
      await db.sql`insert into fleet.deliveries (idempotency_key, kind, to_address, from_address, subject, html, text, status, attempts, last_error)
        values ('status-test.1', 'staff', 'a@example.org', 'f@example.org', 's', 'h', 't', 'pending', 2, 'provider request for batch b failed: resend network error: could not connect to 127.0.0.1:3114 (ECONNREFUSED)')`;
      expect((await runCli(['status'], env)).stdout).toMatch(
        /\nemails being retried after a failed provider request: 1; the latest error \([^)]+\): provider request for batch b failed: resend network error: could not connect to 127\.0\.0\.1:3114 \(ECONNREFUSED\)\n/,
      );
      await db.sql`delete from fleet.deliveries where idempotency_key = 'status-test.1'`;
      const w = workerHoldingItsJob(t);
      try {
        await w.running;
        const served = await runCli(['status'], env);
        expect(served.stdout).toMatch(/\npatient-import\s+1\s+0\s+1\s/);
        expect(served.stdout).not.toContain('no worker on');
      } finally {
        w.finish();
        await w.worker.close();
      }
      // No relay publishes: the status says why, from what the fleet records, not from this terminal's KAFKA_BROKERS.
      const noRelay = 'no outbox relay runs (no process with the outbox-relay role holds its lease or recorded itself within a minute): events wait in the outbox until one does';
      expect(status.stdout).toContain(`\noutbox relay: none publishing: ${noRelay}\n`);
      const withKafka = await runCli(['status'], { ...env, KAFKA_BROKERS: '127.0.0.1:9092' });
      expect(withKafka.stdout).toContain(`\noutbox relay: none publishing: ${noRelay}\n`);
    } finally {
      await t.close();
    }
  });
});

describe('Kafka as the fleet sees it, not as the terminal does', () => {
  it('status, daily and events stats read the relay lease and what the relay records: reachable, unreachable since, not configured; a terminal with other KAFKA_BROKERS is warned', { timeout: 120_000 }, async () => {
    const t = createTestQueues();
    const lease = leaseHolder(db, LOCK_KEYS.outboxRelay, 'outbox-relay');
    try {
      await t.queues.enqueue('patient-import', { ledgerId: 7 });
      const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: t.prefix, LOG_LEVEL: 'silent' };
      const relay = (r: Partial<OutboxRelayRecord>) =>
        recordOutboxRelayStatus(t.queues, {
          process: 'curavani-fleet:outbox-relay@host:1',
          role: 'leader',
          brokers: ['kafka-1:9092', 'kafka-2:9092'],
          kafkaUp: true,
          kafkaDownSince: null,
          kafkaError: null,
          missingTopics: [],
          lastPublishedAt: new Date().toISOString(),
          updatedAt: new Date().toISOString(),
          ...r,
        });
      expect(await lease.acquire()).not.toBeNull();
      await relay({});
      const warning = "fleet: warning: this terminal's KAFKA_BROKERS (not set) is not the fleet's (kafka-1:9092,kafka-2:9092, as its outbox relay records): the Kafka state shown is the fleet's; fleet events setup would use this terminal's\n";

      const up = await runCli(['status'], env);
      expect(up.stdout).toMatch(/\noutbox relay publishing: \S+ \(session since [^)]+\)\n {2}Kafka reachable \(brokers kafka-1:9092,kafka-2:9092\): \S+ publishes, last publish \d{4}-\d\d-\d\d \d\d:\d\d \+0[12]:00\n/);
      expect(up.stderr).toBe(warning);
      const same = await runCli(['status'], { ...env, KAFKA_BROKERS: 'kafka-2:9092,kafka-1:9092' });
      expect(same.stderr).toBe('');

      const since = new Date(Date.now() - 20 * 60_000);
      await relay({ kafkaUp: false, kafkaDownSince: since.toISOString(), kafkaError: 'Connection error: connect ECONNREFUSED 10.0.0.5:9092' });
      const down = `Kafka unreachable since ${localTimeWithOffset(since)} (brokers kafka-1:9092,kafka-2:9092): Connection error: connect ECONNREFUSED 10.0.0.5:9092; events wait in the outbox and go out in order once it answers`;
      const status = await runCli(['status'], env);
      expect(status.stdout).toContain(`\n  ${down}\n`);
      const daily = await runCli(['daily'], env);
      expect(daily.stdout).toContain(`\n  - ${down} (0 unpublished) — fleet events stats\n`);
      expect(daily.stdout).not.toContain('not configured');
      expect(daily.stderr).toBe(warning);
      const stats = await runCli(['events', 'stats'], env);
      expect(stats.stdout).toContain(`kafka brokers:       kafka-1:9092,kafka-2:9092\nkafka:               ${down}\n`);
      expect(stats.stderr).toBe(warning);
      expect(JSON.parse((await runCli(['events', 'stats', '--json'], env)).stdout)).toMatchObject({ kafkaBrokers: ['kafka-1:9092', 'kafka-2:9092'], kafka: { state: 'unreachable', since: since.toISOString() } });

      // The fleet's relays run without KAFKA_BROKERS (no lease: a relay without Kafka takes none).
      await lease.close();
      await relay({ role: 'disabled', brokers: null, kafkaUp: null, lastPublishedAt: null });
      const off = await runCli(['status'], { ...env, KAFKA_BROKERS: '127.0.0.1:9092' });
      expect(off.stdout).toContain('\noutbox relay: none publishing: Kafka not configured on the fleet (its outbox relays run with KAFKA_BROKERS empty): events wait in the outbox and are published once it is set\n');
      expect(off.stderr).toBe('');
    } finally {
      await lease.close();
      await t.close();
    }
  });
});
