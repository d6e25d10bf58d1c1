import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
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
