import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { IMPORT_LOCK_PREFIX } from '../../libs/db/repositories/therapist-import-session.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { killTestEnv, spawnFleetProcess, type FleetProcess } from './fixtures/spawn-fleet.js';

/**
 * The therapist import under a real SIGKILL: a fleet process (fixtures/fleet-process.ts, roles
 * `scraper-watcher,therapist-import,email`, as `fleet start --only ...`) catches up a drop of
 * FILES postcode files, is killed at a chosen moment, and a second process finishes. The moment
 * is made, not hoped for: the test holds the advisory lock of one file's postcode (the import
 * takes it after claiming the file), or the run's row (the closer locks it after the last
 * commit). Afterwards every therapist exists once, with one `therapist.created` event, every
 * file is imported once, and each run closes with exactly one staff summary.
 */

const FILES = 30;
const PER_FILE = 20;
const THERAPISTS = FILES * PER_FILE;

const postcodeOf = (f: number) => String(10000 + f * 223);

interface Setup {
  db: TestDatabase;
  /** For the queues' counts. */
  ctx: FleetContext;
  env: Record<string, string>;
  outboxDir: string;
}

const cleanups: Array<() => Promise<void>> = [];
const children: ChildProcess[] = [];

afterAll(async () => {
  // a failed assertion must not leave a fleet process behind
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

/** Its own database, queue prefix, drop folder (FILES files, written an hour ago) and mail outbox. */
async function setup(): Promise<Setup> {
  const db = await createTestDatabase();
  const q = testQueuePrefix();
  const root = await mkdtemp(path.join(tmpdir(), 'fleet-therapist-kill-'));
  cleanups.push(() => db.drop(), q.cleanup, () => rm(root, { recursive: true, force: true }));
  const dropDir = path.join(root, 'scraper');
  const outboxDir = path.join(root, 'outbox');
  const anHourAgo = new Date(Date.now() - 3600_000);
  for (let f = 0; f < FILES; f++) {
    const plz = postcodeOf(f);
    const lines = Array.from({ length: PER_FILE }, (_, j) => therapistLine({ id: `p${j}`, first: `Vorname${j}`, last: `Nachname${f}-${j}`, plz, phone: `0${plz} ${j}` }));
    const abs = path.join(dropDir, '20250702', `${plz}.json`);
    await mkdir(path.dirname(abs), { recursive: true });
    await writeFile(abs, scraperFile(lines, { postcode_area: `${plz.slice(0, 2)}XXX` }));
    await utimes(abs, anHourAgo, anHourAgo);
  }
  const env = {
    ...killTestEnv({ databaseUrl: db.url, queuePrefix: q.prefix }),
    RETRY_BACKOFF_SCALE: '0.01',
    SCRAPER_DROP_DIR: dropDir,
    SCRAPER_STABILITY_MS: '200',
    SCRAPER_POLL_INTERVAL_MS: '50',
    SCRAPER_RUN_QUIET_MS: '300',
    MAIL_DRIVER: 'outbox',
    MAIL_OUTBOX_DIR: outboxDir,
    FIXTURE_ROLES: 'scraper-watcher,therapist-import,email',
  };
  const ctx = openContext(loadConfig(env), silentLogger());
  cleanups.push(() => ctx.close());
  return { db, ctx, env, outboxDir };
}

function start(s: Setup): FleetProcess {
  const p = spawnFleetProcess(s.env);
  children.push(p.child);
  return p;
}

async function fileStatuses(s: Setup): Promise<Record<string, number>> {
  const rows = await s.db.sql<Array<{ status: string; n: number }>>`select status, count(*)::int as n from fleet.therapist_import_files group by status`;
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

/** Backends of this database waiting for a lock of the given kind (`advisory`, `transactionid`, `tuple`). */
async function waitingOn(s: Setup, kinds: string[]): Promise<number> {
  const [r] = await s.db.sql<Array<{ n: number }>>`
    select count(*)::int as n from pg_stat_activity where datname = ${s.db.name} and wait_event_type = 'Lock' and wait_event = any(${kinds})`;
  return r!.n;
}

async function runs(s: Setup) {
  return s.db.sql<Array<{ id: string; state: string; created: number | null }>>`
    select id::text, state, (counts->>'created')::int as created from fleet.therapist_import_runs order by id`;
}

async function summaries(s: Setup) {
  return s.db.sql<Array<{ idempotency_key: string; status: string }>>`
    select idempotency_key, status from fleet.deliveries where idempotency_key like 'therapist-import.run.%' order by idempotency_key`;
}

/** Jobs of the import queue not finished yet (a killed process's active job counts until it is done). */
async function importJobsLeft(s: Setup): Promise<number> {
  const c = await s.ctx.queues.queue('therapist-import').getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'failed');
  return Object.values(c).reduce((a, b) => a + b, 0);
}

/**
 * Waits until every run is closed and its summary sent, and the killed process's jobs were taken
 * over and finished, then stops the process as an operator would.
 */
async function finish(s: Setup, p: FleetProcess): Promise<void> {
  await p.started;
  await until(
    'every run closed, its summary sent and the import queue idle',
    async () => {
      const r = await runs(s);
      const sent = (await summaries(s)).filter((d) => d.status === 'sent');
      return r.length > 0 && r.every((x) => x.state === 'closed') && sent.length === r.length && (await importJobsLeft(s)) === 0;
    },
    40_000,
    100,
  ).catch(async (err: Error) => {
    throw new Error(
      `${err.message}: files ${JSON.stringify(await fileStatuses(s))}, runs ${JSON.stringify(await runs(s))}, import jobs left ${await importJobsLeft(s)}; process output (end): ${p.output().slice(-3000)}`,
    );
  });
  p.child.kill('SIGTERM');
  expect((await p.exited).code).toBe(0);
}

/** Every file imported once, every therapist once with one event, each run closed with one summary. */
async function expectImportedOnce(s: Setup): Promise<void> {
  const files = await s.db.sql<Array<{ status: string; created: number; total: number }>>`
    select status, (counts->>'created')::int as created, (counts->>'total')::int as total from fleet.therapist_import_files`;
  expect(files).toHaveLength(FILES);
  expect(files.filter((f) => f.status !== 'imported')).toEqual([]);
  expect(files.reduce((n, f) => n + f.created, 0)).toBe(THERAPISTS);
  expect(files.every((f) => f.total === PER_FILE)).toBe(true);

  const [t] = await s.db.sql<Array<{ n: number; people: number }>>`
    select count(*)::int as n, count(distinct (vorname, nachname, plz))::int as people from therapist_service.therapeuten`;
  expect(t).toEqual({ n: THERAPISTS, people: THERAPISTS });
  const [ext] = await s.db.sql<Array<{ n: number; therapists: number }>>`
    select count(*)::int as n, count(distinct therapist_id)::int as therapists from fleet.therapist_external_ids`;
  expect(ext).toEqual({ n: THERAPISTS, therapists: THERAPISTS });
  const [scraped] = await s.db.sql<Array<{ n: number }>>`select count(*)::int as n from fleet.therapist_scraped`;
  expect(scraped!.n).toBe(THERAPISTS);

  const events = await s.db.sql<Array<{ event_type: string; n: number; keys: number }>>`
    select event_type, count(*)::int as n, count(distinct key)::int as keys from fleet.outbox
    where event_type in ('therapist.created', 'therapist.updated', 'therapist_import.completed') group by event_type order by event_type`;
  expect(events).toEqual([
    { event_type: 'therapist.created', n: THERAPISTS, keys: THERAPISTS },
    { event_type: 'therapist_import.completed', n: FILES, keys: FILES },
  ]);

  const r = await runs(s);
  expect(r.every((x) => x.state === 'closed')).toBe(true);
  expect(r.reduce((n, x) => n + (x.created ?? 0), 0)).toBe(THERAPISTS);
  expect((await summaries(s)).map((d) => d.idempotency_key)).toEqual(r.map((x) => `therapist-import.run.${x.id}`));
  // One email per run in the outbox folder, with that run's number in its subject.
  const emls = (await readdir(s.outboxDir)).filter((f) => f.endsWith('.eml') && !f.startsWith('.'));
  const subjects = await Promise.all(emls.map(async (f) => /^Subject: (.*)$/m.exec(await readFile(path.join(s.outboxDir, f), 'utf8'))?.[1] ?? ''));
  expect(subjects.map((x) => /Lauf (\d+)/.exec(x)?.[1]).sort()).toEqual(r.map((x) => x.id).sort());
}

/** The file whose import the test holds: the last one, by its postcode's advisory lock. */
const HELD_PLZ = postcodeOf(FILES - 1);
const heldKey = `plz:${HELD_PLZ}`;

/**
 * Holds the last file's postcode lock and starts a fleet process: it imports every other file,
 * claims the held one (its transaction then waits for the lock) and seals the run (no new file
 * for SCRAPER_RUN_QUIET_MS). `release` lets the held file go.
 */
async function startWithLastFileHeld(s: Setup): Promise<{ first: FleetProcess; runId: string; release(): Promise<void> }> {
  const locker = await s.db.sql.reserve();
  await locker`select pg_advisory_lock(hashtext(${IMPORT_LOCK_PREFIX} || ${heldKey}))`;
  const first = start(s);
  await first.started;
  const runId = await until(
    'the run sealed, all files but the held one imported, the held one waiting for its lock',
    async () => {
      const [r] = await runs(s);
      const st = await fileStatuses(s);
      return r?.state === 'sealed' && st.imported === FILES - 1 && st.importing === 1 && (await waitingOn(s, ['advisory'])) === 1 && r.id;
    },
    30_000,
  ).catch(async (err: Error) => {
    throw new Error(`${err.message}: files ${JSON.stringify(await fileStatuses(s))}, runs ${JSON.stringify(await runs(s))}; process output (end): ${first.output().slice(-3000)}`);
  });
  return {
    first,
    runId,
    async release() {
      await locker`select pg_advisory_unlock(hashtext(${IMPORT_LOCK_PREFIX} || ${heldKey}))`;
      locker.release();
    },
  };
}

async function kill(p: FleetProcess): Promise<void> {
  p.child.kill('SIGKILL');
  expect((await p.exited).signal).toBe('SIGKILL');
}

describe('therapist import: SIGKILL of the fleet process', () => {
  it('killed while a file is claimed and its transaction waits: after a restart that file is imported once, and the run closes with one summary', async () => {
    const s = await setup();
    const { first, release } = await startWithLastFileHeld(s);
    await kill(first);
    await release();

    // The dead process's transaction wrote nothing; its run is not closed and no summary went out.
    const [heldRow] = await s.db.sql<Array<{ status: string; attempts: number }>>`
      select status, attempts from fleet.therapist_import_files where postcode = ${HELD_PLZ}`;
    expect(heldRow).toEqual({ status: 'importing', attempts: 1 });
    expect(await s.db.sql`select 1 from therapist_service.therapeuten where plz = ${HELD_PLZ}`).toHaveLength(0);
    expect((await runs(s)).map((x) => x.state)).toEqual(['sealed']);
    expect(await summaries(s)).toEqual([]);

    await finish(s, start(s));
    await expectImportedOnce(s);
    // The held file was imported by its second attempt, the others by their first.
    const attempts = await s.db.sql<Array<{ postcode: string; attempts: number }>>`
      select postcode, attempts from fleet.therapist_import_files where attempts <> 1`;
    expect(attempts).toEqual([{ postcode: HELD_PLZ, attempts: 2 }]);
  });

  it('killed after the last file committed and before its run closed: a restart closes the run and sends its one summary', async () => {
    const s = await setup();
    const { first, runId, release } = await startWithLastFileHeld(s);
    // Hold the run's row, let the last file go: it commits, and the closer waits for the row.
    const holder = await s.db.sql.reserve();
    await holder`begin`;
    await holder`select id from fleet.therapist_import_runs where id = ${runId} for update`;
    await release();
    await until('the last file committed and the closer waiting for the run row', async () => (await fileStatuses(s)).imported === FILES && (await waitingOn(s, ['transactionid', 'tuple'])) >= 1, 30_000);
    await kill(first);
    await holder`rollback`;
    holder.release();

    // Every file is in, but the run did not close and no summary was queued.
    expect((await runs(s)).map((x) => x.state)).toEqual(['sealed']);
    expect(await summaries(s)).toEqual([]);

    await finish(s, start(s));
    await expectImportedOnce(s);
    expect(await s.db.sql`select 1 from fleet.therapist_import_files where attempts <> 1`).toHaveLength(0);
  });
});
