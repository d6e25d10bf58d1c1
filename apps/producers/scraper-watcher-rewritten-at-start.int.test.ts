import { utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

/**
 * A file the catch-up found settled, overwritten by the scraper before the catch-up reads it
 * (a catch-up of thousands of files takes seconds; a flat `<plz>.json` is overwritten every
 * week). The catch-up read it half written and registered that half as a content of its own:
 * a failed (or skipped) file in the run, besides the whole one.
 */

// The scraper starts overwriting the file just before the catch-up opens it: half of the new
// content now, the rest shortly after.
const rewrite = vi.hoisted(() => ({ next: null as null | { path: string; half: string; rest: string } }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const open = (async (p: Parameters<typeof fs.open>[0], ...rest: unknown[]) => {
    const r = rewrite.next;
    if (r && String(p) === r.path) {
      rewrite.next = null;
      await fs.writeFile(r.path, r.half);
      setTimeout(() => void fs.appendFile(r.path, r.rest), 150);
    }
    return (fs.open as (...a: unknown[]) => Promise<unknown>)(p, ...rest);
  }) as typeof fs.open;
  return { ...fs, open, default: { ...fs, open } };
});

let h: Awaited<ReturnType<typeof startWatcherHarness>>;
let watcher: ScraperWatcher | null = null;

beforeAll(async () => {
  h = await startWatcherHarness('scraper-rewritten-at-start');
});

afterAll(async () => {
  await watcher?.stop(5_000);
  await h?.close();
});

describe('scraper watcher catch-up and a file overwritten while it catches up', () => {
  it('does not register the half-written content; the whole new content is imported once', async () => {
    const abs = path.join(h.dir, '49000.json');
    await writeFile(abs, scraperFile([therapistLine({ id: '49000-1', first: 'Anna', plz: '49000', phone: 'alt' })]));
    const old = new Date(Date.now() - 3600_000);
    await utimes(abs, old, old);
    const next = scraperFile([therapistLine({ id: '49000-1', first: 'Anna', plz: '49000', phone: 'neu' }), therapistLine({ id: '49000-2', first: 'Berta', plz: '49000' })]);
    rewrite.next = { path: abs, half: next.slice(0, next.length / 2), rest: next.slice(next.length / 2) };

    watcher = scraperWatcherComponent(h.ctx);
    await watcher.start();
    await watcher.caughtUp();
    expect(rewrite.next).toBeNull(); // the catch-up opened it
    await until('the new content imported', async () => (await h.db.sql`select 1 from fleet.therapist_import_files where path = '49000.json' and status = 'imported'`)[0]);
    await new Promise((r) => setTimeout(r, 1_000)); // a second event, if any, handled
    await watcher.idle();
    const rows = await h.db.sql<Array<{ status: string; counts: { created: number } | null }>>`select status, counts from fleet.therapist_import_files where path = '49000.json' order by id`;
    expect(rows.map((r) => r.status)).toEqual(['imported']);
    expect(rows[0]!.counts).toMatchObject({ created: 2 });
  });
});
