import type { Database } from '../../libs/db/client.js';
import * as repo from '../../libs/db/repositories/therapist-import.js';
import { appendEvents } from '../../libs/events/append-many.js';
import type { ImportTx, TherapistImportStore } from './process-therapist-file.js';

export interface SummaryAddress {
  from: string;
  to: string;
}

/** The PostgreSQL implementation of the import's store port (one transaction per file, serialised). */
export function postgresTherapistImportStore(database: Database, mail: SummaryAddress): TherapistImportStore {
  const { db } = database;
  return {
    getFile: (id) => repo.getFile(db, id),
    markImporting: (id, now) => repo.markImporting(db, id, now),
    transaction: (fn) =>
      withoutQueryParams(() => db.transaction(async (tx) => {
        const api: ImportTx = {
          lock: (keys) => repo.lockTherapistImport(tx, keys),
          async loadMatchData(scope, keys, plzs) {
            const { externalIds, candidates } = await repo.loadMatchData(tx, scope, keys, plzs);
            return { externalIds: new Map(externalIds.map((r) => [r.key, { therapistId: r.therapistId, deleted: r.deleted }])), candidates };
          },
          insertTherapists: (rows, now) => repo.insertTherapists(tx, rows, now),
          updateTherapists: (updates, now) => repo.updateTherapists(tx, updates, now),
          deactivateTherapists: (ids, now) => repo.deactivateTherapists(tx, ids, now),
          upsertExternalIds: (scope, fileId, entries, now) => repo.upsertExternalIds(tx, scope, fileId, entries, now),
          appendEvents: (events) => appendEvents(tx, events),
          finishFile: (id, outcome) => repo.finishFile(tx, id, outcome),
          closeRunIfDrained: (runId, summarize, finishingFileId) => repo.closeRunIfDrained(tx, runId, summarize, finishingFileId),
          async queueSummary(runId, message) {
            const { id } = await repo.queueDelivery(tx, {
              idempotencyKey: `therapist-import.run.${runId}`,
              kind: 'therapist-import-summary',
              toAddress: mail.to,
              fromAddress: mail.from,
              ...message,
            });
            await repo.setRunSummaryDelivery(tx, runId, id);
            return id;
          },
        };
        return fn(api);
      })),
  };
}

/**
 * A failed query's error carries its parameters (names, emails of therapists): rethrow it
 * with the database's own message and code only, so nothing personal reaches the logs or
 * the dead-letter queue.
 */
async function withoutQueryParams<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    if (err instanceof Error && 'params' in err && cause instanceof Error) {
      const clean = new Error(`database error: ${cause.message}`);
      (clean as Error & { code?: unknown }).code = (cause as { code?: unknown }).code;
      throw clean;
    }
    throw err;
  }
}
