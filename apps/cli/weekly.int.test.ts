import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { runCli } from './run-cli.js';

let db: TestDatabase;
let q: ReturnType<typeof testQueuePrefix>;

beforeAll(async () => {
  db = await createTestDatabase();
  q = testQueuePrefix();
});

afterAll(async () => {
  await db?.drop();
  await q?.cleanup();
});

describe('fleet weekly schedule --register', () => {
  it('registers the job scheduler from a fresh CLI process', { timeout: 60_000 }, async () => {
    // The scheduler's lock was the command's first Redis call, sent while the connection (no
    // offline queue) was still connecting: "Stream isn't writeable and enableOfflineQueue options is false".
    const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' };
    const r = await runCli(['weekly', 'schedule', '--register'], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('registered: created');
    expect(r.stdout).toContain('job scheduler weekly-status-emails: 0 9 * * 1 Europe/Berlin');
    const again = await runCli(['weekly', 'schedule', '--register'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('registered: unchanged');
  });
});
