import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { writeDurably } from './file-keeper.js';
import { fileBytes, objectNameFor, plainRegistration } from './fixtures.js';
import { PREFIX, startImportHarness, until, type ImportHarness } from './int-harness.js';
import { patientImportDeadLetterHook } from './dead-letters.js';
import { runRetention } from './run-retention.js';
import { retentionHandlers } from './worker.js';

const DAY = 86_400_000;

let database: TestDatabase;
let h: ImportHarness;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  database = await createTestDatabase();
  const q = testQueuePrefix();
  cleanups.push(q.cleanup);
  h = await startImportHarness({ databaseUrl: database.url, queuePrefix: q.prefix, env: { BACKUP_RETENTION_DAYS: '30', FAILED_RETENTION_DAYS: '90' } });
  await h.startWorkers();
});

afterAll(async () => {
  await h?.close();
  for (const c of cleanups.reverse()) await c();
  await database?.drop();
});

type Row = Record<string, unknown>;
const ledger = async (id: number) => (await database.sql`select * from fleet.patient_import_ledger where id = ${id}`)[0] as Row;
const daysAgo = (d: number) => new Date(Date.now() - d * DAY);

/** Another process's context on the same database, queues and folders (with its own settings). */
function otherProcess(env: Record<string, string> = {}): FleetContext {
  const ctx = openContext(loadConfig({ ...h.env, ...env }), silentLogger());
  cleanups.push(() => ctx.close());
  return ctx;
}

/**
 * A ledger row in a given state with real copies in the harness's folders, as the import leaves
 * them (`<id>-<name>`). Source `file`: the poller never offers these rows to the import workers.
 */
