import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../libs/log/index.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { tcpProxy } from '../../libs/testing/tcp-proxy.js';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const FILES = 6;

let h: Awaited<ReturnType<typeof startWatcherHarness>>;
let watcher: ScraperWatcher;
let redis: ReturnType<typeof tcpProxy>;
const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];

beforeAll(async () => {
  const redisUrl = new URL(TEST_REDIS_URL);
  redis = tcpProxy({ host: redisUrl.hostname, port: Number(redisUrl.port || 6379) });
  await redis.open();
  redisUrl.host = `127.0.0.1:${redis.port}`;
  const log = createLogger({ level: 'info', pretty: 'false' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  h = await startWatcherHarness('scraper-retry-log', { redisUrl: redisUrl.toString(), log });
  watcher = scraperWatcherComponent(h.ctx);
  await watcher.start();
});

afterAll(async () => {
  await redis?.open().catch(() => {});
  await watcher?.stop(5_000);
  await h?.close();
  await redis?.close();
});

describe('scraper watcher: files waiting through a Redis outage', () => {
  // Found in a Redis drill: each retry of the files waiting for Redis logged one warn line with
  // a stack per file (10 files: 90 lines in 3 minutes; a drop of 400 files: 400 lines every 30 s).
  it('logs each file’s first failure once and then one line per retry round, not one per file; and enqueues them all as soon as Redis is back', async () => {
    const drop = (plz: string) => writeFile(path.join(h.dir, `${plz}.json`), scraperFile([therapistLine({ id: `${plz}-1`, first: 'Anna', plz })]));
    const imported = async () => (await h.db.sql`select count(*)::int as n from fleet.therapist_import_files where status = 'imported'`)[0]!.n as number;
    // One file imported and its run closed while Redis is there: the queues are in use when
    // Redis goes away (a queue first used while Redis is away waits for it instead of failing).
    await drop('50999');
    await until('the first file imported', async () => (await imported()) === 1, 30_000);
    await until('its run closed', async () => (await h.db.sql`select id from fleet.therapist_import_runs where state = 'closed'`)[0], 30_000);
    await redis.close();
    for (let i = 0; i < FILES; i++) await drop(String(51000 + i));
    // Registered in PostgreSQL, their enqueue failing.
    await until('the files dropped while Redis is away registered', async () => (await h.db.sql`select count(*)::int as n from fleet.therapist_import_files where status = 'queued'`)[0]!.n === FILES, 30_000);
    // Retries at ~1, 3, 7 and 15 s after the first failure; the next one would be due ~16 s later.
    await sleep(16_000);
    const first = lines.filter((l) => l.msg === 'scraper watcher: handling a file failed; trying again later');
    const rounds = lines.filter((l) => l.msg === 'scraper watcher: handling waiting files failed again; trying again later');
    expect(first).toHaveLength(FILES);
    expect(rounds.length).toBeGreaterThanOrEqual(3);
    expect(rounds.length).toBeLessThanOrEqual(5);
    for (const r of rounds) expect(r).toMatchObject({ level: 40, failed: FILES, waiting: FILES, err: expect.objectContaining({ message: expect.any(String) }) });

    await redis.open();
    const back = Date.now();
    await until('every file imported once Redis is back', async () => (await imported()) === FILES + 1, 30_000);
    // Retried as soon as the producer connection is ready again (at most ~2.5 s), not at the end
    // of the grown retry delay (found in a Redis drill: files waited 29 s after Redis was back).
    expect(Date.now() - back).toBeLessThan(8_000);
  }, 60_000);
});
