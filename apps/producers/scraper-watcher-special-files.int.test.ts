import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

let h: Awaited<ReturnType<typeof startWatcherHarness>>;
let watcher: ScraperWatcher;

const files = () => h.db.sql<Array<{ path: string; status: string; reason: string | null }>>`select path, status, reason from fleet.therapist_import_files order by path`;

beforeAll(async () => {
  h = await startWatcherHarness('scraper-special');
  watcher = scraperWatcherComponent(h.ctx);
  await watcher.start();
  await watcher.caughtUp();
});

afterAll(async () => {
  await watcher?.stop(5_000);
  await h?.close();
});

describe('scraper watcher and files that are not regular files', () => {
  it('skips a FIFO and a link to a device with a fitting name, and imports the files dropped after them', async () => {
    // A named pipe no one writes to: reading it would wait for ever.
    execFileSync('mkfifo', [path.join(h.dir, '44000.json')]);
    // A link to an endless device: reading it would fill the memory.
    await symlink('/dev/zero', path.join(h.dir, '44001.json'));
    // The watcher has handled both (a fixed pause let a slower watcher meet them after the
    // regular file, which then proved nothing about not being stuck on them).
    await until('both special files recorded', async () => ((await files()).filter((f) => f.path === '44000.json' || f.path === '44001.json').length === 2 ? true : undefined), 10_000);
    await writeFile(path.join(h.dir, '44002.json'), scraperFile([therapistLine({ id: '44002-0', first: 'Anna', plz: '44002' })]));
    const rows = await until('the regular file imported', async () => {
      const r = await files();
      return r.some((f) => f.path === '44002.json' && f.status === 'imported') ? r : undefined;
    }, 10_000);
    const special = rows.filter((f) => f.path !== '44002.json');
    expect(special.map((f) => [f.path, f.status])).toEqual([
      ['44000.json', 'skipped'],
      ['44001.json', 'skipped'],
    ]);
    for (const f of special) expect(f.reason).toContain('not a regular file');
  });

  it('does not follow a link back up the tree live, as the start-up scan does not: a file dropped beside it is recorded once', async () => {
    // chokidar follows links to folders: `loop -> .` made it report every file dropped after it
    // again under loop/, loop/loop/, ... (tens of levels), each a "name does not fit" row in the
    // run's staff summary.
    await symlink('.', path.join(h.dir, 'loop'));
    await symlink('..', path.join(h.dir, 'urgent-back'));
    await new Promise((r) => setTimeout(r, 1_000));
    await writeFile(path.join(h.dir, '44010.json'), scraperFile([therapistLine({ id: '44010-0', first: 'Anna', plz: '44010' })]));
    await until('the file imported', async () => ((await files()).some((f) => f.path === '44010.json' && f.status === 'imported') ? true : undefined), 10_000);
    // Time for chokidar to walk into the links and report what it finds there.
    await new Promise((r) => setTimeout(r, 2_000));
    await watcher.idle();
    const rows = (await files()).filter((f) => !f.path.startsWith('4400'));
    expect(rows.map((f) => [f.path, f.status])).toEqual([['44010.json', 'imported']]);

    // Nor does the start-up scan go up through `urgent-back -> ..` over the folders beside the drop folder.
    const beside = await mkdtemp(path.join(path.dirname(h.dir), 'scraper-beside-'));
    try {
      await writeFile(path.join(beside, '44011.json'), scraperFile([therapistLine({ id: '44011-0', first: 'Berta', plz: '44011' })]));
      await watcher.stop(5_000);
      await watcher.start();
      await watcher.caughtUp();
      await watcher.idle();
      expect((await files()).filter((f) => !f.path.startsWith('4400')).map((f) => f.path)).toEqual(['44010.json']);
    } finally {
      await rm(beside, { recursive: true, force: true });
    }
  });
});
