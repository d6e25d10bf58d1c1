import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterSafePrefix } from '../../libs/queues/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { GcsStandIn } from '../../libs/testing/gcs-stand-in.js';
import { fileBytes, objectNameFor, plainRegistration } from './fixtures.js';
import { BUCKET, PREFIX, startImportHarness, until, type ImportHarness } from './int-harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');

let database: TestDatabase;
let standIn: GcsStandIn;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  database = await createTestDatabase();
  standIn = await new GcsStandIn({ recordRequests: false }).start();
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await standIn?.close();
  await database?.drop();
});

async function harness(): Promise<ImportHarness> {
  const q = testQueuePrefix();
  const h = await startImportHarness({ databaseUrl: database.url, queuePrefix: q.prefix, standIn });
  cleanups.push(q.cleanup, () => h.close());
  return h;
}

function startChild(env: Record<string, string>, crash: boolean): { child: ChildProcess; ready: Promise<void>; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'test-child-worker.ts'), JSON.stringify(env), crash ? 'crash-after-commit' : 'run'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    child.once('exit', () => reject(new Error('child exited before it was ready')));
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, ready, exited };
}

describe('patient import: crashes', () => {
  it('a worker SIGKILLed right after the commit and before the delete: after a restart exactly one patient, object deleted', async () => {
    const h = await harness();
    const reg = plainRegistration({ token: '5161c0de00000001' });
    const name = objectNameFor(reg, PREFIX);
    const obj = standIn.putObject(BUCKET, name, fileBytes(reg));
    const first = startChild(h.env, true);
    cleanups.push(async () => void first.child.kill('SIGKILL'));
    await first.ready;
    await h.poll();
    expect(await first.exited).toMatchObject({ signal: 'SIGKILL' });

    const [row] = await database.sql`select * from fleet.patient_import_ledger where object_name = ${name} and generation = ${obj.generation}`;
    expect(row).toMatchObject({ status: 'imported' });
    expect(standIn.getObject(BUCKET, name)?.generation).toBe(obj.generation); // the delete never happened

    const second = startChild(h.env, false);
    cleanups.push(async () => void second.child.kill('SIGKILL'));
    await second.ready;
    const done = await until(async () => {
      const [r] = await database.sql`select * from fleet.patient_import_ledger where id = ${row!.id}`;
      return r && r.status === 'deleted' ? r : undefined;
    }, 30_000, 'import finished after the restart');
    expect(done.patient_id).toBe(row!.patient_id);
    expect(await database.sql`select id from patient_service.patienten where zahlungsreferenz = '5161c0de'`).toHaveLength(1);
    expect(await database.sql`select id from fleet.deliveries where idempotency_key like ${`patient-import.%.ledger.${row!.id}`}`).toHaveLength(1);
    expect(await database.sql`select id from fleet.outbox where event_type = 'patient.created' and key = ${String(row!.patient_id)}`).toHaveLength(1);
    expect(standIn.getObject(BUCKET, name)).toBeUndefined();
    second.child.kill('SIGTERM');
    await second.exited;
  });

  it('a worker that dies twice while importing a file: the row fails for staff (one email), not left waiting behind a dead letter', async () => {
    const h = await harness();
    const reg = plainRegistration({ token: '0dd0beef00000002' });
    const name = objectNameFor(reg, PREFIX);
    h.put(name, fileBytes(reg));
    await h.poll();
    const [row] = await database.sql`select id from fleet.patient_import_ledger where object_name = ${name}`;
    // As if an earlier run had made the durable copy before it died.
    const backupPath = path.join(h.backupDir, `${row!.id}-copy.json`);
    await mkdir(h.backupDir, { recursive: true });
    await writeFile(backupPath, fileBytes(reg));
    await database.sql`update fleet.patient_import_ledger set status = 'backed_up', backup_path = ${backupPath} where id = ${row!.id}`;
    // A worker that takes the job and dies with it (it never renews its lock), twice: BullMQ
    // marks the job stalled too often, and the next worker to take it fails it without running it.
    const dying = new Worker('patient-import', () => new Promise(() => {}), {
      connection: h.ctx.workerRedis(),
      prefix: clusterSafePrefix(h.ctx.config.queues.prefix),
      concurrency: 2,
      lockDuration: 300,
      stalledInterval: 150,
      skipLockRenewal: true,
    });
    cleanups.push(() => dying.close(true));
    const queue = h.ctx.queues.queue('patient-import');
    const jobId = `patient-import.ledger.${row!.id}`;
    await until(async () => ((await queue.getJob(jobId))?.deferredFailure ? true : undefined), 20_000, 'job stalled more than allowed');
    await h.startWorkers();

    const failed = await until(async () => {
      const [r] = await database.sql`select status, error_code, reason, failed_path from fleet.patient_import_ledger where id = ${row!.id}`;
      return r && r.status === 'failed' ? r : undefined;
    }, 20_000, 'ledger row failed');
    expect(failed.error_code).toBe('worker_died');
    expect(failed.failed_path).toBeTruthy();
    expect(await readFile(failed.failed_path as string)).toEqual(fileBytes(reg)); // the bytes for staff, as for any failed file
    expect(failed.reason).toMatch(/worker stopped before finishing it/);
    expect(await database.sql`select id from fleet.deliveries where idempotency_key like ${`patient-import.%.ledger.${row!.id}`}`).toHaveLength(1);
    expect(await database.sql`select id from fleet.outbox where event_type = 'import.failed' and key = ${String(row!.id)}`).toHaveLength(1);
    expect(await h.ctx.queues.queue('patient-import-dlq').getJob(jobId.replaceAll(':', '.'))).toBeDefined();
    expect(standIn.getObject(BUCKET, name)).toBeDefined(); // not imported: the file stays in the bucket
    expect(await database.sql`select id from patient_service.patienten where zahlungsreferenz = '0dd0beef'`).toHaveLength(0);
  });
});
