import { mkdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

// The tests run as root, who lists every folder: the fleet's service user may not list a
// `lost+found` of a mounted volume (root's, mode 700). Listing it fails with EACCES, and so does
// a recursive listing of a folder that holds it, as for that user (checked with `setpriv` as
// nobody: `readdir(dir, { recursive: true })` rejects with EACCES naming the subfolder).
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const denied = (p: string) => p.endsWith(`${path.sep}lost+found`);
  const eacces = (p: string) => Object.assign(new Error(`EACCES: permission denied, scandir '${p}'`), { code: 'EACCES', path: p });
  const readdir = (async (p: Parameters<typeof fs.readdir>[0], opts?: { recursive?: boolean; withFileTypes?: boolean }) => {
    if (denied(String(p))) throw eacces(String(p));
    const entries = (await (fs.readdir as (...a: unknown[]) => Promise<unknown[]>)(p, opts)) as Array<string | { name: string; parentPath: string }>;
    const full = (e: string | { name: string; parentPath: string }) => (typeof e === 'string' ? path.join(String(p), e) : path.join(e.parentPath, e.name));
    const hit = opts?.recursive ? entries.map(full).find(denied) : undefined;
    if (hit) throw eacces(hit);
    return entries;
  }) as unknown as typeof fs.readdir;
  return { ...fs, readdir, default: { ...fs, readdir } };
});

let h: Awaited<ReturnType<typeof startWatcherHarness>>;
let watcher: ScraperWatcher | null = null;

const status = async (rel: string) => (await h.db.sql<Array<{ status: string }>>`select status from fleet.therapist_import_files where path = ${rel}`)[0]?.status;

beforeAll(async () => {
  h = await startWatcherHarness('scraper-unreadable-folder');
  // Dropped while the fleet was down, beside a folder the fleet may not list.
  const old = new Date(Date.now() - 3600_000);
  for (const rel of ['lost+found/46000.json', '46001.json', '20250701/46002.json']) {
    const abs = path.join(h.dir, rel);
    await mkdir(path.dirname(abs), { recursive: true });
    const plz = path.basename(rel, '.json');
    await writeFile(abs, scraperFile([therapistLine({ id: `${plz}-1`, first: 'Anna', plz })]));
    await utimes(abs, old, old);
  }
});

afterAll(async () => {
  await watcher?.stop(5_000);
  await h?.close();
});

describe('scraper watcher and a subfolder it cannot list', () => {
  it('starts and catches up on the other files (the folder is left out), then watches', async () => {
    watcher = scraperWatcherComponent(h.ctx);
    await watcher.start();
    await watcher.caughtUp();
    expect(watcher.active()).toBe(true);
    expect(watcher.catchUpStats()).toEqual({ files: 2, read: 2, knownByStat: 0 });
    await until('both files imported', async () => ((await status('46001.json')) === 'imported' && (await status('20250701/46002.json')) === 'imported') || undefined);
    expect(await status('lost+found/46000.json')).toBeUndefined();
  });
});
