import type { Db } from '../../libs/db/client.js';
import { queueDelivery } from '../../libs/db/repositories/deliveries.js';
import {
  findConsentByToken,
  findPatientByZahlungsreferenz,
  findPatientsByEmail,
  getLedgerRow,
  insertConsent,
  insertPatient,
  lockImportKeys,
  startLedgerAttempt,
  updateLedgerRow,
  type LedgerRow,
} from '../../libs/db/repositories/patient-import.js';
import { PermanentError } from '../../libs/errors/index.js';
import { appendEvent } from '../../libs/events/index.js';
import type { Clock } from '../../libs/runtime/clock.js';
import { normalise } from './map-patient.js';
import type { CommitInput, CommitOutcome, CommitResult, ImportRow, ImportStore } from './ports.js';

export interface PgStoreOptions {
  db: Db;
  clock: Clock;
  mail: { from: string; staffEmail: string };
}

function toRow(r: LedgerRow): ImportRow {
  return {
    id: r.id,
    source: r.source,
    bucket: r.bucket,
    objectName: r.objectName,
    generation: r.generation,
    sourceUri: r.sourceUri,
    md5Hash: r.md5Hash,
    status: r.status,
    attempts: r.attempts,
    patientId: r.patientId,
    duplicateOfPatientId: r.duplicateOfPatientId,
    backupPath: r.backupPath,
    failedPath: r.failedPath,
    receivedAt: r.receivedAt,
  };
}

export const importMailKeys = {
  imported: (ledgerId: number) => `patient-import.staff.ledger.${ledgerId}`,
  failed: (ledgerId: number) => `patient-import.failed.ledger.${ledgerId}`,
};

