import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
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
import { therapistImportComponents } from '../../workers/therapist-import/index.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';
import { watcherTestEnv } from './watcher-test-config.js';

let db: TestDatabase;
let dir: string;
let queuePrefix: string;
let cleanupRedis: () => Promise<void>;
/** What one "fleet" of a test runs: its context, workers and watcher. */
let running: { ctx: FleetContext; workers: Component[]; watcher: ScraperWatcher } | null = null;

const lines = (plz: string, n: number) => Array.from({ length: n }, (_, i) => therapistLine({ id: `${plz}-${i}`, first: `Vorname${i}`, plz }));

interface FileRow {
  id: number;
  path: string;
  status: string;
  reason: string | null;
  content_hash: string | null;
  size_bytes: number | null;
  run_id: number | null;
}
const files = () => db.sql<FileRow[]>`select id::int, path, status, reason, content_hash, size_bytes::int, run_id::int from fleet.therapist_import_files order by id`;
const sha256 = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');

async function startFleet(maxMb: number): Promise<void> {
  const ctx = openContext(
    loadConfig({ ...watcherTestEnv({ databaseUrl: db.url, redisUrl: TEST_REDIS_URL, queuePrefix, dropDir: dir }), SCRAPER_FILE_MAX_MB: String(maxMb) }),
    createLogger({ level: 'silent', pretty: 'false' }),
  );
  const workers = therapistImportComponents(ctx);
  for (const w of workers) await w.start();
  const watcher = scraperWatcherComponent(ctx);
  await watcher.start();
  await watcher.caughtUp();
  running = { ctx, workers, watcher };
}

async function stopFleet(): Promise<void> {
  if (!running) return;
  await running.watcher.stop(5_000);
  for (const w of running.workers) await w.stop(5_000);
  await running.ctx.close();
  running = null;
}

beforeAll(async () => {
  db = await createTestDatabase();
  const q = testQueuePrefix();
  queuePrefix = q.prefix;
  cleanupRedis = q.cleanup;
  dir = await mkdtemp(path.join(tmpdir(), 'scraper-too-large-'));
  // Dropped while the fleet was down: a normal file and one of 1,400 therapists (~1.2 MB).
  const old = new Date(Date.now() - 3600_000);
  await writeFile(path.join(dir, '43000.json'), scraperFile(lines('43000', 2)));
  await writeFile(path.join(dir, '43001.json'), scraperFile(lines('43001', 1_400)));
  for (const f of ['43000.json', '43001.json']) await utimes(path.join(dir, f), old, old);
});

afterAll(async () => {
  await stopFleet();
  await db?.drop();
  await cleanupRedis?.();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('scraper watcher and a file over SCRAPER_FILE_MAX_MB', () => {
  it('is not read but reported once (catch-up and live drop) with its size, in its run and the staff summary; imported once the limit is raised', async () => {
    await startFleet(1);
    const big = path.join(dir, '43001.json');
    const first = await until('the small file imported, the large one skipped', async () => {
      const r = await files();
      return r.length === 2 && r.some((f) => f.status === 'imported') ? r : undefined;
    });
    expect(first.map((f) => [f.path, f.status])).toEqual(
      expect.arrayContaining([
        ['43000.json', 'imported'],
        ['43001.json', 'skipped'],
      ]),
    );
    const skipped = first.find((f) => f.path === '43001.json')!;
    const size = Buffer.byteLength(await readFile(big));
    expect(size).toBeGreaterThan(1024 * 1024);
    expect(skipped.reason).toBe(
      `too large to import: ${(size / 1024 / 1024).toFixed(1)} MB, more than SCRAPER_FILE_MAX_MB=1 allows (a postcode file is ~0.1 MB); once it is smaller, or the limit is raised and the fleet restarted, it is imported`,
    );
    // Tracked by its content (hashed in chunks), so a different large file is reported again.
    expect(skipped).toMatchObject({ content_hash: await sha256(big), size_bytes: size });

    // A large file dropped while the fleet runs: the same.
    const live = path.join(dir, '43002.json');
    await writeFile(live, scraperFile(lines('43002', 1_400)));
    const dropped = await until('the live drop skipped', async () => (await files()).find((f) => f.path === '43002.json'));
    expect(dropped).toMatchObject({ status: 'skipped', content_hash: await sha256(live) });
    expect(dropped.reason).toMatch(/^too large to import: 1\.2 MB, more than SCRAPER_FILE_MAX_MB=1 allows/);

    const run = await until('the catch-up run closed', async () => {
      const [r] = await db.sql<Array<{ state: string; summary_delivery_id: string | null }>>`select state, summary_delivery_id from fleet.therapist_import_runs where id = ${skipped.run_id}`;
      return r?.state === 'closed' ? r : undefined;
    });
    const [mail] = await db.sql<Array<{ subject: string; text: string }>>`select subject, text from fleet.deliveries where id = ${run.summary_delivery_id}`;
    expect(mail!.subject).toContain('1 Datei zu groß');
    expect(mail!.text).toContain('Zu groß, daher nicht gelesen: 43001.json (1,2 MB), mehr als SCRAPER_FILE_MAX_MB erlaubt.');
    expect(mail!.text).not.toContain('ohne Fehler');

    // A restart with the same limit reports nothing again: no new row, no new run.
    await until('the live drop\'s run closed', async () => ((await db.sql`select 1 from fleet.therapist_import_runs where state <> 'closed'`).length === 0 ? true : undefined));
    await stopFleet();
    const runsBefore = await db.sql`select id from fleet.therapist_import_runs`;
    await startFleet(1);
    expect(await files()).toHaveLength(3);
    expect(await db.sql`select id from fleet.therapist_import_runs`).toHaveLength(runsBefore.length);
    await stopFleet();

    // The limit raised: both are imported at the next start, in full.
    await startFleet(2);
    const after = await until('both large files imported', async () => {
      const r = await files();
      const imported = r.filter((f) => f.status === 'imported').map((f) => f.path);
      return imported.includes('43001.json') && imported.includes('43002.json') ? r : undefined;
    });
    expect(after.filter((f) => f.status === 'imported').map((f) => f.path).sort()).toEqual(['43000.json', '43001.json', '43002.json']);
    const [n] = await db.sql<Array<{ n: number }>>`select count(*)::int as n from therapist_service.therapeuten where plz in ('43001', '43002')`;
    expect(n!.n).toBe(2_800);
  });
});
