import * as repo from '../../libs/db/repositories/therapist-import.js';
import type { DeadLetterHook } from '../../libs/ops/dead-letters.js';
import { restoreMissingDeadLetters, therapistImportJobId } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';

/**
 * Dead-letter bookkeeping: requeue puts the file back to `queued`; discard leaves it `failed`,
 * marked as discarded (its dead letter is not restored after Redis lost its data). A file
 * imported before its job failed (killed twice after the commit: the crash drill) has a dead
 * letter with nothing left to do, and /ops and `fleet dlq list` say so.
 */
export const therapistImportDeadLetterHook: DeadLetterHook = {
  async requeueAdvice(payloads, db) {
    const ids = payloads.map((p) => {
      const fileId = (p as { fileId?: unknown } | null)?.fileId;
      return typeof fileId === 'number' ? fileId : null;
    });
    const statuses = await repo.fileStatuses(db, ids.filter((id): id is number => id !== null));
    return ids.map((fileId) => {
      const status = fileId === null ? undefined : statuses.get(fileId);
      if (status !== 'imported' && status !== 'partial') return undefined;
      const how = status === 'partial' ? ' (partial)' : '';
      return `File ${fileId} was imported${how} before its job failed: nothing is left to do. A requeue runs the job, which finds the file done and writes nothing; discard this dead letter.`;
    });
  },
  async onRequeue(payload, db) {
    const fileId = (payload as { fileId?: unknown }).fileId;
    if (typeof fileId === 'number') await repo.requeueFile(db, fileId);
  },
  async onDiscard(payload, db) {
    const fileId = (payload as { fileId?: unknown }).fileId;
    if (typeof fileId === 'number') await repo.markDeadLetterDiscarded(db, fileId, new Date());
  },
};

/**
 * Files that failed their job wait for an operator through their dead letter. When Redis
 * restarted without its data, the dead letters are gone while the files still say failed:
 * `fleet dlq` and /ops would offer nothing to requeue or discard. Each such file gets its dead
 * letter back (the reason the file's row holds: the job's error, no values from the file),
 * checked under the entry's lock against the row as it is then. Files an operator discarded
 * stay without, also when the discard is in the audit table only (an earlier release's), and a
 * file whose dead letter waits under an earlier release's job id (the content hash alone) gets
 * no second one. The watcher runs this every SCHEDULE_CHECK_MS; the usual case costs one query
 * (and one listing of the dead letters when files wait).
 */
export async function restoreTherapistDeadLetters(ctx: FleetContext): Promise<number> {
  const db = ctx.database.db;
  let files = await repo.filesAwaitingOperator(db);
  if (!files.length) return 0;
  // A discard the file does not record (an earlier release's) is in the audit table.
  if (await repo.markDiscardsFromAudit(db)) files = await repo.filesAwaitingOperator(db);
  const records = files.map((f) => ({
    entry: {
      originalQueue: 'therapist-import',
      originalJobId: therapistImportJobId(f.contentHash ?? 'none', f.id),
      name: 'therapist-import',
      data: { fileId: f.id },
      reason: f.reason ?? `file ${f.id}: failed (fleet imports show ${f.id} --kind therapist)`,
      code: f.errorCode,
      attemptsMade: f.attempts,
      enqueuedAt: null,
      failedAt: (f.finishedAt ?? f.discoveredAt).toISOString(),
    },
    stillWanted: () => repo.fileAwaitsOperator(db, f.id),
  }));
  // By the file, not the job id: a dead letter of an earlier release has the content hash alone.
  return restoreMissingDeadLetters(ctx.queues, 'therapist-import', records, (data) => (data as { fileId?: unknown } | null)?.fileId);
}