/** The import ledger and the import transaction on PostgreSQL. */
export function pgImportStore(opts: PgStoreOptions): ImportStore {
  const { db, clock } = opts;
  return {
    async startAttempt(id) {
      const r = await startLedgerAttempt(db, id, clock.now());
      if (!r) throw new PermanentError('ledger_missing', `ledger ${id}: no such import record`);
      return toRow(r);
    },
    async markBackedUp(id, info) {
      const at = clock.now();
      await updateLedgerRow(db, id, { status: 'backed_up', downloadedAt: at, backedUpAt: at, backupPath: info.backupPath, sha256: info.sha256, size: info.size });
    },
    async commit(input: CommitInput): Promise<CommitResult> {
      const at = clock.now();
      const p = input.patient;
      const email = p.email ? normalise(p.email) : null;
      return db.transaction(async (tx) => {
        await lockImportKeys(tx, [
          `patient-import:token:${input.registrationToken}`,
          `patient-import:ref:${p.zahlungsreferenz}`,
          ...(email ? [`patient-import:email:${email}`] : []),
        ]);
        const current = await getLedgerRow(tx, input.ledgerId);
        if (!current) throw new PermanentError('ledger_missing', `ledger ${input.ledgerId}: no such import record`);
        if (current.status === 'imported' || current.status === 'duplicate' || current.status === 'deleted' || current.status === 'superseded' || current.status === 'done') {
          // Committed by an earlier run of this row (a retry after a crash): nothing to do twice.
          const outcome: CommitOutcome =
            current.status === 'duplicate'
              ? { kind: 'duplicate', duplicateKind: (current.duplicateKind as 'same_token' | 'same_person') ?? 'same_token', patientId: current.duplicateOfPatientId! }
              : { kind: 'imported', patientId: current.patientId!, possibleDuplicateOf: current.possibleDuplicateOfPatientId };
          return { outcome, deliveryIds: [] };
        }

        let outcome: CommitOutcome;
        const sameToken = await findConsentByToken(tx, input.registrationToken);
        if (sameToken) {
          outcome = { kind: 'duplicate', duplicateKind: 'same_token', patientId: sameToken.patientId };
        } else {
          const sameEmail = email ? await findPatientsByEmail(tx, email) : [];
          const samePerson = sameEmail.find((c) => normalise(c.vorname) === normalise(p.vorname) && normalise(c.nachname) === normalise(p.nachname));
          if (samePerson) {
            outcome = { kind: 'duplicate', duplicateKind: 'same_person', patientId: samePerson.id };
          } else {
            const taken = await findPatientByZahlungsreferenz(tx, p.zahlungsreferenz);
            if (taken) {
              throw new PermanentError(
                'zahlungsreferenz_taken',
                `registration_token: its payment reference ${p.zahlungsreferenz} is already used by patient ${taken.id} (another registration)`,
              );
            }
            const patientId = await insertPatient(tx, p, at);
            outcome = { kind: 'imported', patientId, possibleDuplicateOf: sameEmail[0]?.id ?? null };
          }
        }

        if (!(outcome.kind === 'duplicate' && outcome.duplicateKind === 'same_token')) {
          await insertConsent(tx, {
            patientId: outcome.patientId,
            ledgerId: input.ledgerId,
            registrationToken: input.registrationToken,
            registrationTimestamp: input.registrationTimestamp,
            ipAddress: typeof input.consent.ip_address === 'string' ? input.consent.ip_address : null,
            userAgent: typeof input.consent.user_agent === 'string' ? input.consent.user_agent : null,
            consentedAt: typeof input.consent.timestamp_utc === 'string' ? new Date(input.consent.timestamp_utc) : null,
            voucherBooking: input.consent.voucher_booking === true,
            metadata: input.consent,
            signed: input.signed,
          });
        }
        if (outcome.kind === 'imported') {
          await appendEvent(tx, {
            eventType: 'patient.created',
            key: outcome.patientId,
            payload: { patientId: outcome.patientId, importId: input.ledgerId, source: 'registration' },
            occurredAt: at,
          });
        }

        const deliveryIds: string[] = [];
        const mail = input.staffMail(outcome);
        let staffDeliveryId: string | null = null;
        if (mail) {
          const d = await queueDelivery(tx, {
            idempotencyKey: importMailKeys.imported(input.ledgerId),
            kind: outcome.kind === 'imported' ? 'staff.patient-imported' : 'staff.patient-duplicate',
            toAddress: opts.mail.staffEmail,
            fromAddress: opts.mail.from,
            ...mail,
            patientId: outcome.patientId,
          });
          staffDeliveryId = d.id;
          if (d.created) deliveryIds.push(d.id);
        }

        await updateLedgerRow(tx, input.ledgerId, {
          status: outcome.kind,
          importedAt: at,
          patientId: outcome.kind === 'imported' ? outcome.patientId : null,
          duplicateOfPatientId: outcome.kind === 'duplicate' ? outcome.patientId : null,
          duplicateKind: outcome.kind === 'duplicate' ? outcome.duplicateKind : null,
          possibleDuplicateOfPatientId: outcome.kind === 'imported' ? outcome.possibleDuplicateOf : null,
          unknownFields: input.unknownFields,
          validation: input.validation,
          staffDeliveryId,
          reason: null,
          errorCode: null,
        });
        return { outcome, deliveryIds };
      });
    },
    async markFailed(input) {
      const at = clock.now();
      return db.transaction(async (tx) => {
        const d = await queueDelivery(tx, {
          idempotencyKey: importMailKeys.failed(input.ledgerId),
          kind: 'staff.patient-import-failed',
          toAddress: opts.mail.staffEmail,
          fromAddress: opts.mail.from,
          ...input.mail,
        });
        await updateLedgerRow(tx, input.ledgerId, {
          status: 'failed',
          failedAt: at,
          reason: input.reason,
          errorCode: input.code,
          failedPath: input.failedPath,
          failureDeliveryId: d.id,
        });
        return { deliveryId: d.id, created: d.created };
      });
    },
    async markFinished(id, status, deleteOutcome) {
      const at = clock.now();
      await updateLedgerRow(db, id, { status, deleteOutcome, ...(deleteOutcome === 'deleted' || deleteOutcome === 'not_found' ? { deletedAt: at } : {}) });
    },
  };
}
