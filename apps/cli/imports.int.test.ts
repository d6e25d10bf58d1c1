import { execFileSync } from 'node:child_process';
import type { Job } from 'bullmq';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { listAudit, recordAudit } from '../../libs/db/repositories/audit.js';
import { getLedgerRow, insertLedgerObjects, updateLedgerRow } from '../../libs/db/repositories/patient-import.js';
import { silentLogger } from '../../libs/log/index.js';
import { addDeadLetter, jobIdFor } from '../../libs/queues/index.js';
import { openContext, workerComponent } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { startGcsStandIn } from '../../libs/testing/gcs-stand-in.js';
import { silentServer } from '../../libs/testing/ports.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { fileBytes, plainRegistration, registrationToken } from '../../workers/patient-import/fixtures.js';
import { until } from '../../workers/patient-import/int-harness.js';
import { notImportedOutcome, scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { therapistImportRepo } from '../../workers/therapist-import/index.js';
import { runCli } from './run-cli.js';

let db: TestDatabase;
let q: ReturnType<typeof testQueuePrefix>;
let dir: string;

function fleet(...args: string[]) {
  return fleetWith({}, ...args);
}

function fleetWith(env: Record<string, string>, ...args: string[]) {
  return runCli(args, {
    DATABASE_URL: db.url,
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: q.prefix,
    SCRAPER_DROP_DIR: path.join(dir, 'scraper'),
    BACKUP_DIR: path.join(dir, 'backup'),
    FAILED_DIR: path.join(dir, 'failed'),
    MAIL_OUTBOX_DIR: path.join(dir, 'outbox'),
    FLEET_OPERATOR: 'ops-anna',
    LOG_LEVEL: 'silent',
    ...env,
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  q = testQueuePrefix();
  dir = await mkdtemp(path.join(tmpdir(), 'cli-imports-'));
});

afterAll(async () => {
  await db?.drop();
  await q?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// Each step starts the real CLI process (a few seconds each on a busy machine).
describe('fleet import therapist-file', () => {
  it('refuses a file not named <plz>.json (as the watcher does) and imports it once renamed', { timeout: 90_000 }, async () => {
    const content = scraperFile([therapistLine({ id: 'p1' })]);
    const misnamed = path.join(dir, 'aachen-therapeuten.json');
    await writeFile(misnamed, content);
    const refused = await fleet('import', 'therapist-file', misnamed);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`${misnamed}: name does not fit <plz>.json`);
    expect(await therapistImportRepo.listFiles(db.db)).toEqual([]);
    // A folder, or a path that is not there, is said as such (not "rename it").
    const folder = await fleet('import', 'therapist-file', dir);
    expect({ code: folder.code, stderr: folder.stderr }).toEqual({ code: 2, stderr: `fleet: ${dir}: not a file (a folder)\n` });
    // A named pipe is not opened for a read that would wait for a writer for ever.
    const pipe = path.join(dir, '52098.json');
    execFileSync('mkfifo', [pipe]);
    const piped = await fleet('import', 'therapist-file', pipe);
    expect({ code: piped.code, stderr: piped.stderr }).toEqual({ code: 2, stderr: `fleet: ${pipe}: not a file (a named pipe)\n` });
    await rm(pipe);
    const missing = await fleet('import', 'therapist-file', path.join(dir, '52099.json'));
    expect({ code: missing.code, stderr: missing.stderr }).toEqual({ code: 2, stderr: `fleet: ${path.join(dir, '52099.json')}: cannot read (ENOENT)\n` });

    // A relative path is relative to the folder the command was typed in: npm run starts the CLI
    // in the package folder and names that folder in INIT_CWD (it used to look in the package folder).
    const relativeMissing = await fleetWith({ INIT_CWD: dir }, 'import', 'therapist-file', '52099.json');
    expect({ code: relativeMissing.code, stderr: relativeMissing.stderr }).toEqual({ code: 2, stderr: `fleet: 52099.json (${path.join(dir, '52099.json')}): cannot read (ENOENT)\n` });

    const named = path.join(dir, '52074.json');
    await writeFile(named, content);
    const imported = await fleetWith({ INIT_CWD: dir }, 'import', 'therapist-file', '52074.json', '--json');
    expect(imported.code).toBe(0);
    expect(JSON.parse(imported.stdout)).toMatchObject({ status: 'imported' });
    const [file] = await therapistImportRepo.listFiles(db.db);
    expect(file).toMatchObject({ postcode: '52074', status: 'imported' });

    // the files of one run (a CLI import is a run of its own)
    const ofRun = await fleet('imports', 'list', '--kind', 'therapist', '--run', String(file!.runId), '--json');
    expect(JSON.parse(ofRun.stdout)).toMatchObject([{ id: file!.id, run: file!.runId }]);
    const noRun = await fleet('imports', 'list', '--kind', 'therapist', '--run', String(file!.runId! + 1));
    expect({ code: noRun.code, stderr: noRun.stderr }).toEqual({ code: 3, stderr: `fleet: no therapist import run ${file!.runId! + 1} (fleet imports runs lists them)\n` });
    const noneFailed = await fleet('imports', 'list', '--kind', 'therapist', '--run', String(file!.runId), '--status', 'failed');
    expect({ code: noneFailed.code, stdout: noneFailed.stdout }).toEqual({ code: 0, stdout: `no therapist import records with status failed in run ${file!.runId}\n` });
    expect((await fleet('imports', 'list', '--run', '1')).code).toBe(2); // patient imports have no runs
  });
});

describe('a patient file imported by hand that failed', () => {
  it('shows next steps that work for it and can be discarded (audited, with a reason)', { timeout: 120_000 }, async () => {
    const file = path.join(dir, 'registration.json'); // not {nachname}_{vorname}_{date}_{token}.json
    await writeFile(file, fileBytes(plainRegistration()));
    const failed = await fleet('import', 'patient-file', file);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toContain('failed (bad_file_name)');
    const id = Number(/fleet imports show (\d+)/.exec(failed.stdout)?.[1]);
    expect((await getLedgerRow(db.db, id))?.status).toBe('failed');

    const shown = await fleet('imports', 'show', String(id));
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('imported by hand');
    expect(shown.stdout).toContain('fleet import patient-file <path>');
    expect(shown.stdout).toContain(`fleet imports discard ${id} --reason`);
    expect(shown.stdout).not.toContain('The file stays in the bucket');
    expect(shown.stdout).not.toContain('fleet dlq');

    const noReason = await fleet('imports', 'discard', String(id));
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain('--reason <text> is required');
    expect((await getLedgerRow(db.db, id))?.status).toBe('failed');

    const discarded = await fleet('imports', 'discard', String(id), '--reason', 'sent again under its proper name');
    expect(discarded.code).toBe(0);
    expect(discarded.stdout).toContain(`discarded import record ${id}`);
    expect(await getLedgerRow(db.db, id)).toMatchObject({ status: 'discarded', discardedAt: expect.any(Date) });
    const [audit] = await listAudit(db.db, 1);
    expect(audit).toMatchObject({ actor: 'ops-anna', action: 'imports.discard', target: `patient-import.ledger.${id}`, reason: 'sent again under its proper name' });
    // The record's story says who closed it and why (the audit table, not only /ops's recent actions).
    const after = await fleet('imports', 'show', String(id));
    expect(after.stdout).toMatch(/operator actions:\n {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d {2}imports\.discard {2}by ops-anna: sent again under its proper name/);
    const afterJson = await fleet('imports', 'show', String(id), '--json');
    expect(JSON.parse(afterJson.stdout).operatorActions).toMatchObject([{ action: 'imports.discard', actor: 'ops-anna', reason: 'sent again under its proper name' }]);

    const again = await fleet('imports', 'discard', String(id), '--reason', 'twice');
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(`import record ${id} is discarded, not failed`);
    const missing = await fleet('imports', 'discard', '999999', '--reason', 'typo');
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('no patient import record 999999');

    // --json output stays JSON when the import logs a warning: log lines go to stderr.
    const other = path.join(dir, 'anmeldung.json');
    await writeFile(other, fileBytes(plainRegistration()));
    // (typed as a path relative to the folder the command was typed in, as with the therapist file)
    const asJson = await fleetWith({ LOG_LEVEL: 'warn', INIT_CWD: dir }, 'import', 'patient-file', 'anmeldung.json', '--json');
    expect(asJson.code).toBe(1);
    expect(JSON.parse(asJson.stdout)).toMatchObject({ ok: false, code: 'bad_file_name' });
    expect(asJson.stderr).toContain('registration file failed');

    // A discard answers in JSON too, as fleet dlq discard does.
    const otherId = JSON.parse(asJson.stdout).ledgerId as number;
    expect(otherId).not.toBe(id);
    const discardedJson = await fleet('imports', 'discard', String(otherId), '--reason', 'sent again', '--json');
    expect({ code: discardedJson.code, json: JSON.parse(discardedJson.stdout) }).toEqual({ code: 0, json: { outcome: 'discarded', kind: 'patient', id: otherId } });
    expect((await getLedgerRow(db.db, otherId))?.status).toBe('discarded');
  });
});

describe('a registration uploaded again with other content (same registration token)', () => {
  // It read only "duplicate (same_token)", like a retry: the changed content went unnoticed.
  it('imports list and show name the patient and the fields that differ, never their values', { timeout: 90_000 }, async () => {
    const [id] = await insertLedgerObjects(db.db, [{ bucket: 'b', objectName: 'registrations/G_H_20250707_9a9a9a9a.json', generation: '1', sourceUri: 'gs://b/registrations/G_H_20250707_9a9a9a9a.json' }]);
    await updateLedgerRow(db.db, id!, { status: 'deleted', duplicateKind: 'same_token', duplicateOfPatientId: 77, differingFields: ['telefon', 'ort'], differingComparedWith: 'import', importedAt: new Date() });
    const listed = await fleet('imports', 'list', '--limit', '500');
    expect(listed.stdout).toContain('same registration as patient 77; differs in: telefon, ort');
    const shown = await fleet('imports', 'show', String(id));
    expect(shown.stdout).toMatch(
      /content changed: +same registration as patient 77; differs in: telefon, ort \(compared with what the import of this registration read; the patient was not changed: update it by hand; staff were emailed\)/,
    );
  });

  // Compared with the patient row as it is now (its import recorded no digests), it read like a change of the
  // registration: staff were invited to undo their own corrections of the patient.
  it('compared with the patient as it is now (no digests, or a row from before): says so and asks for a check first', { timeout: 90_000 }, async () => {
    const ids = await insertLedgerObjects(db.db, [
      { bucket: 'b', objectName: 'registrations/G_H_20250707_8b8b8b8b.json', generation: '1', sourceUri: 'gs://b/registrations/G_H_20250707_8b8b8b8b.json' },
      { bucket: 'b', objectName: 'registrations/G_H_20250707_7c7c7c7c.json', generation: '1', sourceUri: 'gs://b/registrations/G_H_20250707_7c7c7c7c.json' },
    ]);
    await updateLedgerRow(db.db, ids[0]!, { status: 'deleted', duplicateKind: 'same_token', duplicateOfPatientId: 78, differingFields: ['telefon'], differingComparedWith: 'patient', importedAt: new Date() });
    await updateLedgerRow(db.db, ids[1]!, { status: 'deleted', duplicateKind: 'same_token', duplicateOfPatientId: 79, differingFields: ['ort'], importedAt: new Date() });
    const listed = await fleet('imports', 'list', '--limit', '500');
    expect(listed.stdout).toContain('same registration as patient 78; differs from the patient record as it is now in: telefon (may be corrections made since the import: check before changing anything)');
    expect(listed.stdout).toContain('same registration as patient 79; differs from the patient record as it is now in: ort (may be corrections');
    const shown = await fleet('imports', 'show', String(ids[0]));
    expect(shown.stdout).toMatch(/content changed: +same registration as patient 78; differs from the patient record as it is now in: telefon \(may be corrections made since the import: check before changing anything\) \(its import recorded no digests/);
    expect(shown.stdout).not.toContain('update it by hand');
  });
});

describe('a registration imported by hand, then uploaded again with other content', () => {
  it('says the import takes signatures unchecked, and names the fields the second upload changes (the patient is not changed)', { timeout: 90_000 }, async () => {
    const token = registrationToken();
    const name = `Mustermann_Max_20250705_${token.slice(0, 8)}.json`;
    const first = path.join(dir, 'again-1', name);
    const second = path.join(dir, 'again-2', name);
    await mkdir(path.dirname(first), { recursive: true });
    await mkdir(path.dirname(second), { recursive: true });
    const reg = plainRegistration({ token });
    await writeFile(first, fileBytes(reg));
    const changed = structuredClone(reg) as { patient_data: Record<string, unknown> };
    changed.patient_data.telefon = '+49 170 0000000';
    await writeFile(second, fileBytes(changed));

    const imported = await fleet('import', 'patient-file', first);
    expect(imported.code).toBe(0);
    expect(imported.stderr).toContain('fleet: warning: registration signatures are not checked: REGISTRATION_SIGNING_SECRET is not set\n');
    const patientId = Number(/imported: patient (\d+)/.exec(imported.stdout)?.[1]);
    const again = await fleet('import', 'patient-file', second);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`not imported again: duplicate of patient ${patientId} (same registration token;`);
    expect(again.stdout).toContain('its content differs from what the first import of this registration read in: telefon; the patient is not changed: update it by hand if the new values are right (staff were sent an email)\n');
    expect(again.stdout).not.toContain('0000000');
  });
});

describe('fleet imports show of a registration imported whose bucket delete gave up', () => {
  it('says the patient is in, only the delete is left, and what a requeue or a discard of its dead letter does', { timeout: 90_000 }, async () => {
    const [id] = await insertLedgerObjects(db.db, [{ bucket: 'b', objectName: 'registrations/Muster_Ida_20250705_5e5e5e5e.json', generation: '21', sourceUri: 'gs://b/registrations/Muster_Ida_20250705_5e5e5e5e.json' }]);
    await updateLedgerRow(db.db, id!, { status: 'imported', patientId: 4714, importedAt: new Date() });
    const without = await fleet('imports', 'show', String(id));
    expect(without.code).toBe(0);
    expect(without.stdout).not.toContain('dead letter');

    const ctx = openContext(loadConfig({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' }), silentLogger());
    try {
      const jobId = jobIdFor('patient-import', { ledgerId: id! })!;
      await addDeadLetter(ctx.queues, {
        originalQueue: 'patient-import',
        originalJobId: jobId,
        name: 'patient-import',
        data: { ledgerId: id },
        reason: 'storage: 503 backendError',
        code: null,
        attemptsMade: 22,
        enqueuedAt: null,
        failedAt: new Date().toISOString(),
      });
      const shown = await fleet('imports', 'show', String(id));
      expect(shown.code).toBe(0);
      expect(shown.stdout).toContain(
        `\n\nImported; only removing the file from the bucket is left, and its job gave up (dead letter ${jobId}: storage: 503 backendError).\n` +
          `Once the cause is fixed: fleet dlq requeue ${jobId} --reason "..." (deletes the file; imports nothing again).\n` +
          'A discard leaves the file, with its personal data, in the bucket: it would then have to be deleted by hand.',
      );
      const asJson = JSON.parse((await fleet('imports', 'show', String(id), '--json')).stdout) as { deadLetter?: { id: string; reason: string } };
      expect(asJson.deadLetter).toMatchObject({ id: jobId, reason: 'storage: 503 backendError' });
    } finally {
      await ctx.close();
    }
  });
});

describe('fleet imports show of a registration that is being retried', () => {
  /** A ledger row whose job ran once, failed with what `fail` throws and waits for its next attempt; `check` runs with the worker stopped. */
  async function withWaitingImport(objectName: string, fail: () => Promise<never>, check: (id: number, job: Job) => Promise<void>) {
    const [row] = await db.sql`
      insert into fleet.patient_import_ledger (source, bucket, object_name, generation, source_uri, status, attempts)
      values ('bucket', 'b', ${objectName}, '17', ${`gs://b/${objectName}`}, 'received', 1)
      returning id`;
    const id = Number(row!.id);
    const ctx = openContext(loadConfig({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, LOG_LEVEL: 'silent' }), silentLogger());
    const worker = workerComponent(ctx, 'test-waiting', { 'patient-import': fail });
    try {
      await worker.start();
      const { jobId } = await ctx.queues.enqueue('patient-import', { ledgerId: id });
      const job = await until(async () => {
        // Read after its state: a job read while its attempt still ran says 0 attempts made even once it is delayed.
        if ((await ctx.queues.queue('patient-import').getJobState(jobId)) !== 'delayed') return null;
        const j = await ctx.queues.queue('patient-import').getJob(jobId);
        return j && j.attemptsStarted >= 1 ? j : null;
      }, 20_000, 'the job waiting for its next attempt');
      await worker.stop(5_000);
      await check(id, job);
    } finally {
      await worker.stop(5_000).catch(() => {});
      await (await ctx.queues.queue('patient-import').getJob(jobIdFor('patient-import', { ledgerId: id })!))?.remove();
      await ctx.close();
    }
  }

  it('says what its last attempt failed with and that it retries (the ledger records only failures for good)', { timeout: 90_000 }, async () => {
    // The backup folder unwritable, as an operator met it.
    await withWaitingImport('registrations/Muster_Max_20250705_0b1ab67b.json', async () => {
      throw new Error('EACCES: permission denied (open in the folder /var/backup/registrations)');
    }, async (id, job) => {
      const shown = await fleet('imports', 'show', String(id));
      expect(shown.code).toBe(0);
      expect(shown.stdout).toMatch(
        new RegExp(`last attempt: +failed: EACCES: permission denied \\(open in the folder /var/backup/registrations\\) \\(retrying: ${job.attemptsMade} of ${job.opts.attempts} attempts used\\)`),
      );
      const asJson = JSON.parse((await fleet('imports', 'show', String(id), '--json')).stdout) as { retry: { lastFailure: string } };
      expect(asJson.retry.lastFailure).toContain('EACCES');
    });
  });

  it('says that it waits for the database when its attempts could not reach it (not counted, OUTAGE_CARRY_HOURS)', { timeout: 90_000 }, async () => {
    const port = Number(new URL(db.url).port || 5432);
    // Refused on PostgreSQL's port, as the import's first query is while PostgreSQL is away.
    await withWaitingImport('registrations/Muster_Erika_20250706_7c2d90e4.json', async () => {
      throw Object.assign(new Error(`connect ECONNREFUSED 127.0.0.1:${port}`), { code: 'ECONNREFUSED', port });
    }, async (id) => {
      const shown = await fleet('imports', 'show', String(id));
      expect(shown.code).toBe(0);
      expect(shown.stdout).toMatch(
        new RegExp(`last attempt: +could not reach the database: connect ECONNREFUSED 127\\.0\\.0\\.1:${port} \\(waits for it; not counted: 0 of 22 attempts used\\)`),
      );
    });
  });
});

describe('a therapist file that failed its job', () => {
  it('shows its error code and whether its dead letter waits or was discarded', { timeout: 90_000 }, async () => {
    const run = await therapistImportRepo.openRun(db.db, 'watcher', 'sealed');
    const { file } = await therapistImportRepo.registerFile(db.db, { runId: run, path: '52080.json', postcode: '52080', dateFolder: null, urgent: false, contentHash: 'f'.repeat(64), sizeBytes: 10 });
    const reason = 'import failed after retries: database error: connection terminated';
    await therapistImportRepo.finishFile(db.db, file.id, notImportedOutcome('gave_up', reason));
    const waiting = await fleet('imports', 'show', String(file.id), '--kind', 'therapist');
    expect(waiting.code).toBe(0);
    expect(waiting.stdout).toContain('error code: gave_up');
    expect(waiting.stdout).toContain('dead letter: waiting for an operator (fleet dlq list --queue therapist-import');
    await therapistImportRepo.markDeadLetterDiscarded(db.db, file.id, new Date('2026-12-06T12:00:00Z'));
    const discarded = await fleet('imports', 'show', String(file.id), '--kind', 'therapist');
    expect(discarded.stdout).toContain('dead letter: discarded 2026-12-06 13:00:00 +01:00 (nothing more to do');
    expect(discarded.stdout).not.toContain('replaced since');
    // A later file of the same postcode imported since: nothing is left to do (as /imports says).
    const [later] = await db.sql<{ id: string }[]>`insert into fleet.therapist_import_files (path, postcode, status, finished_at) values ('20261213/52080.json', '52080', 'imported', now()) returning id`;
    const replaced = await fleet('imports', 'show', String(file.id), '--kind', 'therapist');
    expect(replaced.stdout).toContain(`replaced since by import record ${later!.id} (20261213/52080.json, imported): nothing to do`);
  });

  it('says nothing of a dead letter for a file imported by hand (it failed in the terminal and has none)', { timeout: 90_000 }, async () => {
    const run = await therapistImportRepo.openRun(db.db, 'cli', 'sealed');
    const { file } = await therapistImportRepo.registerFile(db.db, { runId: run, path: '/tmp/52081.json', postcode: '52081', dateFolder: null, urgent: false, contentHash: 'e'.repeat(64), sizeBytes: 10 });
    await therapistImportRepo.finishFile(db.db, file.id, notImportedOutcome('gave_up', 'import failed after retries: database error: connection terminated'));
    const shown = await fleet('imports', 'show', String(file.id), '--kind', 'therapist');
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('error code: gave_up');
    expect(shown.stdout).not.toContain('dead letter');
  });
});

describe('fleet imports runs', () => {
  it('counts the files of a run still collecting (its row is counted when it closes)', { timeout: 90_000 }, async () => {
    const run = await therapistImportRepo.openRun(db.db, 'watcher', 'collecting');
    const { file } = await therapistImportRepo.registerFile(db.db, { runId: run, path: '52090.json', postcode: '52090', dateFolder: null, urgent: false, contentHash: 'c'.repeat(64), sizeBytes: 10 });
    await db.sql`update fleet.therapist_import_files set status = 'imported', finished_at = now() where id = ${file.id}`;
    const shown = await fleet('imports', 'runs');
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(new RegExp(`^${run}\\s+watcher\\s+collecting\\s+1\\s`, 'm'));
  });
});

describe('fleet poll', () => {
  it('says when files were left out because they are still being copied in, instead of looking like an empty bucket', { timeout: 90_000 }, async () => {
    const bucketDir = path.join(dir, 'bucket');
    await mkdir(path.join(bucketDir, 'registrations'), { recursive: true });
    await writeFile(path.join(bucketDir, 'registrations', 'Mustermann_Max_20250705_0b1ab67b.json'), fileBytes(plainRegistration()));
    // A settle time longer than the test: the file counts as still being written.
    const early = await fleetWith({ LOCAL_BUCKET_DIR: bucketDir, LOCAL_BUCKET_SETTLE_MS: '600000' }, 'poll');
    expect(early.code).toBe(0);
    expect(early.stdout).toContain('listed 0 object(s)');
    expect(early.stdout).toContain('1 file(s) changed less than LOCAL_BUCKET_SETTLE_MS ago (still being copied in?) left for the next poll: run fleet poll again in a moment');
    const json = await fleetWith({ LOCAL_BUCKET_DIR: bucketDir, LOCAL_BUCKET_SETTLE_MS: '600000' }, 'poll', '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ listed: 0, unsettled: 1 });
    const later = await fleetWith({ LOCAL_BUCKET_DIR: bucketDir, LOCAL_BUCKET_SETTLE_MS: '0' }, 'poll');
    expect(later.stdout).toContain('1 new file(s) enqueued');
    expect(later.stdout).not.toContain('LOCAL_BUCKET_SETTLE_MS');
    // Every listed object is accounted for: a file recorded before is named as what it is (no worker
    // runs here, so it is still under way; once failed or discarded, it is left in the bucket).
    const again = await fleetWith({ LOCAL_BUCKET_DIR: bucketDir, LOCAL_BUCKET_SETTLE_MS: '0' }, 'poll');
    // (the number offered again counts the open records the file's other tests left too)
    expect(again.stdout).toMatch(/listed 1 object\(s\) in 1 page\(s\): 0 new file\(s\) enqueued, 1 already being imported; [1-9]\d* unfinished import\(s\) offered again/);
    const row = JSON.parse((await fleet('imports', 'list', '--json')).stdout).find((r: { status: string }) => r.status === 'received');
    await updateLedgerRow(db.db, row.id, { status: 'discarded', discardedAt: new Date(), finishedAt: new Date() });
    const left = await fleetWith({ LOCAL_BUCKET_DIR: bucketDir, LOCAL_BUCKET_SETTLE_MS: '0' }, 'poll');
    expect(left.stdout).toContain('listed 1 object(s) in 1 page(s): 0 new file(s) enqueued, 1 left as failed or discarded (see fleet imports list --status failed,discarded); ');
    expect(JSON.parse((await fleetWith({ LOCAL_BUCKET_DIR: bucketDir, LOCAL_BUCKET_SETTLE_MS: '0' }, 'poll', '--json')).stdout)).toMatchObject({ listed: 1, recorded: 0, leftFailed: 1, inProgress: 0 });
    // A poll that went through, by the CLI too, is the last successful one `fleet status` names.
    const status = await fleetWith({ LOCAL_BUCKET_DIR: bucketDir }, 'status');
    expect(status.stdout).toMatch(/\n {2}last successful bucket poll: \d{4}-\d{2}-\d{2} \d{2}:\d{2} [+-]\d{2}:\d{2} \(\d+ s ago\)\n/);
  });

  it('fleet poll against a GCS endpoint that does not answer says so after 5 s, then fails naming the endpoint (exit 1)', { timeout: 90_000 }, async () => {
    // The storage client retries unanswered calls (GCS_MAX_RETRIES within GCS_TOTAL_TIMEOUT_MS):
    // 15-30 s that were silent before the error.
    const silent = await silentServer();
    const port = silent.port;
    try {
      const r = await fleetWith(
        { STORAGE_DRIVER: 'gcs', GCS_BUCKET: 'curavani-test-bucket', GCS_API_ENDPOINT: `http://127.0.0.1:${port}`, GCS_TIMEOUT_MS: '8000', GCS_MAX_RETRIES: '0' },
        'poll',
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        `fleet: still listing the bucket after 5 s (endpoint 127.0.0.1:${port}): a call that gets no answer fails after 8 s (GCS_TIMEOUT_MS)\n` +
          `fleet: gcs list timed out (bucket curavani-test-bucket, endpoint 127.0.0.1:${port})\n`,
      );
    } finally {
      await silent.close();
    }
  });
});

describe('fleet poll of a bucket that takes long to list', () => {
  it('says how many pages it has listed so far, not that calls get no answer', { timeout: 90_000 }, async () => {
    const si = await startGcsStandIn({ buckets: ['slow-bucket'] });
    try {
      for (let i = 0; i < 8; i++) si.putObject('slow-bucket', `registrations/Slow_List_20250705_${String(i).padStart(8, '0')}.json`, '{}');
      si.fail({ kind: 'list', mode: 'slow', delayMs: 900, times: 100 });
      const r = await fleetWith(
        { STORAGE_DRIVER: 'gcs', GCS_BUCKET: 'slow-bucket', GCS_API_ENDPOINT: si.url, GCS_MAX_RETRIES: '0', POLL_PAGE_SIZE: '1' },
        'poll',
      );
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('listed 8 object(s) in 8 page(s): 8 new file(s) enqueued');
      expect(r.stderr).toMatch(/^fleet: still listing the bucket after 5 s: [1-8] page\(s\), [1-8] object\(s\) so far, [1-8] new\n$/);
    } finally {
      await si.close();
    }
  });
});

describe('a failed file from the bucket', () => {
  async function failedBucketRow(name: string, errorCode: string, reason: string, registrationToken: string | null = null) {
    const [id] = await insertLedgerObjects(db.db, [{ bucket: 'b', objectName: `registrations/${name}`, generation: '1', sourceUri: `gs://b/registrations/${name}` }]);
    await updateLedgerRow(db.db, id!, { status: 'failed', errorCode, reason: `ledger ${id}: ${reason}`, attempts: 1, failedAt: new Date(), registrationToken });
    return id!;
  }

  it('shows the next step that helps for what failed: a corrected upload for bad content, a requeue after the fleet gave up', { timeout: 90_000 }, async () => {
    // A requeue imports the copy the fleet kept: for a file whose content is wrong it fails again.
    const bad = await failedBucketRow('A_B_20250707_5f3a1c88.json', 'validation_failed', 'patient_data.plz: expected 5 digits, got the string "5207"');
    const shownBad = await fleet('imports', 'show', String(bad));
    expect(shownBad.code).toBe(0);
    expect(shownBad.stdout).toContain('a requeue does not help');
    expect(shownBad.stdout).toContain('Upload a corrected file');
    expect(shownBad.stdout).toContain(`fleet dlq discard patient-import.ledger.${bad} --reason`);
    expect(shownBad.stdout).not.toContain('After fixing the cause');
    expect(shownBad.stdout).not.toContain(`fleet dlq requeue patient-import.ledger.${bad}`);
    // A requeue of its dead letter (as libs/ops/dead-letters.ts records it) is in the record's story.
    await recordAudit(db.db, { actor: 'ops-ben', action: 'dlq.requeue', target: `patient-import/patient-import.ledger.${bad}`, reason: 'fixed the file' });
    expect((await fleet('imports', 'show', String(bad))).stdout).toMatch(/operator actions:\n {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d {2}dlq\.requeue {2}by ops-ben: fixed the file/);

    // The corrected file uploaded under the same name (a newer generation) and imported: the failed
    // record no longer says the file stays in the bucket and asks for an upload that was made.
    const [corrected] = await insertLedgerObjects(db.db, [{ bucket: 'b', objectName: 'registrations/A_B_20250707_5f3a1c88.json', generation: '2', sourceUri: 'gs://b/registrations/A_B_20250707_5f3a1c88.json' }]);
    await updateLedgerRow(db.db, corrected!, { status: 'deleted', deleteOutcome: 'deleted', importedAt: new Date(), finishedAt: new Date() });
    const shownReplaced = await fleet('imports', 'show', String(bad));
    expect(shownReplaced.stdout).toContain(`A newer upload of this file name was imported since: import record ${corrected} (deleted; fleet imports show ${corrected})`);
    expect(shownReplaced.stdout).toContain(`close it: fleet dlq discard patient-import.ledger.${bad} --reason`);
    expect(shownReplaced.stdout).not.toContain('The file stays in the bucket');
    expect(shownReplaced.stdout).not.toContain('Upload a corrected file');
    expect(JSON.parse((await fleet('imports', 'show', String(bad), '--json')).stdout).newerImport).toMatchObject({ id: corrected, status: 'deleted' });

    // The corrected file imported by hand (same registration token): the failed record and the hand
    // import name each other; the record no longer asks for an upload that would only be a duplicate.
    // As the import records it: a file that failed a field rule has its content's token on the record.
    const jonas = await failedBucketRow('Beispiel_Jonas_20250707_5f3a1c77.json', 'validation_failed', 'patient_data.plz: expected 5 digits, got the string "5207"', '5f3a1c77aa00bb11cc22dd33');
    const handFile = path.join(dir, 'Beispiel_Jonas_20250707_5f3a1c77.json');
    await writeFile(handFile, fileBytes(plainRegistration({ token: '5f3a1c77aa00bb11cc22dd33' })));
    const byHand = await fleet('import', 'patient-file', handFile);
    expect(byHand.code).toBe(0);
    const handId = Number(/import record (\d+)\)/.exec(byHand.stdout)?.[1]);
    expect(byHand.stdout).toContain(`import record ${jonas} (from the bucket, failed) is the same registration: nothing is left to import from it; close it: fleet dlq discard patient-import.ledger.${jonas} --reason`);
    const shownJonas = await fleet('imports', 'show', String(jonas));
    expect(shownJonas.stdout).toMatch(new RegExp(`This registration \\(same registration token\\) was imported by hand as import record ${handId} \\(patient \\d+; fleet imports show ${handId}\\)\\.`));
    expect(shownJonas.stdout).toContain(`close it: fleet dlq discard patient-import.ledger.${jonas} --reason`);
    expect(shownJonas.stdout).not.toContain('Upload a corrected file');
    expect(JSON.parse((await fleet('imports', 'show', String(jonas), '--json')).stdout).newerImport).toMatchObject({ id: handId, source: 'file', link: 'same-token' });

    // A failed upload whose content was never read (not JSON) has no token of its own: only the
    // token in the file names links it, and the hand import says to check it before the discard.
    const unread = await failedBucketRow('Beispiel_Lena_20250707_5f3a1c66.json', 'invalid_json', 'not JSON: Unexpected token at position 0');
    const lenaFile = path.join(dir, 'Beispiel_Lena_20250707_5f3a1c66.json');
    await writeFile(lenaFile, fileBytes(plainRegistration({ token: '5f3a1c66aa00bb11cc22dd33' })));
    const lenaByHand = await fleet('import', 'patient-file', lenaFile, '--json');
    expect(lenaByHand.code).toBe(0);
    expect(JSON.parse(lenaByHand.stdout)).toMatchObject({ failedBucketRecords: [unread], linkedByNameOnly: [unread] });
    const lenaAgain = await fleet('import', 'patient-file', lenaFile);
    expect(lenaAgain.stdout).toContain(`import record ${unread} (from the bucket, failed) is probably the same registration: the token in the two file names matches, its own content's token is not known (it failed before it was read); check it (fleet imports show ${unread}), then close it: fleet dlq discard patient-import.ledger.${unread} --reason`);

    // Discarded, the record says the file is still in the bucket (a discard deletes nothing), or
    // that a newer upload of the name replaced it.
    const discardedOnly = await failedBucketRow('E_F_20250707_5f3a1c90.json', 'validation_failed', 'patient_data.plz: expected 5 digits');
    await updateLedgerRow(db.db, discardedOnly, { status: 'discarded', discardedAt: new Date() });
    const shownKept = await fleet('imports', 'show', String(discardedOnly));
    expect(shownKept.stdout).toContain('Discarded. A discard deletes nothing: unless someone removed it by hand, the file is still in the bucket, with its personal data.');
    expect(shownKept.stdout).toContain('delete that generation by hand: gs://b/registrations/E_F_20250707_5f3a1c90.json, generation 1.');
    expect(JSON.parse((await fleet('imports', 'show', String(discardedOnly), '--json')).stdout)).toMatchObject({ bucketFile: 'left in the bucket' });
    await updateLedgerRow(db.db, bad, { status: 'discarded', discardedAt: new Date() });
    const shownSuperseded = await fleet('imports', 'show', String(bad));
    expect(shownSuperseded.stdout).toContain(`Discarded. A newer upload of this file name came since (import record ${corrected}, deleted; fleet imports show ${corrected}): it replaced this file in the bucket.`);
    expect(shownSuperseded.stdout).not.toContain('still in the bucket');

    const gaveUp = await failedBucketRow('C_D_20250707_5f3a1c89.json', 'worker_died', 'gave up after 2 attempts: the worker died');
    const shownGaveUp = await fleet('imports', 'show', String(gaveUp));
    expect(shownGaveUp.stdout).toContain(`After fixing the cause: fleet dlq requeue patient-import.ledger.${gaveUp} --reason`);
    expect(shownGaveUp.stdout).not.toContain('a requeue does not help');
  });
});

describe('fleet imports show of an id that is a record of the other kind', () => {
  it('says that record exists and how to show it, instead of a bare "no record"', { timeout: 90_000 }, async () => {
    await db.sql`insert into fleet.therapist_import_files (id, path, postcode, status, finished_at) values (9001, '52070.json', '52070', 'imported', now())`;
    const therapistOnly = await fleet('imports', 'show', '9001');
    expect({ code: therapistOnly.code, stderr: therapistOnly.stderr }).toEqual({
      code: 3,
      stderr: 'fleet: no patient import record 9001; therapist import record 9001 exists: fleet imports show 9001 --kind therapist\n',
    });
    const [id] = await insertLedgerObjects(db.db, [{ bucket: 'b', objectName: 'registrations/X_Y_20250705_1a2b3c4d.json', generation: '1', sourceUri: 'gs://b/registrations/X_Y_20250705_1a2b3c4d.json' }]);
    await db.sql`update fleet.patient_import_ledger set id = 9002 where id = ${id!}`;
    const patientOnly = await fleet('imports', 'show', '9002', '--kind', 'therapist');
    expect({ code: patientOnly.code, stderr: patientOnly.stderr }).toEqual({
      code: 3,
      stderr: 'fleet: no therapist import record 9002; patient import record 9002 exists: fleet imports show 9002\n',
    });
    const neither = await fleet('imports', 'show', '9003');
    expect({ code: neither.code, stderr: neither.stderr }).toEqual({ code: 3, stderr: 'fleet: no patient import record 9003\n' });
  });
});

describe('fleet imports list at its limit', () => {
  it('says the limit was reached and how to see more, and nothing of a limit when all records fit', { timeout: 90_000 }, async () => {
    await db.sql`insert into fleet.therapist_import_files (path, postcode, status, finished_at) values ('52060.json', '52060', 'imported', now()), ('52061.json', '52061', 'imported', now())`;
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from fleet.therapist_import_files`;
    const n = row!.n;
    const cut = await fleet('imports', 'list', '--kind', 'therapist', '--limit', '1');
    expect(cut.code).toBe(0);
    expect(cut.stdout).toContain('1 record(s), the newest: the limit (--limit 1) was reached and there are more; see more with --limit, e.g. fleet imports list --kind therapist --limit 100');
    const all = await fleet('imports', 'list', '--kind', 'therapist', '--limit', String(n));
    expect(all.stdout).toContain(`\n${n} record(s). Details: fleet imports show <id> --kind therapist\n`);
    expect(all.stdout).not.toContain('limit');
  });
});

describe('fleet imports list --kind therapist of failed and partial files', () => {
  it('marks those a later import of their postcode has replaced (nothing to do), in the table and the JSON', { timeout: 90_000 }, async () => {
    const [old] = await db.sql<{ id: string }[]>`insert into fleet.therapist_import_files (path, postcode, status, reason, finished_at) values ('20250901/52040.json', '52040', 'failed', 'boom', now()) returning id`;
    const [open] = await db.sql<{ id: string }[]>`insert into fleet.therapist_import_files (path, postcode, status, reason, finished_at) values ('20250901/52041.json', '52041', 'partial', '1 failed', now()) returning id`;
    const [later] = await db.sql<{ id: string }[]>`insert into fleet.therapist_import_files (path, postcode, status, finished_at) values ('20251008/52040.json', '52040', 'imported', now()) returning id`;
    const json = await fleet('imports', 'list', '--kind', 'therapist', '--status', 'failed,partial', '--json');
    const rows = JSON.parse(json.stdout) as Array<{ id: number; replacedBy: number | null }>;
    expect(rows.find((r) => r.id === Number(old!.id))).toMatchObject({ replacedBy: Number(later!.id) });
    expect(rows.find((r) => r.id === Number(open!.id))).toMatchObject({ replacedBy: null });
    const text = await fleet('imports', 'list', '--kind', 'therapist', '--status', 'failed,partial');
    expect(text.stdout).toMatch(new RegExp(`^${old!.id}\\s+failed\\s.*replaced by ${later!.id}: nothing to do`, 'm'));
    expect(text.stdout).not.toMatch(new RegExp(`^${open!.id}\\s.*replaced`, 'm'));
    expect(text.stdout).toMatch(/\n\d+ of them replaced since by a later import of the same postcode \(note "replaced by"\): nothing to do for those\.\n$/);
  });
});

describe('fleet import therapist-file of an older scrape than one imported', () => {
  // Staff: 20251008/10150.json imported, then 20250901/10150.json by hand wrote the September
  // phone over October's, "imported ... updated 1 of 1". The watcher's newest-folder rule holds here too.
  it('refuses it (exit 1) naming the newer import record and its date, and imports it with --force, saying so', { timeout: 120_000 }, async () => {
    const scraper = path.join(dir, 'scraper');
    const file = (date: string, phone: string) =>
      scraperFile([therapistLine({ id: 'b1', plz: '10150', phone, status: 'unchanged' })], { scrape_date: `${date}T03:00:00.000000`, postcode_area: '10XXX' });
    await mkdir(path.join(scraper, '20251008'), { recursive: true });
    await mkdir(path.join(scraper, '20250901'), { recursive: true });
    await writeFile(path.join(scraper, '20251008', '10150.json'), file('2025-10-08', '222'));
    await writeFile(path.join(scraper, '20250901', '10150.json'), file('2025-09-01', '000-old'));
    const phone = async () => (await db.sql<{ telefon: string }[]>`select telefon from therapist_service.therapeuten where plz = '10150'`).map((r) => r.telefon);

    const newer = await fleet('import', 'therapist-file', path.join(scraper, '20251008', '10150.json'));
    expect(newer.code).toBe(0);
    expect(await phone()).toEqual(['222']);
    const newerRow = (await therapistImportRepo.listFiles(db.db, { limit: 1000 })).find((f) => f.path === '20251008/10150.json');

    const older = await fleet('import', 'therapist-file', path.join(scraper, '20250901', '10150.json'));
    expect({ code: older.code, stdout: older.stdout }).toEqual({ code: 1, stdout: '' });
    expect(older.stderr).toBe(
      `fleet: ${path.join(scraper, '20250901', '10150.json')}: not imported: postcode 10150 has a newer scrape imported, import record ${newerRow!.id} (20251008/10150.json, scrape of 2025-10-08, imported); ` +
        `this file (scrape of 2025-09-01) would write older data over it. Details: fleet imports show ${newerRow!.id} --kind therapist. To import it all the same: --force\n`,
    );
    expect(await phone()).toEqual(['222']);

    // Outside the drop folder, without a date folder: the file's metadata scrape_date is its date.
    const loose = path.join(dir, '10150.json');
    await writeFile(loose, file('2025-09-02', '000-loose'));
    const looseRefused = await fleet('import', 'therapist-file', loose);
    expect(looseRefused.code).toBe(1);
    expect(looseRefused.stderr).toContain(`this file (scrape of 2025-09-02) would write older data over it`);
    expect(await phone()).toEqual(['222']);

    const forced = await fleet('import', 'therapist-file', path.join(scraper, '20250901', '10150.json'), '--force');
    expect(forced.code).toBe(0);
    expect(forced.stdout).toContain(`--force: imported over the newer scrape of import record ${newerRow!.id} (20251008/10150.json, scrape of 2025-10-08): its values are replaced by this file's older ones where they differ\n`);
    expect(await phone()).toEqual(['000-old']);
  });
});
