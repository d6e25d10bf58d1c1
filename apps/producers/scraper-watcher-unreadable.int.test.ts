import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { therapistImportComponents } from '../../workers/therapist-import/index.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';
import { watcherTestEnv } from './watcher-test-config.js';
import { until } from '../../libs/testing/until.js';

// The tests run as root, who reads a chmod 000 file: the fleet's service user would get EACCES.
// Opening or reading `41001.json` fails so, as for that user (the rest of the file system is real).
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const denied = (p: unknown) => Promise.reject(Object.assign(new Error(`EACCES: permission denied, open '${String(p)}'`), { code: 'EACCES' }));
  const readFile = ((p: Parameters<typeof fs.readFile>[0], ...rest: unknown[]) =>
    String(p).endsWith('/41001.json') ? denied(p) : (fs.readFile as (...a: unknown[]) => Promise<unknown>)(p, ...rest)) as typeof fs.readFile;
  const open = ((p: Parameters<typeof fs.open>[0], ...rest: unknown[]) =>
    String(p).endsWith('/41001.json') ? denied(p) : (fs.open as (...a: unknown[]) => Promise<unknown>)(p, ...rest)) as typeof fs.open;
  return { ...fs, readFile, open, default: { ...fs, readFile, open } };
});

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let cleanupRedis: () => Promise<void>;
let watcher: ScraperWatcher;
let workers: Component[] = [];

const lines = (plz: string, n: number) => Array.from({ length: n }, (_, i) => therapistLine({ id: `${plz}-${i}`, first: `Vorname${i}`, plz }));

beforeAll(async () => {
  db = await createTestDatabase();
  const q = testQueuePrefix();
  cleanupRedis = q.cleanup;
  dir = await mkdtemp(path.join(tmpdir(), 'scraper-unreadable-'));
  ctx = openContext(
    loadConfig(watcherTestEnv({ databaseUrl: db.url, redisUrl: TEST_REDIS_URL, queuePrefix: q.prefix, dropDir: dir })),
    createLogger({ level: 'silent', pretty: 'false' }),
  );
  // Dropped while the fleet was down: one file the fleet may not read among others.
  const old = new Date(Date.now() - 3600_000);
  for (const plz of ['41000', '41001', '41002']) {
    await writeFile(path.join(dir, `${plz}.json`), scraperFile(lines(plz, 2)));
    await utimes(path.join(dir, `${plz}.json`), old, old);
  }
  workers = therapistImportComponents(ctx);
  for (const w of workers) await w.start();
  watcher = scraperWatcherComponent(ctx);
  await watcher.start();
});

afterAll(async () => {
  await watcher?.stop(5_000);
  for (const w of workers) await w.stop(5_000);
  await ctx?.close();
  await db?.drop();
  await cleanupRedis?.();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('scraper watcher and a file it cannot read', () => {
  it('imports the other files of the catch-up and reports the unreadable one once, in the run and its staff summary', async () => {
    const rows = await until('the two readable files imported, the unreadable one skipped', async () => {
      const r = await db.sql<Array<{ path: string; status: string; reason: string | null; run_id: string | null }>>`
        select path, status, reason, run_id::text from fleet.therapist_import_files order by path`;
      return r.filter((f) => f.status === 'imported').length === 2 && r.length === 3 ? r : undefined;
    });
    expect(rows.map((r) => [r.path, r.status])).toEqual([
      ['41000.json', 'imported'],
      ['41001.json', 'skipped'],
      ['41002.json', 'imported'],
    ]);
    expect(rows[1]!.reason).toContain('cannot read the file (EACCES)');
    const run = await until('the run closed', async () => {
      const [r] = await db.sql`select state, summary_delivery_id from fleet.therapist_import_runs where id = ${rows[1]!.run_id}`;
      return r?.state === 'closed' ? r : undefined;
    });
    const [d] = await db.sql`select subject, text from fleet.deliveries where id = ${run.summary_delivery_id}`;
    expect(d!.subject).toContain('1 Datei nicht lesbar');
    expect(d!.text).toContain('Nicht lesbar (Zugriffsrechte?), daher nicht importiert: 41001.json.');
    expect(d!.text).not.toContain('Datumsordner');
  });
});
