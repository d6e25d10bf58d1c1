import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { startEmailHarness, type EmailHarness, type EmailHarnessOptions } from './int-harness.js';

/**
 * The setup of an email integration test file: one database for the file (its deliveries
 * cleared before each test) and, per test, a harness on a queue prefix of its own, closed after
 * the test. `database()` is there from the file's first `beforeAll` on; `defaultEnv` is each
 * harness's environment unless the test overrides it.
 */
export function emailTestFile(defaultEnv: Record<string, string>, defaults: Partial<EmailHarnessOptions> = {}) {
  let database: TestDatabase | undefined;
  let h: EmailHarness | undefined;
  let cleanup: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });
  beforeEach(async () => {
    await database!.sql`delete from fleet.deliveries`;
  });
  afterEach(async () => {
    await h?.close();
    await cleanup?.();
    h = undefined;
    cleanup = undefined;
  });
  return {
    database: () => database!,
    async harness(o: Partial<EmailHarnessOptions> = {}): Promise<EmailHarness> {
      const q = testQueuePrefix();
      cleanup = q.cleanup;
      h = await startEmailHarness({ databaseUrl: database!.url, queuePrefix: q.prefix, ...defaults, ...o, env: { ...defaultEnv, ...o.env } });
      return h;
    },
  };
}
