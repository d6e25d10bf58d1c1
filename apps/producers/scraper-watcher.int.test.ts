import { appendFile, lutimes, mkdir, mkdtemp, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { openContext, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { therapistImportJobId } from '../../libs/queues/index.js';
import { metricValues } from '../../libs/testing/metrics.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { therapistImportComponents } from '../../workers/therapist-import/index.js';
import * as repo from '../../libs/db/repositories/therapist-import.js';
import { classifyDropPath } from './scraper-layout.js';
import { scraperWatcherComponent, type ScraperWatcher } from './scraper-watcher.js';
import { watcherTestEnv } from './watcher-test-config.js';

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let cleanupRedis: () => Promise<void>;
let watcher: ScraperWatcher;
let workers: Component[] = [];
/** Every log line of the fleet in this test file (checked for personal data). */
const logLines: string[] = [];

const STABILITY_MS = 500;

async function until<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 20_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface FileRow {
  id: number;
  path: string;
  status: string;
  reason: string | null;
  run_id: number | null;
  content_hash: string | null;
  counts: { total: number; created: number; updated: number; unchanged: number } | null;
}
const files = (p?: string) =>
  p ? db.sql<FileRow[]>`select * from fleet.therapist_import_files where path = ${p} order by id` : db.sql<FileRow[]>`select * from fleet.therapist_import_files order by id`;

const lines = (plz: string, n: number, extra: Parameters<typeof therapistLine>[0] = {}) =>
  Array.from({ length: n }, (_, i) => therapistLine({ id: `${plz}-${i}`, first: `Vorname${i}`, plz, ...extra }));

async function drop(rel: string, content: string, opts: { ageMs?: number } = {}) {
  const abs = path.join(dir, rel);
  await mkdir(path.dirname(abs), { recursive: true });
  await writeFile(abs, content);
  if (opts.ageMs) {
    const t = new Date(Date.now() - opts.ageMs);
    await utimes(abs, t, t);
  }
}

async function startWatcher() {
  watcher = scraperWatcherComponent(ctx);
  await watcher.start();
}

beforeAll(async () => {
  db = await createTestDatabase();
  const q = testQueuePrefix();
  cleanupRedis = q.cleanup;
  dir = await mkdtemp(path.join(tmpdir(), 'scraper-drop-'));
  ctx = openContext(
    loadConfig(watcherTestEnv({ databaseUrl: db.url, redisUrl: TEST_REDIS_URL, queuePrefix: q.prefix, dropDir: dir, stabilityMs: STABILITY_MS })),
    createLogger(
      { level: 'info', pretty: 'false' },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          logLines.push(chunk.toString());
          cb();
        },
      }),
    ),
  );
  // Files dropped while the fleet was down (older than the stability time).
  const hour = 3600_000;
  await drop('40001.json', scraperFile(lines('40001', 3)), { ageMs: hour });
  await drop('20250701/40002.json', scraperFile(lines('40002', 2)), { ageMs: hour });
  await drop('20250708/40002.json', scraperFile(lines('40002', 2, { phone: 'neuer' })), { ageMs: hour });
  await drop('urgent/40003.json', scraperFile(lines('40003', 1)), { ageMs: hour });
  await drop('readme.txt', 'not a scraper file', { ageMs: hour });
  await drop('.40004.json.tmp', 'temp file of the scraper', { ageMs: hour });
  workers = therapistImportComponents(ctx);
  for (const w of workers) await w.start();
  await startWatcher();
});

