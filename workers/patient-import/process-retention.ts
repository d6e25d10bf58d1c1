import type { LocalCopy } from '../../libs/db/repositories/patient-import.js';
import type { Logger } from '../../libs/log/index.js';
import { daysBefore, type Clock } from '../../libs/runtime/clock.js';
import type { RemoveOutcome } from './file-keeper.js';

export const localCopies: readonly LocalCopy[] = ['backup', 'failed'];

/** The ledger side of the retention sweep (PostgreSQL in production). */
export interface RetentionStore {
  /** Up to `limit` copies of `copy` on final rows that finished before `finishedBefore`, not yet removed, by id after `afterId` (the dry run). */
  listExpired(copy: LocalCopy, q: { finishedBefore: Date; afterId: number; limit: number }): Promise<Array<{ id: number; path: string }>>;
  /**
   * One batch of such rows after `afterId`, held for this call only (rows another sweep holds are
   * skipped); the ids `remove` returns are recorded as removed at `at`.
   */
  sweepBatch(
    copy: LocalCopy,
    q: { finishedBefore: Date; afterId: number; limit: number; at: Date },
    remove: (rows: Array<{ id: number; path: string }>) => Promise<number[]>,
  ): Promise<{ rows: number; lastId: number | null; recorded: number }>;
}

export interface RetentionDeps {
  store: RetentionStore;
  /** Removes the copies of a batch from its folder (BACKUP_DIR or FAILED_DIR), durably. */
  remove: Record<LocalCopy, (rows: Array<{ id: number; path: string }>) => Promise<RemoveOutcome[]>>;
  /** Whether the path a row records is its copy in that folder, as `remove` decides it (else `not_in_folder`): the dry run counts alike. */
  isOwnCopy: Record<LocalCopy, (row: { id: number; path: string }) => boolean>;
  /** Days a copy is kept after its row became final; 0: forever. */
  days: Record<LocalCopy, number>;
  clock: Clock;
  log: Logger;
  batchSize?: number;
  /** Copies recorded as removed (metrics). */
  onRecorded?: (copy: LocalCopy, n: number) => void;
}

/** Counts only: file names contain patient names. */
export interface CopyCounts {
  retentionDays: number;
  /** Dry run: copies past retention that a sweep would remove now (rows it would leave alone are in `notInFolder`). */
  due?: number;
  /** Files removed and recorded. */
  removed: number;
  /** Files already gone, recorded as removed. */
  alreadyGone: number;
  /** Rows whose path is not a copy of theirs in the folder (the folder moved?): left alone, not recorded. */
  notInFolder: number;
  /** Files that could not be removed (left for the next sweep). */
  failed: number;
}

export interface RetentionResult {
  dryRun: boolean;
  backup: CopyCounts;
  failed: CopyCounts;
  /** Why files could not be removed: error code, operation and folder, once each (no file names). */
  problems: string[];
}

/**
 * The retention sweep: removes the durable copies (BACKUP_DIR) and failed-folder copies
 * (FAILED_DIR) of rows that have been final (deleted, superseded, done, replaced, discarded)
 * for longer than their retention, and records each removal on the row. Open rows and failed
 * rows waiting for an operator are never touched (a retry may need their copy). Batches hold
 * their rows only while their files are removed, so two sweeps at once share the work; a second
 * sweep finds nothing left. A file that cannot be removed is counted and left for the next sweep
 * (`problems` says why; the caller decides whether that fails the run).
 */
export async function sweepRetention(deps: RetentionDeps, opts: { dryRun?: boolean } = {}): Promise<RetentionResult> {
  const now = deps.clock.now();
  const limit = deps.batchSize ?? 200;
  const problems = new Set<string>();
  const result: RetentionResult = { dryRun: !!opts.dryRun, backup: empty(deps.days.backup), failed: empty(deps.days.failed), problems: [] };
  for (const copy of localCopies) {
    const counts = result[copy];
    if (counts.retentionDays <= 0) continue;
    const finishedBefore = daysBefore(now, counts.retentionDays);
    if (opts.dryRun) {
      // The rows the real run would take, sorted as it sorts them: what it would leave alone is not "due".
      counts.due = 0;
      for (let afterId = 0; ; ) {
        const rows = await deps.store.listExpired(copy, { finishedBefore, afterId, limit });
        for (const r of rows) {
          if (deps.isOwnCopy[copy](r)) counts.due++;
          else counts.notInFolder++;
        }
        if (rows.length < limit) break;
        afterId = rows[rows.length - 1]!.id;
      }
      continue;
    }
    let afterId = 0;
    for (;;) {
      const batch = await deps.store.sweepBatch(copy, { finishedBefore, afterId, limit, at: now }, async (rows) => {
        const outcomes = await deps.remove[copy](rows);
        const gone: number[] = [];
        outcomes.forEach((o, i) => {
          if (o === 'removed' || o === 'missing') {
            gone.push(rows[i]!.id);
            if (o === 'removed') counts.removed++;
            else counts.alreadyGone++;
          } else if (o === 'not_in_folder') counts.notInFolder++;
          else {
            counts.failed++;
            problems.add(o.message);
          }
        });
        return gone;
      });
      if (batch.recorded) deps.onRecorded?.(copy, batch.recorded);
      if (batch.rows < limit || batch.lastId === null) break;
      afterId = batch.lastId;
    }
  }
  result.problems = [...problems];
  const level = result.problems.length || result.backup.notInFolder || result.failed.notInFolder ? 'warn' : 'info';
  deps.log[level]({ dryRun: result.dryRun, backup: result.backup, failed: result.failed, problems: result.problems }, 'retention sweep of local registration copies finished');
  return result;
}

function empty(retentionDays: number): CopyCounts {
  return { retentionDays, removed: 0, alreadyGone: 0, notInFolder: 0, failed: 0 };
}
