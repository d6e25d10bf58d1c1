import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterSafePrefix, therapistImportJobId } from '../../libs/queues/index.js';
import { workerComponent, type FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { until } from '../../libs/testing/until.js';
import { scraperFile, therapistLine } from './fixtures.js';
import { startTherapistImportHarness } from './int-harness.js';
import { sha256 } from './process-therapist-file.js';
import { enqueueTherapistFile } from './enqueue.js';
import { therapistImportRepo as repo } from './index.js';
import { therapistImportHandlers } from './worker.js';

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ db, ctx, dir, close } = await startTherapistImportHarness('therapist-abandoned'));
});
afterAll(async () => {
  await close?.();
});

describe('a therapist file whose worker dies twice while importing it', () => {
  it('is recorded failed, its run closes with the staff summary, and it is not imported', async () => {
    const plz = '52070';
    const content = scraperFile([therapistLine({ plz, id: `praxis-${plz}` })], { postcode_area: plz });
    await writeFile(path.join(dir, `${plz}.json`), content);
    const runId = await repo.openRun(ctx.database.db, 'cli', 'sealed');
    const hash = sha256(Buffer.from(content));
    const { file } = await repo.registerFile(ctx.database.db, { runId, path: `${plz}.json`, postcode: plz, dateFolder: null, urgent: false, contentHash: hash, sizeBytes: content.length });
    await enqueueTherapistFile(ctx, file, { fresh: true });

    // A worker that takes the job and dies with it (it never renews its lock), twice: BullMQ
    // marks the job stalled too often, and the next worker to take it fails it without running it.
    const dying = new Worker('therapist-import', () => new Promise(() => {}), {
      connection: ctx.workerRedis(),
      prefix: clusterSafePrefix(ctx.config.queues.prefix),
      concurrency: 2,
      lockDuration: 300,
      stalledInterval: 150,
      skipLockRenewal: true,
    });
    const queue = ctx.queues.queue('therapist-import');
    const jobId = therapistImportJobId(hash, file.id);
    const worker = workerComponent(ctx, 'therapist-import', therapistImportHandlers(ctx));
    try {
      await until('job stalled more than allowed', async () => ((await queue.getJob(jobId))?.deferredFailure ? true : undefined));
      await worker.start();
      const row = await until('file failed', async () => {
        const r = await repo.getFile(ctx.database.db, file.id);
        return r && r.status === 'failed' ? r : undefined;
      });
      expect(row.reason).toMatch(/^import abandoned: its worker stopped before finishing it/);
      const run = await until('run closed', async () => {
        const r = await repo.getRun(ctx.database.db, runId);
        return r && r.state === 'closed' ? r : undefined;
      });
      expect(run.summaryDeliveryId).not.toBeNull();
      const events = await db.sql`select event_type, payload from fleet.outbox where event_type = 'import.failed' and key = ${String(file.id)}`;
      expect(events.map((e) => (e.payload as { errorCode: string }).errorCode)).toEqual(['worker_died']);
      expect(await db.sql`select id from therapist_service.therapeuten where plz = ${plz}`).toHaveLength(0);
      expect(await ctx.queues.queue('therapist-import-dlq').getJob(jobId.replaceAll(':', '.'))).toBeDefined();
    } finally {
      await worker.stop(5_000);
      await dying.close(true);
    }
  });
});
