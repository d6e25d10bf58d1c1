import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { discardOne, requeueOne } from '../../libs/ops/dead-letters.js';
import { listDeadLetters, schedulerStates, therapistImportJobId } from '../../libs/queues/index.js';
import { openContext, type Component } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { deleteQueueKeys, testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { notImportedOutcome, scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';
import { restoreTherapistDeadLetters, therapistImportComponents, therapistImportRepo } from '../../workers/therapist-import/index.js';
import { fileBytes, objectNameFor, plainRegistration } from '../../workers/patient-import/fixtures.js';
import { PREFIX, startOwnImportHarness, until, type ImportHarness } from '../../workers/patient-import/int-harness.js';
import { restoreDeadLetters, runPoll } from '../../workers/patient-import/index.js';
import { deadLetterHooks } from '../fleet/roles.js';
import { bucketPollerComponents } from './bucket-poller.js';
import { retentionComponents } from './retention-schedule.js';
import { scraperWatcherComponent } from './scraper-watcher.js';
import { watcherTestEnv } from './watcher-test-config.js';
import { weeklyScheduleComponent } from './weekly-schedule.js';

/**
 * Redis restarted without its data (no persistence, or a new instance) while the fleet runs:
 * the schedules, the queued jobs and the dead letters are gone, the import records are not.
 * The fleet must come back to a state operators can act on without a restart.
 */
let t: Awaited<ReturnType<typeof startOwnImportHarness>>;
let database: TestDatabase;
let h: ImportHarness;
let q: ReturnType<typeof testQueuePrefix>;
const started: Component[] = [];

beforeAll(async () => {
  t = await startOwnImportHarness({ SCHEDULE_CHECK_MS: '500' });
  ({ database, h, q } = t);
});
afterAll(() => t?.close(started));

async function ledgerOf(name: string) {
  const [r] = await database.sql`select id, status, error_code from fleet.patient_import_ledger where object_name = ${name}`;
  return r as { id: string; status: string; error_code: string | null } | undefined;
}

/** A registration file that is not JSON, polled: its record failed and its dead letter waiting. */
async function failedWithDeadLetter(file: string) {
  const bad = `${PREFIX}${file}`;
  h.put(bad, Buffer.from('{ not json'));
  await h.poll();
  await until(async () => (await ledgerOf(bad))?.status === 'failed', 20_000, 'the bad file failed');
  const id = Number((await ledgerOf(bad))!.id);
  const jobId = `patient-import.ledger.${id}`;
  await until(async () => (await listDeadLetters(h.ctx.queues)).some((d) => d.id === jobId), 20_000, 'its dead letter');
  return { bad, id, jobId };
}

describe('Redis comes back empty while the fleet runs', () => {
  it('registers the schedules again, polls, and gives failed imports their dead letters back (operators can discard them again)', async () => {
    await h.startWorkers();
    const components = [
      ...bucketPollerComponents(h.ctx),
      weeklyScheduleComponent(h.ctx),
      ...retentionComponents(h.ctx).filter((c) => c.name.endsWith('-schedule')),
    ];
    for (const c of components) {
      await c.start();
      started.push(c);
    }
    // A file that cannot be imported: failed, with its dead letter.
    const { bad, id, jobId } = await failedWithDeadLetter('Kaputt_Karl_20250705_0badf11e.json');

    // Redis loses everything of this fleet.
    await deleteQueueKeys(q.prefix);
    expect((await schedulerStates(h.ctx.queues)).filter((s) => s.registered)).toEqual([]);
    expect(await listDeadLetters(h.ctx.queues)).toEqual([]);
    // A registration uploaded meanwhile: only a poll (the hourly schedule is gone) would find it.
    const doc = plainRegistration();
    const good = objectNameFor(doc, PREFIX);
    h.put(good, fileBytes(doc));

    // Without a restart: the schedules are back, the restored poll imports the new file, and the
    // failed import has its dead letter again (reason without values from the file).
    await until(async () => (await schedulerStates(h.ctx.queues)).every((s) => s.registered), 20_000, 'all three schedules registered again');
    await until(async () => (await ledgerOf(good))?.status === 'deleted', 20_000, 'the new registration imported by the restored poll');
    const restored = await until(async () => (await listDeadLetters(h.ctx.queues)).find((d) => d.id === jobId), 20_000, 'the dead letter restored');
    expect(restored).toMatchObject({ originalQueue: 'patient-import', data: { ledgerId: id }, code: 'invalid_json' });
    expect(restored.reason).toContain(`ledger ${id}:`);

    // The operator's discard works on it as on any dead letter, and the record follows.
    await discardOne({ db: h.ctx.database.db, queues: h.ctx.queues, hooks: deadLetterHooks }, jobId, { actor: 'test', reason: 'restored after Redis lost its data' });
    expect((await ledgerOf(bad))?.status).toBe('discarded');
    // A later poll does not bring back what operators have handled.
    expect((await runPoll(h.ctx)).deadLettersRestored).toBe(0);
  });

  it('a poll elsewhere while an operator discards a dead letter does not bring it back', async () => {
    const { bad, jobId } = await failedWithDeadLetter('Kaputt_Kurt_20250705_0badf22e.json');
    // The discard's bookkeeping is slow; a poll on another process runs meanwhile.
    let restoredMeanwhile = -1;
    const hooks = {
      'patient-import': {
        async onDiscard(payload: unknown, db: typeof h.ctx.database.db) {
          restoredMeanwhile = await restoreDeadLetters(h.ctx);
          await deadLetterHooks['patient-import']!.onDiscard!(payload, db);
        },
      },
    };
    await discardOne({ db: h.ctx.database.db, queues: h.ctx.queues, hooks }, jobId, { actor: 'test', reason: 'a duplicate upload' });
    expect(restoredMeanwhile).toBe(0);
    expect((await ledgerOf(bad))?.status).toBe('discarded');
    expect((await listDeadLetters(h.ctx.queues)).some((d) => d.id === jobId)).toBe(false);
  });
});

/** A scraper watcher's context of its own (queue prefix, drop folder), checking its lease and its schedule often. */
async function watcherSetup() {
  const own = testQueuePrefix();
  const dropDir = await mkdtemp(path.join(tmpdir(), 'redis-loss-scraper-'));
  const ctx = openContext(
    loadConfig({
      ...watcherTestEnv({ databaseUrl: database.url, redisUrl: TEST_REDIS_URL, queuePrefix: own.prefix, dropDir }),
      SCRAPER_LEASE_CHECK_MS: '100',
      SCHEDULE_CHECK_MS: '500',
    }),
    silentLogger(),
  );
  /** Stops the components, closes the context and removes its keys and folder. */
  const teardown = async (components: Component[]) => {
    for (const c of components) await c.stop(5_000).catch(() => {});
    await ctx.close();
    await own.cleanup();
    await rm(dropDir, { recursive: true, force: true });
  };
  return { own, dropDir, ctx, teardown };
}

describe('Redis comes back empty while therapist files wait in the queue', () => {
  it('the active scraper watcher offers the unfinished files again: they are imported without a restart', async () => {
    const { own, dropDir, ctx, teardown } = await watcherSetup();
    const watcher = scraperWatcherComponent(ctx);
    const workers = therapistImportComponents(ctx);
    try {
      await watcher.start();
      // No import worker yet: the file waits in the queue, its row `queued`.
      await writeFile(path.join(dropDir, '52074.json'), scraperFile([therapistLine({ id: 'loss1' })]));
      const row = await until(async () => (await therapistImportRepo.listFiles(ctx.database.db)).find((f) => f.path === '52074.json' && f.status === 'queued'), 20_000, 'the file queued');
      await until(async () => (await ctx.queues.queue('therapist-import').count()) > 0, 10_000, 'its job waiting');
      await deleteQueueKeys(own.prefix);
      for (const w of workers) await w.start();
      const done = await until(async () => {
        const f = await therapistImportRepo.getFile(ctx.database.db, row.id);
        return f && f.status === 'imported' ? f : null;
      }, 20_000, 'the file imported after its job was lost');
      expect(done.counts).toMatchObject({ created: 1, total: 1 });
    } finally {
      await teardown([...workers.reverse(), watcher]);
    }
  });

  it('the active scraper watcher gives files that failed their job their dead letters back: requeue imports, a discard stays discarded', async () => {
    const { own, dropDir, ctx, teardown } = await watcherSetup();
    const db = ctx.database.db;
    const ops = { db, queues: ctx.queues, hooks: deadLetterHooks };
    const watcher = scraperWatcherComponent(ctx);
    const workers = therapistImportComponents(ctx);
    /** A file's row as the import leaves it when it gives up (out of retries) or when the file cannot be read. */
    const fail = (id: number, errorCode: string, reason: string) => therapistImportRepo.finishFile(db, id, notImportedOutcome(errorCode, reason));
    const deadLetterIds = async () => (await listDeadLetters(ctx.queues, { queue: 'therapist-import' })).map((d) => d.id).sort();
    const dlqIdOf = (f: { id: number; contentHash: string | null }) => therapistImportJobId(f.contentHash!, f.id).replaceAll(':', '.');
    try {
      await watcher.start();
      // No import worker: the watcher registers the files and they wait.
      for (const [name, id] of [['52074.json', 'gone1'], ['52075.json', 'gone2'], ['52076.json', 'gone3']] as const) {
        await writeFile(path.join(dropDir, name), scraperFile([therapistLine({ id, plz: name.slice(0, 5) })]));
      }
      const rows = await until(async () => {
        const fs = (await therapistImportRepo.listFiles(db)).filter((f) => f.status === 'queued' && f.path.startsWith('5207'));
        return fs.length === 3 ? fs.sort((a, b) => a.path.localeCompare(b.path)) : null;
      }, 20_000, 'the three files queued');
      const [gaveUp, unreadable, discarded] = rows as [(typeof rows)[0], (typeof rows)[0], (typeof rows)[0]];
      await fail(gaveUp.id, 'gave_up', 'import failed after retries: database error: connection terminated');
      await fail(unreadable.id, 'file_unreadable', `file ${unreadable.path}: not valid JSON: the file is empty`);
      await fail(discarded.id, 'worker_died', 'import abandoned: job stalled more than allowable limit');
      // A file imported by hand (a run of its own) failed in the operator's terminal: it never had a dead letter.
      const cliRun = await therapistImportRepo.openRun(db, 'cli', 'sealed');
      const { file: byHand } = await therapistImportRepo.registerFile(db, { runId: cliRun, path: '/tmp/52077.json', postcode: '52077', dateFolder: null, urgent: false, contentHash: 'c'.repeat(64), sizeBytes: 10 });
      await fail(byHand.id, 'gave_up', 'import failed after retries: database error: connection terminated');

      // Redis loses everything of this fleet: the dead letters of the two job failures are gone.
      await deleteQueueKeys(own.prefix);
      expect(await deadLetterIds()).toEqual([]);
      await until(async () => (await deadLetterIds()).length === 2, 20_000, 'the two dead letters restored by the watcher');
      expect(await deadLetterIds()).toEqual([dlqIdOf(gaveUp), dlqIdOf(discarded)].sort());
      const entry = (await listDeadLetters(ctx.queues, { queue: 'therapist-import' })).find((d) => d.id === dlqIdOf(gaveUp))!;
      expect(entry).toMatchObject({ originalQueue: 'therapist-import', data: { fileId: gaveUp.id }, code: 'gave_up', reason: 'import failed after retries: database error: connection terminated' });

      // The operator discards one: the file stays failed, marked, and its dead letter is not restored again.
      await discardOne(ops, dlqIdOf(discarded), { actor: 'test', reason: 'the scraper writes the area again next week' });
      const after = await therapistImportRepo.getFile(db, discarded.id);
      expect(after).toMatchObject({ status: 'failed', errorCode: 'worker_died' });
      expect(after!.deadLetterDiscardedAt).toBeInstanceOf(Date);
      await deleteQueueKeys(own.prefix);
      await until(async () => (await deadLetterIds()).length === 1, 20_000, 'the undiscarded dead letter restored again');
      expect(await restoreTherapistDeadLetters(ctx)).toBe(0);
      expect(await deadLetterIds()).toEqual([dlqIdOf(gaveUp)]);

      // The other is requeued: the file is imported as any requeued file.
      await requeueOne(ops, dlqIdOf(gaveUp), { actor: 'test', reason: 'the database is back' });
      for (const w of workers) await w.start();
      const done = await until(async () => {
        const f = await therapistImportRepo.getFile(db, gaveUp.id);
        return f && f.status === 'imported' ? f : null;
      }, 20_000, 'the requeued file imported');
      expect(done).toMatchObject({ errorCode: null, counts: { created: 1, total: 1 } });
      expect(await restoreTherapistDeadLetters(ctx)).toBe(0);
    } finally {
      await teardown([...workers.reverse(), watcher]);
    }
  });
});
