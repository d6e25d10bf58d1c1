import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { therapistImportComponents } from '../../workers/therapist-import/index.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';
import { tcpProxy } from '../../libs/testing/tcp-proxy.js';
import { watcherTestEnv } from './watcher-test-config.js';

async function until<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 30_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The watcher's warnings (and the rest at warn and above). */
const lines: Array<{ msg: string }> = [];
const said = (msg: string) => lines.filter((l) => l.msg === msg).length;
const HANDLING_FAILED = 'scraper watcher: handling a file failed; trying again later';
const SEALING_FAILED = 'scraper watcher: sealing a run failed; trying again later';
const STABILITY_MS = 300;
const QUIET_MS = 500;
const LEASE_CHECK_MS = 1_000;

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let cleanupRedis: () => Promise<void>;
let watcher: ScraperWatcher;
let workers: Component[] = [];
const pg = () => proxies.pg;
const redis = () => proxies.redis;
const proxies = {} as { pg: ReturnType<typeof tcpProxy>; redis: ReturnType<typeof tcpProxy> };

beforeAll(async () => {
  db = await createTestDatabase();
  const q = testQueuePrefix();
  cleanupRedis = q.cleanup;
  dir = await mkdtemp(path.join(tmpdir(), 'scraper-outage-'));
  const dbUrl = new URL(db.url);
  const redisUrl = new URL(TEST_REDIS_URL);
  proxies.pg = tcpProxy({ host: dbUrl.hostname, port: Number(dbUrl.port || 5432) });
  proxies.redis = tcpProxy({ host: redisUrl.hostname, port: Number(redisUrl.port || 6379) });
  await pg().open();
  await redis().open();
  dbUrl.host = `127.0.0.1:${pg().port}`;
  redisUrl.host = `127.0.0.1:${redis().port}`;
  ctx = openContext(
    loadConfig(
      {
        ...watcherTestEnv({ databaseUrl: dbUrl.toString(), redisUrl: redisUrl.toString(), queuePrefix: q.prefix, dropDir: dir, stabilityMs: STABILITY_MS, quietMs: QUIET_MS }),
        SCRAPER_LEASE_CHECK_MS: String(LEASE_CHECK_MS),
      },
    ),
    createLogger({ level: 'warn', pretty: 'false' }, { write: (l: string) => void lines.push(JSON.parse(l) as { msg: string }) }),
  );
  workers = therapistImportComponents(ctx);
  for (const w of workers) await w.start();
  watcher = scraperWatcherComponent(ctx);
  await watcher.start();
});

afterAll(async () => {
  await pg()?.open().catch(() => {});
  await redis()?.open().catch(() => {});
  await watcher?.stop(5_000);
  for (const w of workers) await w.stop(5_000);
  await ctx?.close();
  await pg()?.close();
  await redis()?.close();
  await db?.drop();
  await cleanupRedis?.();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function drop(rel: string, plz: string) {
  const abs = path.join(dir, rel);
  await mkdir(path.dirname(abs), { recursive: true });
  await writeFile(abs, scraperFile([therapistLine({ id: `${plz}-1`, first: 'Anna', plz })]));
}

/** The file's tracking row once imported, and its run once closed with its one staff summary. */
async function importedAndReported(rel: string) {
  const file = await until(async () => {
    const [f] = await db.sql`select id, run_id, status from fleet.therapist_import_files where path = ${rel}`;
    return f?.status === 'imported' ? f : null;
  });
  const run = await until(async () => {
    const [r] = await db.sql`select id, state, file_count from fleet.therapist_import_runs where id = ${file.run_id}`;
    return r?.state === 'closed' ? r : null;
  });
  const summaries = await db.sql`select id from fleet.deliveries where idempotency_key = ${`therapist-import.run.${String(run.id)}`}`;
  return { file, run, summaries };
}

describe('scraper watcher: PostgreSQL or Redis away', () => {
  it('a file dropped while PostgreSQL is away is registered and imported once it is back, and its run closes with one summary', async () => {
    const failed = said(HANDLING_FAILED);
    await pg().close();
    await drop('50001.json', '50001');
    // The watcher has tried to register it and failed (a fixed pause let a slower watcher try
    // only once PostgreSQL was back, and the test passed without the retry).
    await until(async () => said(HANDLING_FAILED) > failed);
    await pg().open();
    const { run, summaries } = await importedAndReported('50001.json');
    expect(run.file_count).toBe(1);
    expect(summaries).toHaveLength(1);
  });

  it('a file dropped while Redis is away is enqueued once it is back (its row does not stay queued)', async () => {
    const failed = said(HANDLING_FAILED);
    await redis().close();
    await drop('50002.json', '50002');
    // Registered in PostgreSQL while Redis is away: its enqueue fails (said; a fixed pause let
    // a slower enqueue come after Redis was back).
    await until(async () => (await db.sql`select id from fleet.therapist_import_files where path = '50002.json'`)[0]);
    await until(async () => said(HANDLING_FAILED) > failed);
    await redis().open();
    const { run, summaries } = await importedAndReported('50002.json');
    expect(run.file_count).toBe(1);
    expect(summaries).toHaveLength(1);
  });

  it('a file whose retries failed through a long outage is registered as soon as the watcher takes its lease again, not at the end of its grown retry delay', async () => {
    await pg().close();
    await drop('50004.json', '50004');
    // Away ~16 s: the file's retries (1 s, doubling) have failed at ~1, 3, 7 and 15 s; the next
    // is due ~31 s after the drop, ~15 s after PostgreSQL is back (in an outage drill: 24 s).
    await sleep(16_000);
    await pg().open();
    const back = Date.now();
    await until(async () => (await db.sql`select id from fleet.therapist_import_files where path = '50004.json'`)[0], 20_000);
    // The lease check (every LEASE_CHECK_MS) finds the session lost and takes the lease again:
    // the waiting file is retried then, after the pool's reconnect (at most ~4 s).
    expect(Date.now() - back).toBeLessThan(LEASE_CHECK_MS + 6_000);
    const { run, summaries } = await importedAndReported('50004.json');
    expect(run.file_count).toBe(1);
    expect(summaries).toHaveLength(1);
  }, 60_000);

  it('a run whose seal fails while PostgreSQL is away is sealed and closed once it is back', async () => {
    await drop('50003.json', '50003');
    const file = await until(async () => {
      const [f] = await db.sql`select id, run_id, status from fleet.therapist_import_files where path = '50003.json'`;
      return f?.status === 'imported' ? f : null;
    });
    const failed = said(SEALING_FAILED);
    await pg().close();
    await until(async () => said(SEALING_FAILED) > failed); // the quiet time passes: the seal fails
    await pg().open();
    const run = await until(async () => {
      const [r] = await db.sql`select id, state from fleet.therapist_import_runs where id = ${file.run_id}`;
      return r?.state === 'closed' ? r : null;
    });
    expect(await db.sql`select id from fleet.deliveries where idempotency_key = ${`therapist-import.run.${String(run.id)}`}`).toHaveLength(1);
    expect(watcher.currentRunId()).toBeNull();
  });
});
