import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../libs/log/index.js';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { startWatcherHarness } from './int-harness.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';

const SEEN_AGAIN = 'scraper file seen again with the content of an earlier file: not imported again';
const SKIPPED_AGAIN = 'scraper file seen again: skipped before, not reported again';

let h: Awaited<ReturnType<typeof startWatcherHarness>>;
let watcher: ScraperWatcher;
const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
const raw: string[] = [];

beforeAll(async () => {
  const log = createLogger({ level: 'info', pretty: 'false' }, { write: (l: string) => void (raw.push(l), lines.push(JSON.parse(l))) });
  h = await startWatcherHarness('scraper-seen-again', { log });
  watcher = scraperWatcherComponent(h.ctx);
  await watcher.start();
});

afterAll(async () => {
  await watcher?.stop(5_000);
  await h?.close();
});

describe('scraper watcher: the same file dropped again', () => {
  // An operator dropped a file again (identical bytes) and found no record, no run and no log
  // line: nothing told whether the watcher had seen it.
  it('leaves no record or run but logs at info, by path and the earlier record, that it saw it; a restart does not log every kept file', async () => {
    const content = scraperFile([therapistLine({ id: 'z1', first: 'Zelda', last: 'Quist', plz: '52074' })]);
    const file = path.join(h.dir, '52074.json');
    await writeFile(file, content);
    const [imported] = await until('imported', async () => {
      const rows = await h.db.sql<Array<{ id: number }>>`select id::int from fleet.therapist_import_files where status = 'imported'`;
      return rows.length ? rows : undefined;
    }, 30_000);
    await until('its run closed', async () => (await h.db.sql`select id from fleet.therapist_import_runs where state = 'closed'`)[0], 30_000);
    const counts = async () => (await h.db.sql<Array<{ files: number; runs: number }>>`select (select count(*)::int from fleet.therapist_import_files) as files, (select count(*)::int from fleet.therapist_import_runs) as runs`)[0]!;
    const before = await counts();

    await writeFile(file, content);
    const seen = await until('seen again', async () => lines.find((l) => l.msg === SEEN_AGAIN), 15_000);
    expect(seen).toMatchObject({ level: 30, path: '52074.json', earlierFileId: imported!.id, earlierStatus: 'imported' });

    // A copy under another name gets its "same content" row once; dropped again, it is logged naming that row.
    await mkdir(path.join(h.dir, 'urgent'));
    await writeFile(path.join(h.dir, 'urgent', '52074.json'), content);
    const [copy] = await until('the copy recorded', async () => {
      const rows = await h.db.sql<Array<{ id: number }>>`select id::int from fleet.therapist_import_files where path = 'urgent/52074.json'`;
      return rows.length ? rows : undefined;
    }, 15_000);
    await writeFile(path.join(h.dir, 'urgent', '52074.json'), content);
    const skippedAgain = await until('the copy seen again', async () => lines.find((l) => l.msg === SKIPPED_AGAIN), 15_000);
    expect(skippedAgain).toMatchObject({ level: 30, path: 'urgent/52074.json', earlierFileId: copy!.id, contentFileId: imported!.id, skipped: 'same-content' });

    // A misfit name may be a person's: seen again, it is named by its record only.
    await writeFile(path.join(h.dir, 'Zelda Quist.json'), '{}');
    const [misfit] = await until('the misfit recorded', async () => {
      const rows = await h.db.sql<Array<{ id: number }>>`select id::int from fleet.therapist_import_files where path = 'Zelda Quist.json'`;
      return rows.length ? rows : undefined;
    }, 15_000);
    await writeFile(path.join(h.dir, 'Zelda Quist.json'), '{ }');
    const misfitAgain = await until('the misfit seen again', async () => lines.find((l) => l.msg === SKIPPED_AGAIN && l.skipped === 'misfit'), 15_000);
    expect(misfitAgain).toMatchObject({ earlierFileId: misfit!.id });
    expect(misfitAgain).not.toHaveProperty('path');
    await until('runs closed', async () => (await h.db.sql`select id from fleet.therapist_import_runs where state <> 'closed'`).length === 0, 15_000);

    // The file dropped again made no record and no run (the copy and the misfit one each).
    expect(await counts()).toEqual({ files: before.files + 2, runs: before.runs + 2 });
    expect(raw.join('')).not.toMatch(/Zelda Quist\.json|Quist/);

    // A restart's catch-up finds every kept file again: it does not log each one.
    const logged = lines.filter((l) => l.msg === SEEN_AGAIN || l.msg === SKIPPED_AGAIN).length;
    await watcher.stop(5_000);
    watcher = scraperWatcherComponent(h.ctx);
    await watcher.start();
    await until('caught up', async () => lines.filter((l) => l.msg === 'scraper folder caught up').length === 2, 15_000);
    expect(lines.filter((l) => l.msg === SEEN_AGAIN || l.msg === SKIPPED_AGAIN)).toHaveLength(logged);
  }, 90_000);
});