afterAll(async () => {
  await watcher?.stop(5_000);
  for (const w of workers) await w.stop(5_000);
  await ctx?.close();
  await db?.drop();
  await cleanupRedis?.();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('scraper layout', () => {
  it('takes flat, dated and urgent names; ignores temp files; reports the rest', () => {
    expect(classifyDropPath('52074.json')).toEqual({ kind: 'import', postcode: '52074', dateFolder: null, urgent: false });
    expect(classifyDropPath('20250702/52074.json')).toEqual({ kind: 'import', postcode: '52074', dateFolder: '20250702', urgent: false });
    expect(classifyDropPath('urgent/52074.json')).toEqual({ kind: 'import', postcode: '52074', dateFolder: null, urgent: true });
    expect(classifyDropPath('.52074.json.swp').kind).toBe('ignore');
    expect(classifyDropPath('52074.json.part').kind).toBe('ignore');
    // A folder filled under a temp name and then renamed into place: its files come with the rename.
    expect(classifyDropPath('20250708.tmp/52074.json').kind).toBe('ignore');
    expect(classifyDropPath('urgent/20250708.partial/52074.json').kind).toBe('ignore');
    expect(classifyDropPath('20250708tmp/52074.json').kind).toBe('misfit');
    expect(classifyDropPath('20251341/52074.json').kind).toBe('misfit');
    expect(classifyDropPath('5207.json').kind).toBe('misfit');
    expect(classifyDropPath('a/b/52074.json').kind).toBe('misfit');
  });
});

describe('scraper watcher', () => {
  it('imports at start the files dropped while the fleet was down: urgent first, newest date folder per postcode, misfits reported once', async () => {
    const rows = await until(async () => {
      const r = await files();
      return r.filter((f) => ['imported', 'partial'].includes(f.status)).length >= 3 ? r : null;
    });
    const by = (p: string) => rows.filter((r) => r.path === p);
    expect(by('40001.json')[0]).toMatchObject({ status: 'imported', counts: expect.objectContaining({ created: 3 }) });
    expect(by('urgent/40003.json')[0]).toMatchObject({ status: 'imported' });
    expect(by('20250708/40002.json')[0]).toMatchObject({ status: 'imported' });
    expect(by('20250701/40002.json')[0]).toMatchObject({ status: 'skipped', reason: expect.stringContaining('superseded by the newer folder 20250708') });
    expect(by('readme.txt')[0]).toMatchObject({ status: 'skipped', reason: expect.stringContaining('does not fit') });
    expect(rows.some((r) => r.path.includes('.tmp'))).toBe(false);
    // The newest folder's data won.
    const phones = await db.sql`select distinct telefon from therapist_service.therapeuten where plz = '40002'`;
    expect(phones.map((p) => p.telefon)).toEqual(['neuer']);
    // urgent was processed first
    const order = await db.sql`select path from fleet.therapist_import_files where status = 'imported' order by started_at`;
    expect(order[0]!.path).toBe('urgent/40003.json');
    // Each job names its file, so the worker read it before claiming it (one claim, one attempt).
    for (const p of ['40001.json', 'urgent/40003.json', '20250708/40002.json']) {
      const [f] = await db.sql<Array<{ id: number; content_hash: string; postcode: string; attempts: number }>>`
        select id::int, content_hash, postcode, attempts from fleet.therapist_import_files where path = ${p} and status = 'imported'`;
      const job = await ctx.queues.queue('therapist-import').getJob(therapistImportJobId(f!.content_hash, f!.id));
      expect(job!.data).toEqual({ fileId: f!.id, file: { path: p, contentHash: f!.content_hash, postcode: f!.postcode } });
      expect(f!.attempts).toBe(1);
    }
    // the catch-up was one run, closed with one staff summary once its files drained
    const runIds = [...new Set(rows.filter((r) => r.run_id !== null).map((r) => r.run_id))];
    expect(runIds).toHaveLength(1);
    const run = await until(async () => {
      const [r] = await db.sql`select state, summary_delivery_id, counts from fleet.therapist_import_runs where id = ${runIds[0]!}`;
      return r?.state === 'closed' ? r : null;
    });
    expect(run.counts).toMatchObject({ total: 6, created: 6 });
    // The skipped files belong to the run too, and its summary tells staff about them.
    expect(by('readme.txt')[0]!.run_id).toBe(runIds[0]);
    expect(by('20250701/40002.json')[0]!.run_id).toBe(runIds[0]);
    const [d] = await db.sql`select subject, text from fleet.deliveries where id = ${run.summary_delivery_id}`;
    expect(d!.subject).toContain(`Lauf ${runIds[0]}`);
    expect(d!.subject).toContain('1 Datei nicht übernommen (Name passt nicht)');
    expect(d!.text).toContain('Nicht übernommen: readme.txt');
    expect(d!.text).toContain('Übersprungen, weil ein neuerer Datumsordner dieselbe Postleitzahl enthält: 20250701/40002.json');
    // Prometheus counts the same files (the skipped ones from the watcher, the rest from the
    // worker). A file is counted when its job ends, after its own run check: the last file's
    // check can close the run while another file's job is still in its check.
    const fileCounts = { imported: 3, partial: 0, failed: 0, skipped: 2 };
    const counted = async () => JSON.stringify(await metricValues(ctx.metrics.registry, 'fleet_therapist_import_files_total', 'status')) === JSON.stringify(fileCounts);
    await until(counted).catch(() => {}); // the assertion below says what is missing
    expect(await metricValues(ctx.metrics.registry, 'fleet_therapist_import_files_total', 'status')).toEqual(fileCounts);
    expect(await metricValues(ctx.metrics.registry, 'fleet_therapist_import_therapists_total', 'outcome')).toEqual({ created: 6, updated: 0, unchanged: 0, deactivated: 0, skipped: 0, failed: 0 });
  });

  /**
   * Writes the postcode's file of 40 therapists in `chunks` parts, a quarter of the stability
   * time apart (`afterFirst` runs once the first part is on disk), checks that nothing was
   * registered before it was complete, and that it was imported once, whole.
   */
  async function writeSlowly(postcode: string, chunks: number, afterFirst?: () => Promise<unknown>) {
    const content = scraperFile(lines(postcode, 40));
    const abs = path.join(dir, `${postcode}.json`);
    const size = Math.ceil(content.length / chunks);
    await writeFile(abs, content.slice(0, size));
    await afterFirst?.();
    for (let i = 1; i < chunks; i++) {
      await new Promise((r) => setTimeout(r, STABILITY_MS / 4));
      expect(await files(`${postcode}.json`)).toHaveLength(0);
      await appendFile(abs, content.slice(i * size, (i + 1) * size));
    }
    const [row] = await until(async () => {
      const r = await files(`${postcode}.json`);
      return r[0] && ['imported', 'partial', 'failed'].includes(r[0].status) ? r : null;
    });
    expect(row).toMatchObject({ status: 'imported', counts: expect.objectContaining({ total: 40, created: 40 }) });
    expect(await files(`${postcode}.json`)).toHaveLength(1);
  }

  it('does not read a half-written file until it is complete', async () => {
    await writeSlowly('40010', 8);
  });

  it('a file still being written when the watcher starts is not read until it is complete', async () => {
    await watcher.stop(5_000);
    await writeSlowly('40011', 6, startWatcher);
  });

  it('the same file dropped twice is imported once; a changed file is imported again and only changed therapists count as updated', async () => {
    const content = scraperFile(lines('40020', 4));
    await drop('40020.json', content);
    await until(async () => (await files('40020.json'))[0]?.status === 'imported');
    // the same content again: rewritten in place and dropped in a date folder
    await drop('40020.json', content);
    await drop('20250801/40020.json', content);
    await new Promise((r) => setTimeout(r, STABILITY_MS * 3));
    await watcher.idle();
    const live = await db.sql`select count(*)::int as n from fleet.therapist_import_files where postcode = '40020' and status <> 'skipped'`;
    expect(live[0]!.n).toBe(1);

    const changed = lines('40020', 4).map((l, i) => (i === 1 ? therapistLine({ id: '40020-1', first: 'Vorname1', plz: '40020', email: 'neu@praxis.de', status: 'modified' }) : { ...l, status: 'unchanged' }));
    await drop('40020.json', scraperFile(changed, { scrape_date: '2025-08-08T00:00:00' }));
    const rows = await until(async () => {
      const r = await files('40020.json');
      return r.length === 2 && r[1]!.status === 'imported' ? r : null;
    });
    expect(rows[1]!.counts).toMatchObject({ total: 4, updated: 1, unchanged: 3, created: 0 });
  });

  it('a copy of an imported file under another name (urgent/, another postcode) is reported once as the same content, not imported again', async () => {
    const content = scraperFile(lines('40025', 2));
    await drop('40025.json', content);
    const [first] = await until(async () => {
      const r = await files('40025.json');
      return r[0]?.status === 'imported' ? r : null;
    });
    await drop('urgent/40025.json', content);
    await drop('40026.json', content);
    // Both rows recorded and attached to their run (two statements), and the watcher done with them.
    await until(async () => {
      const r = [...(await files('urgent/40025.json')), ...(await files('40026.json'))];
      return r.length === 2 && r.every((c) => c.run_id !== null) ? r : null;
    });
    await watcher.idle();
    const copies = [...(await files('urgent/40025.json')), ...(await files('40026.json'))];
    for (const c of copies) {
      expect(c.status).toBe('skipped');
      expect(c.reason).toBe(`same content as 40025.json (file ${first!.id}, imported): a content is imported once`);
      expect(c.run_id).not.toBeNull(); // listed in a run: its page and staff summary say why
    }
    // Reported once: a restart's catch-up finds the copies again and adds nothing.
    await watcher.stop(5_000);
    await startWatcher();
    await watcher.idle();
    expect([...(await files('urgent/40025.json')), ...(await files('40026.json'))]).toHaveLength(2);
    expect(await db.sql`select id from therapist_service.therapeuten where plz = '40025'`).toHaveLength(2);
  });

  it('a file dropped while the watcher was stopped is imported when it starts again; a misfit is reported only once', async () => {
    const skippedBefore = (await metricValues(ctx.metrics.registry, 'fleet_therapist_import_files_total', 'status')).skipped;
    await watcher.stop(5_000);
    await drop('40030.json', scraperFile(lines('40030', 2)), { ageMs: 60_000 });
    await drop('readme.txt', 'changed text', { ageMs: 60_000 });
    await startWatcher();
    const [row] = await until(async () => {
      const r = await files('40030.json');
      return r[0]?.status === 'imported' ? r : null;
    });
    expect(row!.counts).toMatchObject({ created: 2 });
    const readme = await files('readme.txt');
    expect(readme).toHaveLength(1);
    expect((await metricValues(ctx.metrics.registry, 'fleet_therapist_import_files_total', 'status')).skipped).toBe(skippedBefore);
    // reported once: it stays with its first run and is not listed in the new one
    expect(readme[0]!.run_id).not.toBe(row!.run_id);
  });

  it('a restart after two date folders were imported adds no tracking row, no run and no summary email', async () => {
    await drop('20250701/40040.json', scraperFile(lines('40040', 2)));
    await until(async () => (await files('20250701/40040.json'))[0]?.status === 'imported');
    await drop('20250702/40040.json', scraperFile(lines('40040', 2, { phone: 'neuer' })));
    await until(async () => (await files('20250702/40040.json'))[0]?.status === 'imported');
    await until(async () => (await db.sql`select count(*)::int as n from fleet.therapist_import_runs where state <> 'closed'`)[0]!.n === 0);
    const tracked = async () => {
      const [r] = await db.sql`select (select count(*)::int from fleet.therapist_import_files) as files,
        (select count(*)::int from fleet.therapist_import_runs) as runs, (select count(*)::int from fleet.deliveries) as deliveries`;
      return r;
    };
    const before = await tracked();
    for (let restart = 0; restart < 2; restart++) {
      await watcher.stop(5_000);
      await startWatcher();
      // Longer than the stability time and the run quiet time: a run opened now would be sealed and closed.
      await new Promise((r) => setTimeout(r, STABILITY_MS + 300 * 3));
      await watcher.idle();
      expect(watcher.currentRunId()).toBeNull();
      expect(await tracked()).toEqual(before);
    }
    expect((await files('20250701/40040.json')).map((f) => f.status)).toEqual(['imported']);
  });

  it('two date folders appearing together: only the newest is imported, the older one is skipped as superseded', async () => {
    await drop('20250701/40050.json', scraperFile(lines('40050', 2)));
    await new Promise((r) => setTimeout(r, 100));
    await drop('20250702/40050.json', scraperFile(lines('40050', 2, { phone: 'neuer' })));
    const [newer] = await until(async () => {
      const r = await files('20250702/40050.json');
      return r[0] && ['imported', 'partial', 'failed'].includes(r[0].status) ? r : null;
    });
    await watcher.idle();
    expect(newer).toMatchObject({ status: 'imported', counts: expect.objectContaining({ created: 2, updated: 0 }) });
    const older = await files('20250701/40050.json');
    expect(older).toHaveLength(1);
    expect(older[0]).toMatchObject({ status: 'skipped', reason: expect.stringContaining('superseded by the newer folder 20250702/40050.json'), run_id: newer!.run_id });
    const phones = await db.sql`select distinct telefon from therapist_service.therapeuten where plz = '40050'`;
    expect(phones.map((p) => p.telefon)).toEqual(['neuer']);

    // An older folder arriving after the newer one was imported is skipped as well.
    await drop('20250630/40050.json', scraperFile(lines('40050', 2, { phone: 'alt' })));
    const [late] = await until(async () => (await files('20250630/40050.json'))[0] && files('20250630/40050.json'));
    expect(late).toMatchObject({ status: 'skipped', reason: expect.stringContaining('superseded by the newer folder 20250702/40050.json') });
  });

  it('a content that comes back after its first row was skipped as changed is imported (its own job, not the old row\'s)', async () => {
    // 40060.json is registered with content A while the workers are stopped, then rewritten
    // with B before its turn: A's row is skipped as changed, B is imported. Then A comes back.
    for (const w of workers) await w.stop(5_000);
    const a = scraperFile(lines('40060', 2));
    const b = scraperFile(lines('40060', 2, { phone: 'zwischendurch' }));
    await drop('40060.json', a);
    await until(async () => (await files('40060.json'))[0]);
    await drop('40060.json', b);
    await until(async () => (await files('40060.json'))[1]);
    workers = therapistImportComponents(ctx);
    for (const w of workers) await w.start();
    await until(async () => {
      const r = await files('40060.json');
      return r[0]?.status === 'skipped' && r[1]?.status === 'imported';
    });
    await drop('40060.json', a);
    const rows = await until(async () => {
      const r = await files('40060.json');
      return r.length === 3 && ['imported', 'partial', 'failed'].includes(r[2]!.status) ? r : null;
    });
    expect(rows[2]).toMatchObject({ status: 'imported', counts: expect.objectContaining({ total: 2, updated: 2 }) });
    const run = await until(async () => {
      const [r] = await db.sql`select state from fleet.therapist_import_runs where id = ${rows[2]!.run_id}`;
      return r?.state === 'closed' ? r : null;
    });
    expect(run.state).toBe('closed');
  });

  it('a file moved or deleted while it waits: a move is imported from its new place, a deleted content is imported when it is dropped again', async () => {
    for (const w of workers) await w.stop(5_000);
    const moved = scraperFile(lines('40070', 2));
    const deleted = scraperFile(lines('40071', 2));
    await drop('40070.json', moved);
    await drop('40071.json', deleted);
    const [waitingRow] = await until(async () => (await files('40071.json'))[0] && files('40070.json').then((r) => r[0] && r));
    // Staff move the waiting file to urgent/ and delete the other one.
    await mkdir(path.join(dir, 'urgent'), { recursive: true });
    await rename(path.join(dir, '40070.json'), path.join(dir, 'urgent/40070.json'));
    await rm(path.join(dir, '40071.json'));
    // The watcher has followed the move: the waiting row has the new path (a fixed pause let the
    // workers start first, find the file gone, and import its new place as a file of its own).
    await until(async () => (await files('urgent/40070.json'))[0]);
    await watcher.idle();
    expect((await files('urgent/40070.json'))[0]!.id).toBe(waitingRow!.id);
    workers = therapistImportComponents(ctx);
    for (const w of workers) await w.start();
    const [m] = await until(async () => {
      const r = await files('urgent/40070.json');
      return r[0] && ['imported', 'partial', 'failed', 'skipped'].includes(r[0].status) ? r : null;
    });
    expect(m).toMatchObject({ status: 'imported', counts: expect.objectContaining({ created: 2 }) });
    const [d] = await until(async () => {
      const r = await files('40071.json');
      return r[0] && !['queued', 'importing'].includes(r[0].status) ? r : null;
    });
    expect(d).toMatchObject({ status: 'skipped', reason: expect.stringContaining('40071.json was removed before it was imported') });
    // The same content dropped again (restored from a copy) is imported.
    await drop('40071.json', deleted);
    const rows = await until(async () => {
      const r = await files('40071.json');
      return r[1] && ['imported', 'partial', 'failed'].includes(r[1].status) ? r : null;
    });
    expect(rows[1]).toMatchObject({ status: 'imported', counts: expect.objectContaining({ created: 2 }) });
  });

  it('a waiting file moved to urgent/ jumps the queue: its job gets the urgent priority, not only its row', async () => {
    for (const w of workers) await w.stop(5_000);
    await drop('40072.json', scraperFile(lines('40072', 2)));
    const [row] = await until(async () => files('40072.json').then((r) => (r[0] ? r : null)));
    const job = () => ctx.queues.queue('therapist-import').getJob(therapistImportJobId(row!.content_hash!, row!.id));
    expect((await job())?.priority).toBe(10);
    await mkdir(path.join(dir, 'urgent'), { recursive: true });
    await rename(path.join(dir, '40072.json'), path.join(dir, 'urgent/40072.json'));
    await until(async () => (await files('urgent/40072.json'))[0]);
    await watcher.idle();
    expect((await files('urgent/40072.json'))[0]).toMatchObject({ id: row!.id, status: 'queued' });
    expect((await job())?.priority).toBe(1);
    workers = therapistImportComponents(ctx);
    for (const w of workers) await w.start();
    const [m] = await until(async () => {
      const r = await files('urgent/40072.json');
      return r[0] && !['queued', 'importing'].includes(r[0].status) ? r : null;
    });
    expect(m).toMatchObject({ status: 'imported' });
  });

  it('a date folder filled under a temp name and then renamed into place: its files are imported with the rename, nothing is reported before', async () => {
    await drop('20250712.tmp/40880.json', scraperFile(lines('40880', 2)));
    await drop('20250712.tmp/40881.json', scraperFile(lines('40881', 1)));
    await new Promise((r) => setTimeout(r, STABILITY_MS * 3));
    await watcher.idle();
    expect(await db.sql`select path from fleet.therapist_import_files where path like '20250712%'`).toEqual([]);
    await rename(path.join(dir, '20250712.tmp'), path.join(dir, '20250712'));
    const rows = await until(async () => {
      const r = await db.sql<FileRow[]>`select * from fleet.therapist_import_files where path like '20250712%' order by path`;
      return r.length === 2 && r.every((f) => f.status === 'imported') ? r : null;
    });
    expect(rows.map((r) => r.path)).toEqual(['20250712/40880.json', '20250712/40881.json']);
  });

  it('a symlinked file dropped while the watcher was stopped is imported at start, as a live one is', async () => {
    await watcher.stop(5_000);
    const elsewhere = await mkdtemp(path.join(tmpdir(), 'scraper-elsewhere-'));
    await writeFile(path.join(elsewhere, 'data.json'), scraperFile(lines('40090', 2)));
    await symlink(path.join(elsewhere, 'data.json'), path.join(dir, '40090.json'));
    const old = new Date(Date.now() - 60_000);
    await lutimes(path.join(dir, '40090.json'), old, old);
    await utimes(path.join(elsewhere, 'data.json'), old, old);
    await startWatcher();
    const [row] = await until(async () => {
      const r = await files('40090.json');
      return r[0] && ['imported', 'partial', 'failed'].includes(r[0].status) ? r : null;
    });
    expect(row).toMatchObject({ status: 'imported', counts: expect.objectContaining({ created: 2 }) });
    await rm(elsewhere, { recursive: true, force: true });
  });

  it('a symlinked date folder made while the watcher was stopped is caught up at start, and wins over an older folder', async () => {
    await watcher.stop(5_000);
    const old = new Date(Date.now() - 60_000);
    const elsewhere = await mkdtemp(path.join(tmpdir(), 'scraper-elsewhere-'));
    await mkdir(path.join(elsewhere, '20250902'));
    await writeFile(path.join(elsewhere, '20250902/40092.json'), scraperFile(lines('40092', 2, { phone: 'neuer' })));
    await utimes(path.join(elsewhere, '20250902/40092.json'), old, old);
    // A link back up the tree inside it is not followed round and round.
    await symlink(dir, path.join(elsewhere, '20250902/drop'));
    await drop('20250901/40092.json', scraperFile(lines('40092', 2)), { ageMs: 60_000 });
    await symlink(path.join(elsewhere, '20250902'), path.join(dir, '20250902'));
    await startWatcher();
    const [row] = await until(async () => {
      const r = await files('20250902/40092.json');
      return r[0] && ['imported', 'partial', 'failed'].includes(r[0].status) ? r : null;
    });
    expect(row).toMatchObject({ status: 'imported', counts: expect.objectContaining({ created: 2 }) });
    expect((await files('20250901/40092.json'))[0]).toMatchObject({ status: 'skipped', reason: expect.stringContaining('superseded by the newer folder 20250902') });
    await watcher.idle();
    await rm(path.join(dir, '20250902'));
    await rm(elsewhere, { recursive: true, force: true });
  });

  it('a misfit name is logged by its tracking row id, never by its name', async () => {
    await drop('Müller Anna.json', 'a file named after a person');
    await until(async () => (await files('Müller Anna.json'))[0]);
    await watcher.idle();
    const [row] = await files('Müller Anna.json');
    expect(row).toMatchObject({ status: 'skipped' });
    expect(logLines.some((l) => l.includes('Müller') || l.includes('M\\u00fcller'))).toBe(false);
    const logged = logLines.map((l) => JSON.parse(l) as { msg: string; fileId?: number; runId?: number }).find((l) => l.fileId === Number(row!.id));
    expect(logged).toMatchObject({ msg: 'scraper file name does not fit: skipped', runId: Number(row!.run_id) });
  });

  it('a misfit renamed to its right name is linked to the import of its content: replaced since, nothing to do; dropped again with another content it is not reported again', async () => {
    const content = scraperFile(lines('10141', 2));
    await drop('10141_neu.json', content);
    const misfit = await until(async () => (await files('10141_neu.json'))[0]);
    expect(misfit).toMatchObject({ status: 'skipped', content_hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    await watcher.idle();
    await rename(path.join(dir, '10141_neu.json'), path.join(dir, '10141.json'));
    const imported = await until(async () => (await files('10141.json')).find((r) => r.status === 'imported'));
    expect(imported.content_hash).toBe(misfit.content_hash);
    const later = await repo.supersedingFiles(ctx.database.db, [Number(misfit.id)]);
    expect(later.get(Number(misfit.id))).toMatchObject({ id: Number(imported.id), path: '10141.json', status: 'imported' });
    // The misfit name dropped again with another content: reported once, whatever its content.
    await drop('10141_neu.json', 'something else');
    await new Promise((r) => setTimeout(r, STABILITY_MS * 3));
    await watcher.idle();
    expect(await files('10141_neu.json')).toHaveLength(1);
    await rm(path.join(dir, '10141_neu.json'));
    await rm(path.join(dir, '10141.json'));
  });
});
