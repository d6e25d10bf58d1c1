import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { tcpProxy } from '../../libs/testing/tcp-proxy.js';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { scraperWatcherComponent } from './scraper-watcher.js';
import { watcherTestEnv } from './watcher-test-config.js';

/**
 * GET /ready of a watcher that is still starting (its catch-up waits for Redis) said
 * `standing by: another scraper watcher watches the drop folder`, with no other watcher anywhere
 * (found in an outage walkthrough: Redis down at start).
 */

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let cleanupRedis: () => Promise<void>;
const redis = tcpProxy({ host: new URL(TEST_REDIS_URL).hostname, port: Number(new URL(TEST_REDIS_URL).port || 6379) });

beforeAll(async () => {
  db = await createTestDatabase();
  const q = testQueuePrefix();
  cleanupRedis = q.cleanup;
  dir = await mkdtemp(path.join(tmpdir(), 'scraper-starting-'));
  // A port of its own that nothing answers on yet: Redis down at start.
  await redis.open();
  await redis.close();
  const redisUrl = new URL(TEST_REDIS_URL);
  redisUrl.host = `127.0.0.1:${redis.port}`;
  ctx = openContext(loadConfig(watcherTestEnv({ databaseUrl: db.url, redisUrl: redisUrl.toString(), queuePrefix: q.prefix, dropDir: dir })), silentLogger());
});

afterAll(async () => {
  await ctx?.close();
  await redis.close();
  await db?.drop();
  await cleanupRedis?.();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('scraper watcher readiness while it starts', () => {
  it('says it is starting and waits for Redis, not that another watcher watches; then that it watches', { timeout: 30_000 }, async () => {
    // A file dropped while the fleet was down (settled long ago): the catch-up registers and enqueues it.
    const file = path.join(dir, '50001.json');
    await writeFile(file, scraperFile([therapistLine({ id: 't-50001', first: 'Anna', last: 'Adler', plz: '50001' })], { postcode_area: '50001' }));
    const past = new Date(Date.now() - 60_000);
    await utimes(file, past, past);
    const watcher = scraperWatcherComponent(ctx);
    expect(await watcher.ready!()).toEqual({ ok: true, detail: 'not started yet' });
    const started = watcher.start();
    try {
      const detail = await until('the watcher to be catching up', async () => {
        const r = await watcher.ready!();
        return r.detail?.startsWith('starting: catching up') && r.detail;
      }, 10_000);
      expect(detail).toBe('starting: catching up on the drop folder (waiting for Redis)');
      await redis.open();
      await started;
      expect(await watcher.ready!()).toEqual({ ok: true, detail: `watching ${dir}` });
      expect(await ctx.queues.queue('therapist-import').count()).toBe(1);
    } finally {
      await redis.open().catch(() => {}); // open already, or (a failure above) for the start to end
      await started.catch(() => {});
      await watcher.stop(5_000);
    }
    expect(await watcher.ready!()).toEqual({ ok: true, detail: 'stopped' });
  });
});
