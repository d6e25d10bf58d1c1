import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requeueOne } from '../../libs/ops/dead-letters.js';
import { addDeadLetter, listDeadLetters, therapistImportJobId } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { workerComponent } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { until } from '../../libs/testing/until.js';
import { startTherapistImportHarness } from './int-harness.js';
import { scraperFile, therapistLine } from './fixtures.js';
import { sha256 } from './process-therapist-file.js';
import { therapistImportDeadLetterHook } from './dead-letters.js';
import { enqueueTherapistFile } from './enqueue.js';
import { therapistImportRepo as repo } from './index.js';
import { therapistImportHandlers } from './worker.js';

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ db, ctx, dir, close } = await startTherapistImportHarness('therapist-dlq', { RETRY_BACKOFF_SCALE: '0.001' }));
});
afterAll(async () => {
  await close?.();
});

describe('operator requeue of a dead-lettered therapist file', () => {
  it('an idle worker takes the job at once: it finds the row reopened and imports the file', async () => {
    const worker = workerComponent(ctx, 'therapist-import', therapistImportHandlers(ctx));
    await worker.start();
    try {
      const statuses: string[] = [];
      for (let i = 0; i < 3; i++) {
        const plz = String(52060 + i);
        const content = scraperFile([therapistLine({ plz, id: `praxis-${plz}` })], { postcode_area: plz });
        await writeFile(path.join(dir, `${plz}.json`), content);
        const runId = await repo.openRun(ctx.database.db, 'cli', 'sealed');
        const hash = sha256(Buffer.from(content));
        const { file } = await repo.registerFile(ctx.database.db, { runId, path: `${plz}.json`, postcode: plz, dateFolder: null, urgent: false, contentHash: hash, sizeBytes: content.length });
        // As after the last attempt failed (say, PostgreSQL was away): the row failed, a dead letter waits.
        await db.sql`update fleet.therapist_import_files set status = 'failed', reason = 'import failed after retries: connection refused' where id = ${file.id}`;
        const jobId = therapistImportJobId(hash, file.id);
        await addDeadLetter(ctx.queues, {
          originalQueue: 'therapist-import',
          originalJobId: jobId,
          name: 'therapist-import',
          data: { fileId: file.id },
          reason: 'connection refused',
          code: null,
          attemptsMade: 5,
          enqueuedAt: null,
          failedAt: new Date().toISOString(),
        });

        const r = await requeueOne({ db: ctx.database.db, queues: ctx.queues, hooks: { 'therapist-import': therapistImportDeadLetterHook } }, jobId, { actor: 'ops-anna', reason: 'database back' });
        expect(r.state).toBe('requeued');
        await until('the requeued job completed', async () => (await (await ctx.queues.queue('therapist-import').getJob(jobId))?.getState()) === 'completed');
        const row = (await repo.getFile(ctx.database.db, file.id))!;
        statuses.push(`${row.status}/${row.attempts}`);
      }
      // Not `queued` with a completed job (stuck until the watcher restarts, the run never closes).
      expect(statuses).toEqual(['imported/1', 'imported/1', 'imported/1']);
      expect(await listDeadLetters(ctx.queues)).toEqual([]);
    } finally {
      await worker.stop(5_000);
    }
  });

  it('a file of a closed run imported after a requeue: the run totals follow its files and staff get a follow-up summary', async () => {
    const plz = '52063';
    const content = scraperFile([therapistLine({ plz, id: 'praxis-a', first: 'Anna' }), therapistLine({ plz, id: 'praxis-b', first: 'Bea' })], { postcode_area: plz });
    await writeFile(path.join(dir, `${plz}.json`), content);
    // Every write of this file fails until the operator fixes the cause (here: a constraint).
    await db.sql`alter table therapist_service.therapeuten add constraint test_blocks_52063 check (plz <> '52063')`;
    const runId = await repo.openRun(ctx.database.db, 'watcher', 'sealed');
    const hash = sha256(Buffer.from(content));
    const { file } = await repo.registerFile(ctx.database.db, { runId, path: `${plz}.json`, postcode: plz, dateFolder: null, urgent: false, contentHash: hash, sizeBytes: content.length });
    const jobId = therapistImportJobId(hash, file.id);
    const worker = workerComponent(ctx, 'therapist-import', therapistImportHandlers(ctx));
    await worker.start();
    try {
      await enqueueTherapistFile(ctx, file, { fresh: true });
      const failedRun = await until('run closed with the file failed', async () => {
        const r = await repo.getRun(ctx.database.db, runId);
        return r && r.state === 'closed' && r.summaryDeliveryId ? r : undefined;
      }, 60_000);
      expect(failedRun.fileStatusCounts).toEqual({ failed: 1 });
      await until('dead letter', async () => (await listDeadLetters(ctx.queues)).some((d) => d.originalJobId === jobId) || undefined);
      const [first] = await db.sql<Array<{ subject: string }>>`select subject from fleet.deliveries where id = ${failedRun.summaryDeliveryId!}`;
      expect(first!.subject).toBe(`Therapeuten-Import Lauf ${runId}: 1 Datei nicht importiert`);

      await db.sql`alter table therapist_service.therapeuten drop constraint test_blocks_52063`;
      const r = await requeueOne({ db: ctx.database.db, queues: ctx.queues, hooks: { 'therapist-import': therapistImportDeadLetterHook } }, jobId, { actor: 'ops-anna', reason: 'constraint fixed' });
      expect(r.state).toBe('requeued');
      const row = await until('file imported', async () => {
        const f = await repo.getFile(ctx.database.db, file.id);
        return f?.status === 'imported' ? f : undefined;
      });
      expect(row.counts).toMatchObject({ total: 2, created: 2, fileErrors: 0 });
      // The run page, `fleet imports runs` and the daily view read the run's stored totals: they must be the file's now.
      const run = await until('run closed again', async () => {
        const x = await repo.getRun(ctx.database.db, runId);
        return x?.state === 'closed' && x.summaryDeliveryId !== failedRun.summaryDeliveryId ? x : undefined;
      });
      expect(run.fileStatusCounts).toEqual({ imported: 1 });
      expect(run.counts).toMatchObject({ total: 2, created: 2, failed: 0, fileErrors: 0 });
      // Staff were told the file was not imported: a follow-up tells them it is now, once.
      const summaries = await db.sql<Array<{ id: string; subject: string; text: string }>>`
        select id, subject, text from fleet.deliveries
        where idempotency_key = ${`therapist-import.run.${runId}`} or idempotency_key like ${`therapist-import.run.${runId}.%`} order by created_at`;
      expect(summaries.map((s) => s.id)).toEqual([failedRun.summaryDeliveryId, run.summaryDeliveryId]);
      expect(summaries[1]!.subject).toBe(`Therapeuten-Import Lauf ${runId} (Nachtrag): 1 Datei, 2 Therapeuten, ohne Fehler`);
      expect(summaries[1]!.text).toContain('Nachtrag: Nach einem Fehlschlag wurde eine Datei dieses Laufs erneut verarbeitet.');
    } finally {
      await worker.stop(5_000);
    }
  });
});
