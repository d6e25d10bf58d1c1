import { mkdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

const STABILITY_MS = 300;
let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let close: () => Promise<void>;
let watcher: ScraperWatcher | null = null;

const lines = (plz: string) => [therapistLine({ id: `${plz}-1`, first: `Vorname${plz}`, plz })];
const status = async (rel: string) => (await db.sql<Array<{ status: string }>>`select status from fleet.therapist_import_files where path = ${rel}`)[0]?.status;
async function drop(rel: string, opts: { old?: boolean } = {}): Promise<void> {
  const abs = path.join(dir, rel);
  await mkdir(path.dirname(abs), { recursive: true });
  // Each file its own content (its scrape id): the same bytes twice would be "same content".
  await writeFile(abs, scraperFile(lines(path.basename(rel, '.json')), { scrape_id: rel }));
  if (opts.old) await utimes(abs, new Date(Date.now() - 3600_000), new Date(Date.now() - 3600_000));
}
async function startWatcher(): Promise<ScraperWatcher> {
  watcher = scraperWatcherComponent(ctx);
  await watcher.start();
  await watcher.caughtUp();
  return watcher;
}
/** Long enough for a watched file to have settled and been registered. */
async function settled(): Promise<void> {
  await new Promise((r) => setTimeout(r, STABILITY_MS * 6));
  await watcher!.idle();
}

describe.each([false, true])('scraper watcher (polling: %s): date folders older than SCRAPER_WATCH_DAYS', (polling) => {
  beforeAll(async () => {
    ({ db, ctx, dir, close } = await startWatcherHarness('scraper-history', { stabilityMs: STABILITY_MS, env: { SCRAPER_WATCH_DAYS: '10', SCRAPER_USE_POLLING: String(polling) } }));
  });

  afterAll(async () => {
    await watcher?.stop(5_000);
    watcher = null;
    await close?.();
  });

  it('are caught up at start but not watched live; a newer folder leaves the older ones behind; the next start imports what they got', async () => {
    // Dropped while the fleet was down: a folder 30 days older than the newest, and the newest.
    await drop('20250601/44000.json', { old: true });
    await drop('20250701/44001.json', { old: true });
    await startWatcher();
    await until('both caught up and imported', async () => ((await status('20250601/44000.json')) === 'imported' && (await status('20250701/44001.json')) === 'imported') || undefined);

    // Live: the newest folder is watched, the history folder is not.
    await drop('20250701/44002.json');
    await drop('20250601/44003.json');
    await until('the watched folder\'s new file imported', async () => ((await status('20250701/44002.json')) === 'imported') || undefined);
    await settled();
    expect(await status('20250601/44003.json')).toBeUndefined();

    // A newer folder 19 days on: 20250701 is history now and no longer watched.
    await drop('20250720/44004.json');
    await until('the new folder\'s file imported', async () => ((await status('20250720/44004.json')) === 'imported') || undefined);
    await drop('20250701/44005.json');
    await drop('20250720/44006.json');
    await until('the newest folder still watched', async () => ((await status('20250720/44006.json')) === 'imported') || undefined);
    await settled();
    expect(await status('20250701/44005.json')).toBeUndefined();
    // A folder dated in the future (a wrong clock) is watched, but does not make the others history.
    await drop('29991231/44010.json');
    await until('the future folder watched', async () => ((await status('29991231/44010.json')) === 'imported') || undefined);
    await drop('20250720/44011.json');
    await until('the newest real folder still watched', async () => ((await status('20250720/44011.json')) === 'imported') || undefined);
    // ... and it supersedes nothing: the next real week of its postcode is imported.
    await drop('20250727/44010.json');
    await until('the real week handled', async () => {
      const st = await status('20250727/44010.json');
      return (st !== undefined && st !== 'queued' && st !== 'importing') || undefined;
    });
    const [row] = await db.sql<Array<{ reason: string | null }>>`select reason from fleet.therapist_import_files where path = '20250727/44010.json'`;
    expect([await status('20250727/44010.json'), row!.reason]).toEqual(['imported', null]);
    // urgent/ and the folder's own files are always watched.
    await drop('urgent/44007.json');
    await drop('44008.json');
    await until('urgent and flat files imported', async () => ((await status('urgent/44007.json')) === 'imported' && (await status('44008.json')) === 'imported') || undefined);

    // The next start reads every folder: what the history folders got is imported (nothing lost).
    await watcher!.stop(5_000);
    watcher = null;
    await startWatcher();
    await until('the history folders\' new files imported at start', async () => ((await status('20250601/44003.json')) === 'imported' && (await status('20250701/44005.json')) === 'imported') || undefined);
  });
});
