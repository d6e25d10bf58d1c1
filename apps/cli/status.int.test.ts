import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCK_KEYS, leaseHolder } from '../../libs/db/lease.js';
import type { DailyReport } from '../../libs/ops/daily.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { createTestQueues } from '../../libs/testing/queues.js';
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
      expect(status.stdout).toMatch(/patient-import\s+1\s+0/);
      // No relay publishes: the status says why, by what this environment says of Kafka.
      expect(status.stdout).toContain('\noutbox relay: none publishing: Kafka is not configured (KAFKA_BROKERS is empty in this environment): a relay without it stays idle, and events wait in the outbox until it is set\n');
      const withKafka = await runCli(['status'], { ...env, KAFKA_BROKERS: '127.0.0.1:9092' });
      expect(withKafka.stdout).toContain('\noutbox relay: none publishing: no process with the outbox-relay role reaches PostgreSQL (DATABASE_URL); events wait in the outbox until one does\n');
    } finally {
      await t.close();
    }
  });
});
