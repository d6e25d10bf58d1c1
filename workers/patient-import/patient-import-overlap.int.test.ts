import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../libs/log/index.js';
import type { JobHelpers } from '../../libs/queues/bind-worker.js';
import { readImportHead } from '../../libs/db/repositories/patient-import.js';
import { GcsBucket } from '../../libs/storage/gcs.js';
import type { BucketPort } from '../../libs/storage/port.js';
import { GcsStandIn } from '../../libs/testing/gcs-stand-in.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { fileBytes, objectNameFor, plainRegistration } from './fixtures.js';
import { folderKeeper } from './file-keeper.js';
import { BUCKET, PREFIX, startImportHarness, until, type ImportHarness } from './int-harness.js';
import { patientImportDeadLetterHook } from './dead-letters.js';
import { patientImportHandlers } from './worker.js';

/**
 * Two runs of the same ledger row at once: a job whose lock was lost (a Redis blip, an event
 * loop blocked past the lock) is handed to a second worker while the first still runs, or two
 * staff import the same file by hand. The run that comes second must find the row as the
 * first left it, not as it read it when it started.
 */
let database: TestDatabase;
let standIn: GcsStandIn;
let h: ImportHarness;
let cleanupQueue: () => Promise<void>;

beforeAll(async () => {
  database = await createTestDatabase();
  standIn = await new GcsStandIn({ recordRequests: false }).start();
  const q = testQueuePrefix();
  cleanupQueue = q.cleanup;
  h = await startImportHarness({ databaseUrl: database.url, queuePrefix: q.prefix, standIn });
});
afterAll(async () => {
  await h?.close().catch(() => {});
  await cleanupQueue?.().catch(() => {});
  await standIn?.close();
  await database?.drop();
});

const helpers = (): JobHelpers => ({ log: silentLogger(), jobId: 'overlap', attempt: 1, maxAttempts: 22, isFinalAttempt: false, updateProgress: async () => {} });

function realBucket(): GcsBucket {
  return new GcsBucket({ bucket: BUCKET, apiEndpoint: standIn.url, maxRetries: 0 });
}

/** A bucket whose downloads wait until `open` is called; `waiting()` resolves once a download waits at the gate. */
function gatedBucket(real: BucketPort): { bucket: BucketPort; open: () => void; waiting: () => Promise<unknown> } {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let reached = false;
  const bucket = Object.assign(Object.create(real) as BucketPort, {
    download: async (...args: Parameters<BucketPort['download']>) => {
      reached = true;
      await gate;
      return real.download(...args);
    },
  });
  return { bucket, open, waiting: () => until(async () => reached, 10_000, 'the run waiting in its download') };
}

async function newRow(doc = plainRegistration()): Promise<number> {
  h.put(objectNameFor(doc, PREFIX), fileBytes(doc));
  const before = await database.sql`select coalesce(max(id), 0)::int as id from fleet.patient_import_ledger`;
  await h.poll();
  const [row] = await database.sql`select id from fleet.patient_import_ledger where id > ${before[0]!.id} order by id limit 1`;
  return Number(row!.id);
}

async function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: string }> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (e: unknown) => ({ ok: false as const, error: String(e) }),
  );
}

async function traces(ledgerId: number) {
  const [row] = await database.sql`select status, patient_id, duplicate_kind, delete_outcome, failed_path from fleet.patient_import_ledger where id = ${ledgerId}`;
  const [mails] = await database.sql`select count(*)::int as n from fleet.deliveries where idempotency_key = ${`patient-import.failed.ledger.${ledgerId}`}`;
  const [failed] = await database.sql`select count(*)::int as n from fleet.outbox where event_type = 'import.failed' and key = ${String(ledgerId)}`;
  const [patients] = await database.sql`select count(*)::int as n from fleet.patient_consents where ledger_id = ${ledgerId}`;
  return { row, failureMails: mails!.n, failedEvents: failed!.n, consents: patients!.n };
}

