import type { Database } from '../../libs/db/client.js';
import * as repo from '../../libs/db/repositories/therapist-import.js';
import { claimFile, isConcurrentChange, openImportSession, therapistIdPool } from '../../libs/db/repositories/therapist-import-session.js';
import { outboxEnvelopes } from '../../libs/events/append-many.js';
import { appendEvent } from '../../libs/events/index.js';
import { withoutQueryData } from '../../libs/errors/index.js';
import type { ImportTx, TherapistImportStore } from './process-therapist-file.js';

export interface SummaryAddress {
  from: string;
  to: string;
}

/** The PostgreSQL implementation of the import's store port (one transaction per file). */
export function postgresTherapistImportStore(database: Database, mail: SummaryAddress): TherapistImportStore {
  const { db } = database;
  // New therapists' ids in blocks of 500: one round trip per five files of a first import instead of one per file.
  const ids = therapistIdPool(database.sql, 500);
  return {
    getFile: (id) => repo.getFile(db, id),
    markImporting: (id, now) => claimFile(database.sql, id, now),
    isConcurrentChange,
    async openSession(lockKeys, load, claim) {
      const s = await openImportSession(database.sql, { keys: lockKeys }, load, ids, claim);
      return {
        claimed: s.claimed,
        externalIds: new Map(s.externalIds.map((r) => [r.key, { therapistId: r.therapistId, deleted: r.deleted }])),
        candidates: s.candidates,
        reserveIds: (n) => s.reserveIds(n),
        commit: ({ events, ...writes }) => s.commit({ ...writes, events: outboxEnvelopes(events) }),
        rollback: () => s.rollback(),
      };
    },
    // A failed query's error carries its parameters (names, emails of therapists): rethrown
    // with the database's own message and code only (`withoutQueryData`), so nothing personal
    // reaches the logs or the dead-letter queue.
    transaction: (fn) =>
      db
        .transaction(async (tx) => {
          const api: ImportTx = {
            appendEvent: async (event) => {
              await appendEvent(tx, event);
            },
            finishFile: (id, outcome) => repo.finishFile(tx, id, outcome),
            closeRunIfDrained: (runId, summarize) => repo.closeRunIfDrained(tx, runId, summarize),
            async queueSummary(runId, message, followUpOf) {
              const { id } = await repo.queueDelivery(tx, {
                idempotencyKey: followUpOf ? `therapist-import.run.${runId}.closed.${followUpOf.toISOString()}` : `therapist-import.run.${runId}`,
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
        })
        .catch((err: unknown) => {
          throw withoutQueryData(err);
        }),
  };
}
