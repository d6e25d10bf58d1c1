import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';

/**
 * What a therapist import integration test needs: a database and a queue prefix of its own, a
 * drop folder, and a fleet context on them (`env`: more configuration). `close()` removes all of it.
 */
export async function startTherapistImportHarness(
  name: string,
  env: Record<string, string> = {},
): Promise<{ db: TestDatabase; ctx: FleetContext; dir: string; close(): Promise<void> }> {
  const db = await createTestDatabase();
  const q = testQueuePrefix();
  const dir = await mkdtemp(path.join(tmpdir(), `${name}-`));
  const ctx = openContext(loadConfig({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, SCRAPER_DROP_DIR: dir, LOG_LEVEL: 'silent', DASHBOARD_URL: 'https://fleet.example/', ...env }), silentLogger());
  return {
    db,
    ctx,
    dir,
    async close() {
      await ctx.close();
      await db.drop();
      await q.cleanup();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