async function craft(o: { status: string; finishedDaysAgo?: number | null; backup?: boolean; failed?: boolean; discarded?: boolean }) {
  const name = `Muster_Max_20250101_${randomBytes(4).toString('hex')}.json`;
  const finishedAt = o.finishedDaysAgo === undefined || o.finishedDaysAgo === null ? null : daysAgo(o.finishedDaysAgo).toISOString();
  const [r] = await database.sql`
    insert into fleet.patient_import_ledger (source, bucket, object_name, generation, source_uri, status, finished_at, discarded_at, updated_at)
    values ('file', '(local file)', ${name}, ${randomBytes(8).toString('hex')}, ${`file:///tmp/${name}`}, ${o.status}, ${finishedAt}::timestamptz,
            ${o.status === 'discarded' ? finishedAt : null}::timestamptz, coalesce(${finishedAt}::timestamptz, now()))
    returning id`;
  const id = Number(r!.id);
  const bytes = Buffer.from(`{"ledger":${id}}`);
  const backupPath = o.backup === false ? null : await writeDurably(h.backupDir, `${id}-${name}`, bytes);
  const failedPath = o.failed ? await writeDurably(h.failedDir, `${id}-${name}`, bytes) : null;
  await database.sql`update fleet.patient_import_ledger set backup_path = ${backupPath}, failed_path = ${failedPath} where id = ${id}`;
  return { id, backupPath, failedPath };
}

/** Every removal recorded so far is set aside, so each test sees only its own rows. */
async function settleEarlierRows() {
  await database.sql`update fleet.patient_import_ledger set backup_removed_at = coalesce(backup_removed_at, now()), failed_removed_at = coalesce(failed_removed_at, now())`;
}

describe('retention of the local copies of registration files', () => {
  it('the import records when a row became final; past BACKUP_RETENTION_DAYS its durable copy is removed and recorded', async () => {
    const reg = plainRegistration();
    const name = objectNameFor(reg, PREFIX);
    h.put(name, fileBytes(reg));
    await h.poll();
    const imported = await until(async () => {
      const [r] = await database.sql`select * from fleet.patient_import_ledger where object_name = ${name}`;
      return r?.status === 'deleted' ? (r as Row) : undefined;
    }, 20_000, 'imported and deleted');
    expect(imported.finished_at).toEqual(imported.deleted_at);
    expect(existsSync(imported.backup_path as string)).toBe(true);

    // A failed file keeps its finish open until an operator discards it.
    const bad = `${PREFIX}anmeldung-final.json`;
    h.put(bad, fileBytes(plainRegistration()));
    await h.poll();
    const failed = await until(async () => {
      const [r] = await database.sql`select * from fleet.patient_import_ledger where object_name = ${bad}`;
      return r?.status === 'failed' ? (r as Row) : undefined;
    }, 20_000, 'failed');
    expect(failed.finished_at).toBeNull();
    await patientImportDeadLetterHook.onDiscard!({ ledgerId: Number(failed.id) }, database.db);
    const discarded = await ledger(Number(failed.id));
    expect(discarded).toMatchObject({ status: 'discarded' });
    expect(discarded.finished_at).toEqual(discarded.discarded_at);

    // Recent: nothing to do yet.
    expect((await runRetention(h.ctx)).backup).toMatchObject({ removed: 0, alreadyGone: 0 });
    expect(existsSync(imported.backup_path as string)).toBe(true);

    await database.sql`update fleet.patient_import_ledger set finished_at = finished_at - interval '31 days' where id = ${imported.id as number}`;
    const r = await runRetention(h.ctx);
    expect(r.backup).toMatchObject({ retentionDays: 30, removed: 1, alreadyGone: 0, notInFolder: 0, failed: 0 });
    expect(existsSync(imported.backup_path as string)).toBe(false);
    const after = await ledger(Number(imported.id));
    expect(after.backup_removed_at).toBeTruthy();
    expect(after.backup_path).toBe(imported.backup_path); // kept as history
    expect(new Date(after.finished_at as string).getTime()).toBe(new Date(imported.finished_at as string).getTime() - 31 * DAY);
    // The discarded row (finished just now) keeps both copies.
    expect(existsSync(discarded.backup_path as string)).toBe(true);
    expect(existsSync(discarded.failed_path as string)).toBe(true);
    const metrics = await h.ctx.metrics.registry.getSingleMetricAsString('fleet_patient_import_copies_removed_total');
    expect(metrics).toContain('fleet_patient_import_copies_removed_total{folder="backup"} 1');
  });

  it('removes only copies of final rows past their retention; open, failed and recent rows keep theirs; a second run does nothing', async () => {
    await settleEarlierRows();
    const removedBackup = [
      await craft({ status: 'deleted', finishedDaysAgo: 31 }),
      await craft({ status: 'superseded', finishedDaysAgo: 45 }),
      await craft({ status: 'done', finishedDaysAgo: 31 }),
      await craft({ status: 'replaced', finishedDaysAgo: 31 }),
    ];
    // Imported after a requeue: both copies, each after its own retention.
    const requeuedOld = await craft({ status: 'deleted', finishedDaysAgo: 91, failed: true });
    const requeuedMid = await craft({ status: 'deleted', finishedDaysAgo: 60, failed: true });
    const discardedOld = await craft({ status: 'discarded', finishedDaysAgo: 91, failed: true });
    const discardedMid = await craft({ status: 'discarded', finishedDaysAgo: 60, failed: true });
    // A row finished before finished_at existed: its discard time counts.
    const legacy = await craft({ status: 'discarded', finishedDaysAgo: 100, failed: true });
    await database.sql`update fleet.patient_import_ledger set finished_at = null where id = ${legacy.id}`;
    const gone = await craft({ status: 'deleted', finishedDaysAgo: 40 });
    await rm(gone.backupPath!);
    const kept = [
      await craft({ status: 'deleted', finishedDaysAgo: 29 }),
      await craft({ status: 'received', finishedDaysAgo: null }),
      await craft({ status: 'backed_up', finishedDaysAgo: null }),
      await craft({ status: 'imported', finishedDaysAgo: null }),
      await craft({ status: 'duplicate', finishedDaysAgo: null }),
      await craft({ status: 'failed', finishedDaysAgo: null, failed: true }),
    ];
    // Old open and failed rows (their last update long ago): still never touched.
    await database.sql`update fleet.patient_import_ledger set updated_at = now() - interval '400 days', received_at = now() - interval '400 days' where id in ${database.sql(kept.slice(1).map((k) => k.id))}`;
    // A stale failed row with a finished_at it should not have: still failed, still kept.
    await database.sql`update fleet.patient_import_ledger set finished_at = now() - interval '400 days' where id = ${kept[5]!.id}`;

    const dry = await runRetention(h.ctx, { dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, backup: { due: 10, removed: 0 }, failed: { due: 3, removed: 0 } });
    expect(existsSync(removedBackup[0]!.backupPath!)).toBe(true);

    const r = await runRetention(h.ctx);
    expect(r.problems).toEqual([]);
    expect(r.backup).toMatchObject({ retentionDays: 30, removed: 9, alreadyGone: 1, notInFolder: 0, failed: 0 });
    expect(r.failed).toMatchObject({ retentionDays: 90, removed: 3, alreadyGone: 0, notInFolder: 0, failed: 0 });

    for (const c of [...removedBackup, requeuedOld, requeuedMid, discardedOld, discardedMid, legacy, gone]) {
      expect(existsSync(c.backupPath!), `backup of ${c.id}`).toBe(false);
      expect((await ledger(c.id)).backup_removed_at, `backup of ${c.id}`).toBeTruthy();
    }
    for (const c of [requeuedOld, discardedOld, legacy]) {
      expect(existsSync(c.failedPath!), `failed copy of ${c.id}`).toBe(false);
      expect((await ledger(c.id)).failed_removed_at, `failed copy of ${c.id}`).toBeTruthy();
    }
    for (const c of [requeuedMid, discardedMid]) {
      expect(existsSync(c.failedPath!), `failed copy of ${c.id}`).toBe(true);
      expect((await ledger(c.id)).failed_removed_at).toBeNull();
    }
    for (const c of kept) {
      expect(existsSync(c.backupPath!), `backup of ${c.id}`).toBe(true);
      if (c.failedPath) expect(existsSync(c.failedPath)).toBe(true);
      expect(await ledger(c.id)).toMatchObject({ backup_removed_at: null, failed_removed_at: null });
    }
    // The legacy row's finish is pinned when its copy goes (later updates no longer move it).
    expect((await ledger(legacy.id)).finished_at).toEqual((await ledger(legacy.id)).discarded_at);

    const again = await runRetention(h.ctx);
    expect(again.backup).toMatchObject({ removed: 0, alreadyGone: 0, notInFolder: 0, failed: 0 });
    expect(again.failed).toMatchObject({ removed: 0, alreadyGone: 0, notInFolder: 0, failed: 0 });
    expect((await runRetention(h.ctx, { dryRun: true })).backup.due).toBe(0);
  });

  it('0 days keeps every copy forever', async () => {
    await settleEarlierRows();
    const old = [await craft({ status: 'deleted', finishedDaysAgo: 3650 }), await craft({ status: 'discarded', finishedDaysAgo: 3650, failed: true })];
    const forever = otherProcess({ BACKUP_RETENTION_DAYS: '0', FAILED_RETENTION_DAYS: '0' });
    const r = await runRetention(forever);
    expect(r.backup).toMatchObject({ retentionDays: 0, removed: 0, alreadyGone: 0 });
    expect(r.failed).toMatchObject({ retentionDays: 0, removed: 0, alreadyGone: 0 });
    expect((await runRetention(forever, { dryRun: true })).backup.due).toBeUndefined();
    for (const c of old) {
      expect(existsSync(c.backupPath!)).toBe(true);
      if (c.failedPath) expect(existsSync(c.failedPath)).toBe(true);
      expect(await ledger(c.id)).toMatchObject({ backup_removed_at: null, failed_removed_at: null });
    }
    // Only the failed folder kept forever: the durable copies still go.
    const failedForever = otherProcess({ FAILED_RETENTION_DAYS: '0' });
    const f = await runRetention(failedForever);
    expect(f.backup.removed).toBe(2);
    expect(f.failed.removed).toBe(0);
    expect(existsSync(old[1]!.failedPath!)).toBe(true);
  });

  it('two sweeps at once remove and record each copy once', async () => {
    await settleEarlierRows();
    const many = [];
    // More rows than one batch (200), so each sweep runs several.
    for (let i = 0; i < 250; i++) many.push(await craft({ status: i % 2 ? 'deleted' : 'done', finishedDaysAgo: 31 + (i % 7) }));
    const second = otherProcess();
    const [a, b] = await Promise.all([runRetention(h.ctx), runRetention(second)]);
    expect(a.problems).toEqual([]);
    expect(b.problems).toEqual([]);
    expect(a.backup.removed + b.backup.removed).toBe(250);
    expect(a.backup.alreadyGone + b.backup.alreadyGone).toBe(0);
    const [n] = await database.sql`select count(*)::int as n from fleet.patient_import_ledger where id in ${database.sql(many.map((m) => m.id))} and backup_removed_at is not null`;
    expect(n!.n).toBe(250);
    for (const m of many) expect(existsSync(m.backupPath!)).toBe(false);
  });

  it('leaves a path outside the folder alone; a copy it cannot remove fails the job after the rest, naming no file', async () => {
    await settleEarlierRows();
    const elsewhere = await mkdtemp(path.join(tmpdir(), 'retention-elsewhere-'));
    cleanups.push(() => rm(elsewhere, { recursive: true, force: true }));
    const moved = await craft({ status: 'deleted', finishedDaysAgo: 31, backup: false });
    const outside = await writeDurably(elsewhere, `${moved.id}-Muster_Max.json`, Buffer.from('{}'));
    await database.sql`update fleet.patient_import_ledger set backup_path = ${outside} where id = ${moved.id}`;
    // Another row's file name in the right folder is not this row's copy either.
    const other = await craft({ status: 'deleted', finishedDaysAgo: 31 });
    const wrongOwner = await craft({ status: 'deleted', finishedDaysAgo: 31, backup: false });
    await database.sql`update fleet.patient_import_ledger set backup_path = ${other.backupPath} where id = ${wrongOwner.id}`;
    // A directory where the copy should be: unlink refuses it (EISDIR).
    const stuck = await craft({ status: 'deleted', finishedDaysAgo: 31, backup: false });
    const stuckPath = path.join(h.backupDir, `${stuck.id}-Gross_Juergen_20250101_abcd.json`);
    await mkdir(stuckPath);
    await database.sql`update fleet.patient_import_ledger set backup_path = ${stuckPath} where id = ${stuck.id}`;
    const fine = await craft({ status: 'deleted', finishedDaysAgo: 31 });

    // The dry run says what the run will do: the rows whose path is not their copy in the folder are left alone, not "due".
    const dry = await runRetention(h.ctx, { dryRun: true });
    expect(dry.backup).toMatchObject({ due: 3, notInFolder: 2, removed: 0 });
    for (const p of [outside, other.backupPath!, fine.backupPath!]) expect(existsSync(p)).toBe(true);

    const handler = retentionHandlers(h.ctx)['patient-import-retention']!;
    const err = (await handler({}, { log: silentLogger(), jobId: 'x', attempt: 1, maxAttempts: 1, isFinalAttempt: true, updateProgress: async () => {} }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/^retention sweep: 1 local copies could not be removed \(EISDIR: .* in the folder /);
    expect(err.message).not.toContain('Gross_Juergen');
    expect(err.message).not.toContain(`${stuck.id}-`);

    expect(existsSync(outside)).toBe(true);
    expect(existsSync(stuckPath)).toBe(true);
    expect(existsSync(fine.backupPath!)).toBe(false);
    expect(existsSync(other.backupPath!)).toBe(false); // removed as its own row's copy
    expect((await ledger(fine.id)).backup_removed_at).toBeTruthy();
    for (const id of [moved.id, wrongOwner.id, stuck.id]) expect((await ledger(id)).backup_removed_at, `row ${id}`).toBeNull();
    const r = await runRetention(h.ctx, { dryRun: true });
    expect(r.backup).toMatchObject({ due: 1, notInFolder: 2 });
  });
});
