import type { Logger } from '../../libs/log/index.js';
import { daysBefore, type Clock } from '../../libs/runtime/clock.js';


/** The deliveries side of the sweep (PostgreSQL in production). */
export interface ContentRetentionStore {
  /** Final deliveries past retention still holding their contents: `due` now, and the failed ones in `requeueable`. */
  countExpired(before: Date, requeueable: ReadonlySet<string>): Promise<{ due: number; requeueable: number }>;
  /** Blanks up to `limit` of the `due` ones (rows another sweep holds are skipped) and records `at`; returns how many. */
  removeBatch(q: { before: Date; requeueable: ReadonlySet<string>; limit: number; at: Date }): Promise<number>;
}

export interface ContentRetentionDeps {
  store: ContentRetentionStore;
  /**
   * Deliveries named by a waiting `email-send` dead letter: an operator can still requeue them. (The
   * store keeps a failed one whose discard is not recorded as well: Redis may have lost its dead letter.)
   */
  deadLettered(): Promise<ReadonlySet<string>>;
  /** EMAIL_RETENTION_DAYS; 0: contents are kept forever. */
  days: number;
  clock: Clock;
  log: Logger;
  batchSize?: number;
  /** Deliveries blanked (metrics). */
  onRemoved?: (n: number) => void;
}

/** Counts only: subjects and bodies name patients. */
export interface ContentRetentionResult {
  retentionDays: number;
  /** Dry run: deliveries past retention whose contents a sweep would remove now. */
  due?: number;
  /** Deliveries whose subject, body and headers were removed (recorded in contents_removed_at). */
  removed: number;
  /** Failed deliveries past retention kept whole because their dead letter waits for an operator's requeue or discard. */
  keptForDeadLetters: number;
}

/**
 * The retention sweep of email contents: deliveries that are final (sent, failed, dropped) and
 * whose last change is older than EMAIL_RETENTION_DAYS lose their subject, HTML, text and headers;
 * the row stays (idempotency key, status, recipient, times), so "one email per key" still holds
 * and staff can still tell who got what when. Pending and sending deliveries are never touched,
 * nor a failed one whose dead letter still waits (`fleet dlq requeue` sends it again and needs
 * it); after a discard it goes the next night. In batches, each its own statement with `SKIP
 * LOCKED`: two sweeps at once share the rows, a second run finds nothing.
 */
export async function sweepEmailContents(deps: ContentRetentionDeps, opts: { dryRun?: boolean } = {}): Promise<ContentRetentionResult> {
  const result: ContentRetentionResult = { retentionDays: deps.days, removed: 0, keptForDeadLetters: 0 };
  if (deps.days <= 0) return result;
  const now = deps.clock.now();
  const before = daysBefore(now, deps.days);
  // Read before the rows: a dead letter of an old failed delivery never appears later (a
  // requeue that fails again is a new change, so the row is recent again).
  const requeueable = await deps.deadLettered();
  if (!opts.dryRun) {
    const limit = deps.batchSize ?? 500;
    for (;;) {
      const n = await deps.store.removeBatch({ before, requeueable, limit, at: now });
      result.removed += n;
      if (n) deps.onRemoved?.(n);
      if (n < limit) break;
    }
  }
  const left = await deps.store.countExpired(before, requeueable);
  if (opts.dryRun) result.due = left.due;
  result.keptForDeadLetters = left.requeueable;
  deps.log.info({ dryRun: !!opts.dryRun, ...result }, 'retention sweep of email contents finished');
  return result;
}
