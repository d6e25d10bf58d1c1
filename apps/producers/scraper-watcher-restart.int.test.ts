import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

/**
 * A restart does not read again the files it hashed before: the catch-up knows them by path and
 * stat key (size, modification and change times, inode). A file rewritten in place, even with
 * the same size and its modification time set back, has a new change time and is read.
 */

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let close: () => Promise<void>;
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
    ({ db, ctx, dir, close } = await startWatcherHarness('scraper-restart'));
  });

  afterAll(async () => {
    await watcher?.stop(5_000);
    await close?.();
  });

  it('reads each file once; a restart reads none; a file rewritten with the same size and modification time is read and imported', async () => {
    await drop('20250701/45001.json');
    await drop('20250701/45002.json');
    await drop('20250624/45001.json'); // the newer week's content: skipped as the same content, known too
    await drop('20250617/45002.json', '0241 9'); // superseded by the newer week: a skipped row, known too
    await drop('45003.json');
    const first = await restart();
    expect(first.catchUpStats()).toEqual({ files: 5, read: 5, knownByStat: 0 });
    await until('imported', async () => ((await rows()).filter((r) => r.status === 'imported').length === 3) || undefined);

    // A restart with nothing new writes no tracking row, not even a no-op insert of the skipped
    // file again (an insert that meets its conflict still takes an id from the sequence).
    const ids = async () => (await db.sql<Array<{ v: string | null }>>`select last_value::text as v from pg_sequences where sequencename = 'therapist_import_files_id_seq'`)[0]!.v;
    const idsBefore = await ids();
    const second = await restart();
    expect(second.catchUpStats()).toEqual({ files: 5, read: 0, knownByStat: 5 });
    expect(await ids()).toBe(idsBefore);
    const before = await rows();
    expect(before.map((r) => [r.path, r.status])).toEqual(
      expect.arrayContaining([
        ['20250701/45001.json', 'imported'],
        ['20250701/45002.json', 'imported'],
        ['20250624/45001.json', 'skipped'],
        ['20250617/45002.json', 'skipped'],
        ['45003.json', 'imported'],
      ]),
    );
    expect(before).toHaveLength(5);

    // Rewritten in place: another phone number of the same length, the modification time set back.
    const abs = path.join(dir, '20250701/45002.json');
    const old = await stat(abs);
    const rewritten = content('45002', '0241 2');
    expect(Buffer.byteLength(rewritten)).toBe((await readFile(abs)).length);
    await writeFile(abs, rewritten);
    await utimes(abs, old.atime, old.mtime);
    expect((await stat(abs)).mtimeMs).toBe(old.mtimeMs);

    const third = await restart();
    expect(third.catchUpStats()).toEqual({ files: 5, read: 1, knownByStat: 4 });
    await until('the new content imported', async () => ((await rows()).filter((r) => r.path === '20250701/45002.json' && r.status === 'imported').length === 2) || undefined);
    const [t] = await db.sql<Array<{ telefon: string }>>`select telefon from therapist_service.therapeuten where plz = '45002'`;
    expect(t!.telefon).toBe('0241 2');
  });
});
