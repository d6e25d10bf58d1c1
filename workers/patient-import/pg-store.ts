import { randomUUID } from 'node:crypto';
import type { Db } from '../../libs/db/client.js';
import { queueDelivery } from '../../libs/db/repositories/deliveries.js';
import {
  markImportBackedUp,
  markImportDeleteRequested,
  markImportFinished,
  markImportReplaced,
  newerLedgerGeneration,
  runImportTransaction,
  startImportAttempt,
  readImportHead,
  updateLedgerRow,
  lockLedgerRow,
  type ImportLookup,
  type ImportWrites,
  type LedgerRow,
} from '../../libs/db/repositories/patient-import.js';
import { PermanentError } from '../../libs/errors/index.js';
import { appendEvent, PRODUCER, topicFor, type NewEvent } from '../../libs/events/index.js';
import type { Clock } from '../../libs/runtime/clock.js';
import { ZAHLUNGSREFERENZ_TAKEN } from './failure-remedy.js';
import { differingFromImport, differingPatientFields, foldName, normalise, patientDataDigests } from './map-patient.js';
import { FAILABLE_STATUSES, LedgerRowMovedOn, type CommitInput, type CommitOutcome, type CommitResult, type ImportStore } from './ports.js';

export interface PgStoreOptions {
  db: Db;
  clock: Clock;
  mail: { from: string; staffEmail: string };
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
      const r = await startImportAttempt(db, id, clock.now());
      if (!r) throw new PermanentError('ledger_missing', `ledger ${id}: no such import record`);
      return r;
    },
    readRow: (id) => readImportHead(db, id),
    async markBackedUp(id, info) {
      await markImportBackedUp(db, id, clock.now(), info);
    },
    async commit(input: CommitInput): Promise<CommitResult> {
      const at = clock.now();
      const p = input.patient;
      const email = p.email ? normalise(p.email) : null;
      const { result: outcome, delivery } = await runImportTransaction(
        db,
        {
          keys: [
            `patient-import:token:${input.registrationToken}`,
            `patient-import:ref:${p.zahlungsreferenz}`,
            ...(email ? [`patient-import:email:${email}`] : []),
          ],
          ledgerId: input.ledgerId,
          registrationToken: input.registrationToken,
          zahlungsreferenz: p.zahlungsreferenz,
          normalisedEmail: email,
          backedUp: input.backedUp ? { at, ...input.backedUp } : null,
        },
        (found) => decideImport(input, found, at, opts.mail),
      );
      return { outcome, deliveryIds: delivery?.created ? [delivery.id] : [] };
    },
    async markFailed(input) {
      const at = clock.now();
      return db.transaction(async (tx) => {
        // Locked first: of two recordings of one row, the second sees it failed.
        const before = await lockLedgerRow(tx, input.ledgerId);
        // Imported (or ended) by another run of the row meanwhile: this run's failure is moot.
        if (!FAILABLE_STATUSES.has(before.status)) throw new LedgerRowMovedOn(input.ledgerId, before.status);
        const d = await queueDelivery(tx, {
          idempotencyKey: importMailKeys.failed(input.ledgerId),
          kind: 'staff.patient-import-failed',
          toAddress: opts.mail.staffEmail,
          fromAddress: opts.mail.from,
          ...input.mail,
        });
        const failed = await updateLedgerRow(tx, input.ledgerId, {
          status: 'failed',
          failedAt: at,
          reason: input.reason,
          reasonWithheld: input.reasonWithheld,
          errorCode: input.code,
          // A failure without bytes (the generation gone, the copy unreadable) keeps the copy an
          // earlier failure left in the failed folder: the row still points at it, for staff and
          // for the retention sweep that removes it.
          failedPath: input.failedPath ?? before.failedPath,
          // A later failure that did not get as far as the token (a requeue that gave up) keeps the one read before.
          registrationToken: input.registrationToken ?? before.registrationToken,
          failureDeliveryId: d.id,
        });
        // One event per failure: a row that is failed already (a retry or a second recording of
        // the same failure) has its event; a row reopened by an operator that fails again is a
        // new failure and gets a new one.
        if (before.status !== 'failed') await appendEvent(tx, importFailedEvent(failed, at));
        return { deliveryId: d.id, created: d.created };
      });
    },
    markDeleteRequested: (id) => markImportDeleteRequested(db, id, clock.now()),
    async markFinished(id, status, deleteOutcome) {
      const at = clock.now();
      const gone = deleteOutcome === 'deleted' || deleteOutcome === 'deleted_earlier' || deleteOutcome === 'not_found';
      const other = await markImportFinished(db, id, status, deleteOutcome, gone ? at : null, at);
      if (other) throw new LedgerRowMovedOn(id, other);
    },
    markReplaced: (id, reason) => markImportReplaced(db, id, reason, clock.now()),
    newerGeneration: (row) => newerLedgerGeneration(db, row),
  };
}

