import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { therapistImportComponents } from '../../workers/therapist-import/worker.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';
import { watcherTestEnv } from './watcher-test-config.js';

/**
 * A restart does not read again the files it hashed before: the catch-up knows them by path and
 * stat key (size, modification and change times, inode). A file rewritten in place, even with
 * the same size and its modification time set back, has a new change time and is read.
 */

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let cleanupRedis: () => Promise<void>;
let workers: Component[] = [];
let watcher: ScraperWatcher | null = null;

const HOUR_AGO = () => new Date(Date.now() - 3600_000);
const content = (plz: string, phone: string) => scraperFile([therapistLine({ id: `${plz}-1`, first: `Vorname${plz}`, plz, phone })], { scrape_id: plz });
async function drop(rel: string, phone = '0241 1'): Promise<void> {
  const abs = path.join(dir, rel);
  await mkdir(path.dirname(abs), { recursive: true });
  await writeFile(abs, content(path.basename(rel, '.json'), phone));
  await utimes(abs, HOUR_AGO(), HOUR_AGO());
}
const rows = async () => db.sql<Array<{ path: string; status: string; content_hash: string }>>`select path, status, content_hash from fleet.therapist_import_files order by id`;
async function restart(): Promise<ScraperWatcher> {
  await watcher?.stop(5_000);
  watcher = scraperWatcherComponent(ctx);
  await watcher.start();
  await watcher.caughtUp();
  return watcher;
}

describe('scraper watcher restart: files hashed before are known by their stat key', () => {
  beforeAll(async () => {
    db = await createTestDatabase();
    const q = testQueuePrefix();
    cleanupRedis = q.cleanup;
    dir = await mkdtemp(path.join(tmpdir(), 'scraper-restart-'));
    ctx = openContext(
      loadConfig(watcherTestEnv({ databaseUrl: db.url, redisUrl: TEST_REDIS_URL, queuePrefix: q.prefix, dropDir: dir, stabilityMs: 300 })),
      createLogger({ level: 'silent', pretty: 'false' }),
    );
    workers = therapistImportComponents(ctx);
    for (const w of workers) await w.start();
  });

  afterAll(async () => {
    await watcher?.stop(5_000);
    for (const w of workers) await w.stop(5_000);
    await ctx?.close();
    await db?.drop();
    await cleanupRedis?.();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reads each file once; a restart reads none; a file rewritten with the same size and modification time is read and imported', async () => {
    await drop('20250701/45001.json');
    await drop('20250701/45002.json');
    await drop('20250624/45001.json'); // superseded by the newer week: a skipped row, known too
    await drop('45003.json');
    const first = await restart();
    expect(first.catchUpStats()).toEqual({ files: 4, read: 4, knownByStat: 0 });
    await until('imported', async () => ((await rows()).filter((r) => r.status === 'imported').length === 3) || undefined);

    const second = await restart();
    expect(second.catchUpStats()).toEqual({ files: 4, read: 0, knownByStat: 4 });
    const before = await rows();
    expect(before.map((r) => [r.path, r.status])).toEqual(
      expect.arrayContaining([
        ['20250701/45001.json', 'imported'],
        ['20250701/45002.json', 'imported'],
        ['20250624/45001.json', 'skipped'],
        ['45003.json', 'imported'],
      ]),
    );
    expect(before).toHaveLength(4);

    // Rewritten in place: another phone number of the same length, the modification time set back.
    const abs = path.join(dir, '20250701/45002.json');
    const old = await stat(abs);
    const rewritten = content('45002', '0241 2');
    expect(Buffer.byteLength(rewritten)).toBe((await readFile(abs)).length);
    await writeFile(abs, rewritten);
    await utimes(abs, old.atime, old.mtime);
    expect((await stat(abs)).mtimeMs).toBe(old.mtimeMs);

    const third = await restart();
    expect(third.catchUpStats()).toEqual({ files: 4, read: 1, knownByStat: 3 });
    await until('the new content imported', async () => ((await rows()).filter((r) => r.path === '20250701/45002.json' && r.status === 'imported').length === 2) || undefined);
    const [t] = await db.sql<Array<{ telefon: string }>>`select telefon from therapist_service.therapeuten where plz = '45002'`;
    expect(t!.telefon).toBe('0241 2');
  });
});