describe('patient import: two runs of the same row overlap', () => {
  it('a run that downloads after another run imported and deleted the object leaves the row deleted: no failure, email or event', async () => {
    const ledgerId = await newRow();
    const slow = gatedBucket(realBucket());
    const runA = patientImportHandlers(h.ctx, { bucket: realBucket() })['patient-import']!;
    const runB = patientImportHandlers(h.ctx, { bucket: slow.bucket })['patient-import']!;
    // B counts its attempt (the row is `received` for it) and waits in its download.
    const b = settle(runB({ ledgerId }, helpers()));
    await slow.waiting();
    const a = await runA({ ledgerId }, helpers());
    expect(a).toMatchObject({ outcome: 'imported', status: 'deleted' });
    slow.open();
    const bEnd = await b;
    expect(bEnd).toMatchObject({ ok: true, value: { outcome: 'moved-on', ledgerId, status: 'deleted' } });
    const t = await traces(ledgerId);
    expect(t).toMatchObject({ row: { status: 'deleted', delete_outcome: 'deleted', failed_path: null }, failureMails: 0, failedEvents: 0, consents: 1 });
  });

  it('a run that downloads after another run committed (before its delete) does not rewrite the import as a duplicate of itself', async () => {
    const ledgerId = await newRow();
    const slow = gatedBucket(realBucket());
    const runB = patientImportHandlers(h.ctx, { bucket: slow.bucket })['patient-import']!;
    const b = settle(runB({ ledgerId }, helpers()));
    await slow.waiting();
    let bDone!: Promise<unknown>;
    // A commits; right then (before A deletes the object) B downloads and goes through.
    const runA = patientImportHandlers(h.ctx, {
      bucket: realBucket(),
      afterCommit: async () => {
        slow.open();
        bDone = b;
        await bDone;
      },
    })['patient-import']!;
    const a = await runA({ ledgerId }, helpers());
    const bEnd = await b;
    // B finds the row committed and only deletes the object; A, deleting after it, finds the row finished.
    expect(bEnd).toMatchObject({ ok: true, value: { outcome: 'imported', status: 'deleted' } });
    expect(a).toMatchObject({ outcome: 'moved-on', status: 'deleted' });
    const [created] = await database.sql`select patient_id from fleet.patient_consents where ledger_id = ${ledgerId}`;
    const t = await traces(ledgerId);
    expect(t).toMatchObject({ row: { status: 'deleted', patient_id: created!.patient_id, duplicate_kind: null }, failureMails: 0, failedEvents: 0, consents: 1 });
  });

  it('an operator discard that lands while a run is between its lookup and its write: the run waits for it and imports nothing', async () => {
    const doc = plainRegistration();
    const name = objectNameFor(doc, PREFIX);
    const bytes = fileBytes(doc);
    const ledgerId = await newRow(doc);
    // As a requeue leaves a row that had its copy: backed_up, so the run records no backup first.
    const backupPath = await folderKeeper(h.backupDir).save((await readImportHead(h.ctx.database.db, ledgerId))!, bytes);
    await database.sql`update fleet.patient_import_ledger set status = 'backed_up', backup_path = ${backupPath} where id = ${ledgerId}`;
    const slow = gatedBucket(realBucket());
    const run = settle(patientImportHandlers(h.ctx, { bucket: slow.bucket })['patient-import']!({ ledgerId }, helpers()));
    await slow.waiting(); // the run has looked the row up and waits in its download
    // The operator's discard holds the row (as discardLedgerRow's update does) while the run goes on.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const discard = database.sql.begin(async (tx) => {
      await tx`select id from fleet.patient_import_ledger where id = ${ledgerId} for update`;
      locked();
      await released;
      await tx`update fleet.patient_import_ledger set status = 'discarded', discarded_at = now(), finished_at = now() where id = ${ledgerId} and status in ('failed', 'received', 'downloaded', 'backed_up', 'imported', 'duplicate')`;
    });
    await isLocked;
    slow.open();
    // The run's transaction waits on the row.
    await until(async () => (await database.sql`select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`).length > 0, 10_000, 'the run waiting on the row');
    release();
    await discard;
    expect(await run).toMatchObject({ ok: true, value: { outcome: 'moved-on', status: 'discarded' } });
    const t = await traces(ledgerId);
    expect(t).toMatchObject({ row: { status: 'discarded', patient_id: null }, consents: 0, failureMails: 0, failedEvents: 0 });
    expect(h.standIn.getObject(BUCKET, name)).toBeTruthy();
  });

  it('discarding the dead letter of an imported row whose delete failed closes it as done (its delete discarded, the patient kept), not as a discarded registration', async () => {
    const ledgerId = await newRow();
    // The import commits but the bucket refuses every delete: the job's retries run out.
    const noDelete = Object.assign(Object.create(realBucket()) as BucketPort, {
      deleteGeneration: async () => {
        throw new Error('delete refused');
      },
    });
    const run = patientImportHandlers(h.ctx, { bucket: noDelete })['patient-import']!;
    expect(await settle(run({ ledgerId }, { ...helpers(), isFinalAttempt: true }))).toMatchObject({ ok: false });
    expect((await traces(ledgerId)).row).toMatchObject({ status: 'imported' });
    await patientImportDeadLetterHook.onDiscard!({ ledgerId }, h.ctx.database.db);
    const t = await traces(ledgerId);
    expect(t).toMatchObject({ row: { status: 'done', delete_outcome: 'discarded' }, failureMails: 0, failedEvents: 0, consents: 1 });
  });
});
