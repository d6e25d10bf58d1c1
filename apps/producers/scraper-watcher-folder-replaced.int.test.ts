import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

/**
 * The drop folder removed while watched (a clean-up `rm -rf var/scraper`, a volume remounted):
 * chokidar keeps watching the folder that is gone, so files dropped into the new one were not
 * imported until the next start, while /ready said `watching`.
 */

let h: Awaited<ReturnType<typeof startWatcherHarness>>;
let watcher: ScraperWatcher | null = null;

const file = async (rel: string) =>
  (await h.db.sql<Array<{ status: string; run_id: string | null }>>`select status, run_id::text from fleet.therapist_import_files where path = ${rel}`)[0];
const drop = (rel: string) => writeFile(path.join(h.dir, rel), scraperFile([therapistLine({ id: `${rel}-1`, first: 'Anna', plz: path.basename(rel, '.json') })]));
const imported = (rel: string) => until(`${rel} imported`, async () => ((await file(rel))?.status === 'imported' ? file(rel) : undefined), 15_000);

beforeAll(async () => {
  h = await startWatcherHarness('scraper-folder-replaced', { env: { SCRAPER_LEASE_CHECK_MS: '200' } });
  watcher = scraperWatcherComponent(h.ctx);
  await watcher.start();
  await watcher.caughtUp();
});

afterAll(async () => {
  await watcher?.stop(5_000);
  await h?.close();
});

describe('scraper watcher and a drop folder removed while watched', () => {
  it('watches the folder made again: a file dropped into it is imported, and its run closes with one summary', async () => {
    await drop('47000.json');
    await imported('47000.json');

    await rm(h.dir, { recursive: true });
    await mkdir(h.dir);
    await drop('47001.json');
    const row = await imported('47001.json');
    const run = await until('its run closed', async () => {
      const [r] = await h.db.sql`select state, summary_delivery_id from fleet.therapist_import_runs where id = ${row!.run_id}`;
      return r?.state === 'closed' ? r : undefined;
    });
    expect(run.summary_delivery_id).not.toBeNull();

    // Removed and not made again: the watcher makes it, as at start, and watches it.
    await rm(h.dir, { recursive: true });
    await until('the folder made again', async () => stat(h.dir).then(() => true, () => undefined));
    await drop('47002.json');
    await imported('47002.json');
    expect(watcher!.active()).toBe(true);
  });
});
