import { mkdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

/**
 * Thousands of names that do not fit, found by the catch-up (a scraper that switched to
 * `2025-07-01/` folders, kept for weeks): they were recorded in one statement of ten parameters
 * a file, and past 6,553 files PostgreSQL's limit of 65,534 parameters failed the catch-up, and
 * with it every start.
 */

let h: Awaited<ReturnType<typeof startWatcherHarness>>;
let watcher: ScraperWatcher | null = null;
const MISFITS = 7_000;

beforeAll(async () => {
  h = await startWatcherHarness('scraper-many-misfits');
  const old = new Date(Date.now() - 3600_000);
  for (let week = 0; week < MISFITS / 500; week++) {
    const folder = path.join(h.dir, `2025-${String(1 + Math.floor(week / 4)).padStart(2, '0')}-${String(1 + (week % 4) * 7).padStart(2, '0')}`);
    await mkdir(folder, { recursive: true });
    await Promise.all(
      Array.from({ length: 500 }, async (_, i) => {
        const abs = path.join(folder, `${String(10_000 + i)}.json`);
        await writeFile(abs, '{}');
        await utimes(abs, old, old);
      }),
    );
  }
  const abs = path.join(h.dir, '48000.json');
  await writeFile(abs, scraperFile([therapistLine({ id: '48000-1', first: 'Anna', plz: '48000' })]));
  await utimes(abs, old, old);
});

afterAll(async () => {
  await watcher?.stop(5_000);
  await h?.close();
});

describe('scraper watcher and thousands of misfit names at start', () => {
  it('starts, records each once in the catch-up run, and imports the fitting file', { timeout: 60_000 }, async () => {
    watcher = scraperWatcherComponent(h.ctx);
    await watcher.start();
    await watcher.caughtUp();
    const [r] = await h.db.sql<Array<{ skipped: number; runs: number }>>`
      select count(*) filter (where status = 'skipped')::int as skipped, count(distinct run_id)::int as runs from fleet.therapist_import_files`;
    expect(r).toEqual({ skipped: MISFITS, runs: 1 });
    await until('the fitting file imported', async () => (await h.db.sql`select 1 from fleet.therapist_import_files where path = '48000.json' and status = 'imported'`)[0]);
  });
});
