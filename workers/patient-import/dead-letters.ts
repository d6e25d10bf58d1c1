import { committedBucketRows, discardLedgerRow, failedBucketRows, newerImports, readImportHead, reopenFailedLedgerRow } from '../../libs/db/repositories/patient-import.js';
import type { DeadLetterHook } from '../../libs/ops/dead-letters.js';
import { jobIdFor, restoreMissingDeadLetters } from '../../libs/queues/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { deleteLeftNextStep, failureNextStep, failureRemedy, newerImportNextStep, requeueIsFutile } from './failure-remedy.js';

/**
 * Failed bucket rows wait for an operator through their dead letter. When Redis restarted
 * without its data, the dead letters are gone while the ledger still says failed: `fleet dlq`
 * and /ops would show nothing to requeue or discard. Each such row gets its dead letter back
 * (the reason without values from the file, as dead letters always carry it), checked under the
 * entry's lock against the row as it is then (an operator's requeue or discard in between wins).
 * The rows that have theirs, the usual case, cost one listing of the dead letters.
 */
export async function restoreDeadLetters(ctx: FleetContext): Promise<number> {
  const db = ctx.database.db;
  const records = (await failedBucketRows(db)).map((r) => ({
    entry: {
      originalQueue: 'patient-import',
      originalJobId: jobIdFor('patient-import', { ledgerId: r.id })!,
      name: 'patient-import',
      data: { ledgerId: r.id },
      reason: r.reasonWithheld ?? `ledger ${r.id}: (reason not shown here: fleet imports show ${r.id})`,
      code: r.errorCode,
      attemptsMade: r.attempts,
      enqueuedAt: null,
      failedAt: (r.failedAt ?? r.updatedAt).toISOString(),
    },
    stillWanted: async () => (await readImportHead(db, r.id))?.status === 'failed',
  }));
  return restoreMissingDeadLetters(ctx.queues, 'patient-import', records, (data) => (data as { ledgerId?: unknown } | null)?.ledgerId);
}

/**
 * Operator actions on dead-lettered imports keep the ledger in step. Before a requeue, /ops and
 * `fleet dlq list` say where it cannot help (the file's content or name is wrong, the object is
 * gone, or the registration was imported since): /ops offered the button with nothing said, and a
 * requeued file whose content is wrong was back a moment later. Such advice is `futile`: a requeue
 * is refused unless forced, and a requeue-all skips it.
 */
export const patientImportDeadLetterHook: DeadLetterHook = {
  async requeueAdvice(payloads, db) {
    const ids = payloads.map((p) => {
      const id = (p as { ledgerId?: unknown } | null)?.ledgerId;
      return typeof id === 'number' ? id : null;
    });
    const known = ids.filter((id): id is number => id !== null);
    const failed = new Map((await failedBucketRows(db, known)).map((r) => [r.id, r]));
    const committed = new Map((await committedBucketRows(db, known.filter((id) => !failed.has(id)))).map((r) => [r.id, r]));
    const newer = await newerImports(db, known.filter((id) => failed.has(id)));
    return ids.map((id) => {
      if (id === null) return undefined;
      const done = committed.get(id);
      if (done) return deleteLeftNextStep(done);
      const row = failed.get(id);
      if (!row) return undefined;
      const since = newer.get(row.id);
      if (since) return { text: newerImportNextStep(row, since), futile: true };
      const remedy = failureRemedy(row.errorCode);
      if (remedy === 'requeue') return undefined;
      // Content or name wrong, or the object gone: the requeued job fails the same way again (one more
      // import.failed event each time). Wrong settings or a too-small limit: a requeue helps once fixed.
      return { text: failureNextStep({ ...row, source: 'bucket' }), futile: requeueIsFutile(remedy) };
    });
  },
  async onRequeue(payload, db) {
    const ledgerId = (payload as { ledgerId?: number }).ledgerId;
    if (typeof ledgerId === 'number') await reopenFailedLedgerRow(db, ledgerId);
  },
  async onDiscard(payload, db) {
    const ledgerId = (payload as { ledgerId?: number }).ledgerId;
    if (typeof ledgerId === 'number') await discardLedgerRow(db, ledgerId);
  },
};
