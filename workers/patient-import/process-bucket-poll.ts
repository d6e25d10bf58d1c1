import type { Logger } from '../../libs/log/index.js';
import { StorageError, type BucketPort, type StoredObject } from '../../libs/storage/port.js';

export interface PollDeps {
  bucket: BucketPort;
  prefix: string;
  pageSize: number;
  /** Called after each page is recorded and enqueued, with the counts so far (`fleet poll` shows progress). */
  onPage?: (soFar: Readonly<PollResult>) => void;
  /**
   * Records object generations in the ledger; returns the ids of rows created by this call and the
   * statuses of the rows of objects recorded before (`known`).
   */
  record(objects: StoredObject[]): Promise<{ ids: number[]; known: string[] }>;
  /** Ledger rows from the bucket that still have work to do (crash recovery). */
  openIds(): Promise<number[]>;
  /**
   * Enqueues one `patient-import` job per ledger id (idempotent: keyed by the id). `open`:
   * rows found unfinished, whose earlier job may have completed too early (run again).
   */
  enqueue(ledgerIds: number[], kind: 'new' | 'open'): Promise<void>;
  /**
   * Gives failed rows whose dead letter Redis no longer has (it restarted without its data) a
   * dead letter again, so operators can requeue or discard them; returns how many.
   */
  restoreDeadLetters(): Promise<number>;
  log: Logger;
}

export interface PollResult {
  pages: number;
  listed: number;
  /** Folder placeholders (`registrations/`) and other non-files. */
  skipped: number;
  /** Local bucket: files still being copied in (changed less than LOCAL_BUCKET_SETTLE_MS ago), left for the next poll. */
  unsettled: number;
  /** New object generations recorded and enqueued. */
  recorded: number;
  /** Listed files recorded before whose import is still under way (or recorded by another poll at the same moment). */
  inProgress: number;
  /** Listed files whose import failed or was discarded: kept in the bucket (DOMAIN.md), listed at every poll. */
  leftFailed: number;
  /** Listed files whose record is final otherwise (imported, its bucket delete given up and discarded). */
  leftFinal: number;
  /** Unfinished rows offered to the queue again (no-ops for rows whose job is still there). */
  reoffered: number;
  /** Failed rows given back the dead letter Redis had lost. */
  deadLettersRestored: number;
}

const FINAL_OTHER = new Set(['deleted', 'superseded', 'done', 'replaced']);

/**
 * Lists the prefix page by page, records each new (bucket, object, generation) in the
 * ledger and enqueues one import per new row; then offers every unfinished row to the queue
 * again, so a crash between insert and enqueue (or anywhere later) loses nothing. A listing
 * error throws (the job retries); it is never taken for an empty bucket. Rows that failed
 * are not offered again: an operator requeues them, or a new generation is a new row; a failed
 * row whose dead letter Redis lost gets it back (the ledger is what counts).
 */
export async function pollBucket(deps: PollDeps): Promise<PollResult> {
  const result: PollResult = { pages: 0, listed: 0, skipped: 0, unsettled: 0, recorded: 0, inProgress: 0, leftFailed: 0, leftFinal: 0, reoffered: 0, deadLettersRestored: 0 };
  const enqueued = new Set<number>();
  const tokens = new Set<string>();
  let pageToken: string | undefined;
  do {
    const page = await deps.bucket.list(deps.prefix, { pageSize: deps.pageSize, ...(pageToken ? { pageToken } : {}) });
    result.pages++;
    result.listed += page.items.length;
    result.unsettled += page.unsettled ?? 0;
    const files = page.items.filter((o) => !o.name.endsWith('/'));
    result.skipped += page.items.length - files.length;
    const { ids, known } = await deps.record(files);
    // Every listed file is accounted for: new, under way, left failed/discarded, or final otherwise.
    const failedOrDiscarded = known.filter((s) => s === 'failed' || s === 'discarded').length;
    const final = known.filter((s) => FINAL_OTHER.has(s)).length;
    result.leftFailed += failedOrDiscarded;
    result.leftFinal += final;
    result.inProgress += files.length - ids.length - failedOrDiscarded - final;
    if (ids.length) {
      await deps.enqueue(ids, 'new');
      ids.forEach((id) => enqueued.add(id));
      result.recorded += ids.length;
    }
    deps.onPage?.(result);
    pageToken = page.nextPageToken;
    // A token given before would list the same pages again forever (the job never ends, and no later poll runs).
    if (pageToken !== undefined) {
      if (tokens.has(pageToken)) throw new StorageError('bad_response', 'listing returned a page token twice');
      tokens.add(pageToken);
    }
  } while (pageToken);

  const open = (await deps.openIds()).filter((id) => !enqueued.has(id));
  if (open.length) await deps.enqueue(open, 'open');
  result.reoffered = open.length;
  result.deadLettersRestored = await deps.restoreDeadLetters();
  if (result.deadLettersRestored) {
    deps.log.warn({ deadLettersRestored: result.deadLettersRestored }, 'failed imports had no dead letter (Redis lost its data?): dead letters restored from the import records');
  }
  deps.log.info({ ...result }, 'bucket polled');
  return result;
}