/**
 * `import.failed` (topic `import-events`, key = ledger id): ids and codes only. Never the
 * reason (it may quote values from the file), the object name (it holds the patient's name)
 * or anything else from the file.
 */
export function importFailedEvent(row: Pick<LedgerRow, 'id' | 'errorCode' | 'attempts'>, at: Date): NewEvent<ImportFailedPayload> {
  return {
    eventType: 'import.failed',
    key: row.id,
    payload: { kind: 'patient', ledgerId: row.id, errorCode: row.errorCode ?? 'unknown', attempts: row.attempts },
    occurredAt: at,
  };
}

export interface ImportFailedPayload extends Record<string, unknown> {
  kind: 'patient';
  ledgerId: number;
  errorCode: string;
  attempts: number;
}

/**
 * The decision of the import transaction, from what it found under the locks: a retry of a
 * committed row changes nothing; the same token again is a duplicate (no consent, no email);
 * the same email and name is a duplicate of that patient (consent + email); a payment
 * reference of another patient is a permanent error; else a new patient (with the id the
 * lookup reserved), its consent and the `patient.created` event. The staff email and the
 * ledger row are written for both kinds.
 */
function decideImport(
  input: CommitInput,
  found: ImportLookup,
  at: Date,
  mailOpts: { from: string; staffEmail: string },
): { writes: ImportWrites | null; result: CommitOutcome } {
  const p = input.patient;
  const current = found.ledger;
  if (!current) throw new PermanentError('ledger_missing', `ledger ${input.ledgerId}: no such import record`);
  if (current.status === 'imported' || current.status === 'duplicate' || current.status === 'deleted' || current.status === 'superseded' || current.status === 'done') {
    // Committed by an earlier run of this row (a retry after a crash): nothing to do twice.
    const outcome: CommitOutcome =
      current.status === 'duplicate'
        ? { kind: 'duplicate', duplicateKind: (current.duplicateKind as 'same_token' | 'same_person') ?? 'same_token', patientId: current.duplicateOfPatientId! }
        : { kind: 'imported', patientId: current.patientId!, possibleDuplicateOf: current.possibleDuplicateOfPatientId };
    return { writes: null, result: outcome };
  }
  // Ended meanwhile without an import (an operator discarded it, a newer upload replaced it).
  if (current.status === 'discarded' || current.status === 'replaced') throw new LedgerRowMovedOn(input.ledgerId, current.status);

  let outcome: CommitOutcome;
  let patient: ImportWrites['patient'] = null;
  if (found.sameTokenPatientId !== null) {
    // The same registration again: a retry stays silent; changed content is named for staff (the patient is not changed).
    // Compared with what the import of that token read (its digests), so staff's corrections of the patient since do
    // not count as changes; an import from before the digests leaves only the patient row as it is now.
    const comparedWith = found.sameTokenDigests ? 'import' : 'patient';
    const differingFields = found.sameTokenDigests
      ? differingFromImport(p, input.registrationToken, found.sameTokenDigests)
      : found.sameTokenPatient
        ? differingPatientFields(p, found.sameTokenPatient)
        : [];
    outcome = {
      kind: 'duplicate',
      duplicateKind: 'same_token',
      patientId: found.sameTokenPatientId,
      ...(differingFields.length ? { differingFields, comparedWith } : {}),
    };
  } else {
    const samePerson = found.sameEmail.find((c) => foldName(c.vorname) === foldName(p.vorname) && foldName(c.nachname) === foldName(p.nachname));
    if (samePerson) {
      outcome = { kind: 'duplicate', duplicateKind: 'same_person', patientId: samePerson.id };
    } else {
      if (found.zahlungsreferenzTakenBy !== null) {
        throw new PermanentError(
          ZAHLUNGSREFERENZ_TAKEN,
          `registration_token: its payment reference ${p.zahlungsreferenz} is already used by patient ${found.zahlungsreferenzTakenBy} (another registration)`,
          { patientId: found.zahlungsreferenzTakenBy, registrationToken: input.registrationToken },
        );
      }
      if (found.reservedPatientId === null) throw new Error(`ledger ${input.ledgerId}: no patient id was reserved`);
      patient = { ...p, id: found.reservedPatientId, createdAt: at, updatedAt: at };
      outcome = { kind: 'imported', patientId: found.reservedPatientId, possibleDuplicateOf: found.sameEmail[0]?.id ?? null };
    }
  }

  const consent: ImportWrites['consent'] =
    outcome.kind === 'duplicate' && outcome.duplicateKind === 'same_token'
      ? null
      : {
          patientId: outcome.patientId,
          ledgerId: input.ledgerId,
          registrationToken: input.registrationToken,
          registrationTimestamp: input.registrationTimestamp,
          ipAddress: input.consentValues.ipAddress,
          userAgent: input.consentValues.userAgent,
          consentedAt: input.consentValues.consentedAt,
          voucherBooking: input.consentValues.voucherBooking,
          // As the file carried it (GDPR proof), not as parsed.
          metadata: input.consent,
          signed: input.signed,
        };
  // The outbox row of appendEvent (DOMAIN.md section 4 envelope), written by the one statement.
  const event: ImportWrites['event'] =
    outcome.kind === 'imported'
      ? {
          eventId: randomUUID(),
          eventType: 'patient.created',
          version: 1,
          topic: topicFor('patient.created'),
          key: String(outcome.patientId),
          producer: PRODUCER,
          payload: { patientId: outcome.patientId, importId: input.ledgerId, source: 'registration' },
          occurredAt: at,
        }
      : null;
  const mail = input.staffMail(outcome);
  // The row queueDelivery would record (same idempotency key: recorded once).
  const delivery: ImportWrites['delivery'] = mail
    ? {
        idempotencyKey: importMailKeys.imported(input.ledgerId),
        kind: outcome.kind === 'imported' ? 'staff.patient-imported' : 'staff.patient-duplicate',
        toAddress: mailOpts.staffEmail,
        fromAddress: mailOpts.from,
        ...mail,
        headers: {},
        patientId: outcome.patientId,
      }
    : null;
  return {
    result: outcome,
    writes: {
      patient,
      consent,
      event,
      delivery,
      ledger: {
        status: outcome.kind,
        importedAt: at,
        patientId: outcome.kind === 'imported' ? outcome.patientId : null,
        duplicateOfPatientId: outcome.kind === 'duplicate' ? outcome.patientId : null,
        duplicateKind: outcome.kind === 'duplicate' ? outcome.duplicateKind : null,
        possibleDuplicateOfPatientId: outcome.kind === 'imported' ? outcome.possibleDuplicateOf : null,
        unknownFields: input.unknownFields,
        validation: input.validation,
        registrationToken: input.registrationToken,
        differingFields: outcome.kind === 'duplicate' && outcome.differingFields?.length ? outcome.differingFields : null,
        differingComparedWith: outcome.kind === 'duplicate' && outcome.differingFields?.length ? (outcome.comparedWith ?? 'patient') : null,
        // Recorded with the consent of the token (the first import of it), for a later re-upload to be compared with.
        fieldDigests: consent ? patientDataDigests(p, input.registrationToken) : null,
      },
    },
  };
}
