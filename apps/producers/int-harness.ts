import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../libs/config/index.js';
import { createLogger, type Logger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { therapistImportComponents } from '../../workers/therapist-import/index.js';
import { watcherTestEnv } from './watcher-test-config.js';

/**
 * What a scraper watcher integration test needs: a database, queue prefix and drop folder of its
 * own, a fleet context on them (`watcherTestEnv`, plus `env`) and the therapist import workers,
 * started. The test starts and stops its watchers; `close()` removes all the rest.
 */
export async function startWatcherHarness(
  name: string,
  o: { stabilityMs?: number; quietMs?: number; env?: Record<string, string>; redisUrl?: string; log?: Logger } = {},
): Promise<{ db: TestDatabase; ctx: FleetContext; dir: string; close(): Promise<void> }> {
  const db = await createTestDatabase();
  const q = testQueuePrefix();
  const dir = await mkdtemp(path.join(tmpdir(), `${name}-`));
  const ctx = openContext(
    loadConfig({
      ...watcherTestEnv({ databaseUrl: db.url, redisUrl: o.redisUrl ?? TEST_REDIS_URL, queuePrefix: q.prefix, dropDir: dir, stabilityMs: o.stabilityMs, quietMs: o.quietMs }),
      ...o.env,
    }),
    o.log ?? createLogger({ level: 'silent', pretty: 'false' }),
  );
  const workers: Component[] = therapistImportComponents(ctx);
  for (const w of workers) await w.start();
  return {
    db,
    ctx,
    dir,
    async close() {
      for (const w of workers) await w.stop(5_000);
      await ctx.close();
      await db.drop();
      await q.cleanup();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
