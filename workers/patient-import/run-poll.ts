import { openLedgerIds, recordLedgerObjects } from '../../libs/db/repositories/patient-import.js';
import { recordBucketPollSuccess } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { createBucket, type BucketPort } from '../../libs/storage/index.js';
import { restoreDeadLetters } from './dead-letters.js';
import { enqueueImports } from './enqueue.js';
import { pollBucket, type PollDeps, type PollResult } from './process-bucket-poll.js';

/**
 * Lists the bucket once and enqueues the imports (the `bucket-poll` job and `fleet poll`); a poll
 * that went through is recorded as the last successful one.
 */
export async function runPoll(ctx: FleetContext, opts: { bucket?: BucketPort; onPage?: PollDeps['onPage'] } = {}): Promise<PollResult> {
  const bucket = opts.bucket ?? createBucket(ctx.config.storage);
  const db = ctx.database.db;
  const result = await pollBucket({
    bucket,
    prefix: ctx.config.storage.prefix,
    pageSize: ctx.config.patientImport.pageSize,
    ...(opts.onPage ? { onPage: opts.onPage } : {}),
    record: (objects) =>
      recordLedgerObjects(
        db,
        objects.map((o) => ({
          bucket: o.bucket,
          objectName: o.name,
          generation: o.generation,
          sourceUri: bucket.uri(o.name),
          size: o.size,
          md5Hash: o.md5Hash ?? null,
          crc32c: o.crc32c ?? null,
        })),
      ),
    openIds: () => openLedgerIds(db, { source: 'bucket' }),
    enqueue: (ids, kind) => enqueueImports(ctx, ids, kind),
    restoreDeadLetters: () => restoreDeadLetters(ctx),
    log: ctx.log,
  });
  await recordBucketPollSuccess(ctx.queues, ctx.clock.now());
  return result;
}
