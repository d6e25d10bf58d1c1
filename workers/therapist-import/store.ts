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
      db.transaction(async (tx) => {
        await repo.lockTherapistImport(tx);
        const api: ImportTx = {
          loadCandidates: (plzs, ids) => repo.loadCandidates(tx, plzs, ids),
          loadExternalIds: async (scope, keys) =>
            new Map((await repo.loadExternalIds(tx, scope, keys)).map((r) => [r.key, { therapistId: r.therapistId, deleted: r.deleted }])),
          insertTherapists: (rows, now) => repo.insertTherapists(tx, rows, now),
          updateTherapists: (updates, now) => repo.updateTherapists(tx, updates, now),
          deactivateTherapists: (ids, now) => repo.deactivateTherapists(tx, ids, now),
          upsertExternalIds: (scope, fileId, entries, now) => repo.upsertExternalIds(tx, scope, fileId, entries, now),
          appendEvents: (events) => appendEvents(tx, events),
          finishFile: (id, outcome) => repo.finishFile(tx, id, outcome),
          closeRunIfDrained: (runId, summarize) => repo.closeRunIfDrained(tx, runId, summarize),
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
      }),
  };
}
