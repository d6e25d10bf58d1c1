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
import { therapistImportDeadLetterHook, therapistImportHandlers, therapistImportRepo as repo } from './worker.js';

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ db, ctx, dir, close } = await startTherapistImportHarness('therapist-dlq'));
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
});
