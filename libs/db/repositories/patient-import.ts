import { and, asc, desc, eq, inArray, lt, sql } from 'drizzle-orm';
import type { DbOrTx } from '../client.js';
import {
  patientConsents,
  patientImportLedger,
  patientImportOpenStatuses,
  type PatientImportStatus,
} from '../schema/fleet-patient-import.js';
import { patienten } from '../schema/platform.js';

export type LedgerRow = typeof patientImportLedger.$inferSelect;
export type LedgerPatch = Partial<Omit<typeof patientImportLedger.$inferInsert, 'id'>>;

export interface NewLedgerObject {
  source?: 'bucket' | 'file';
  bucket: string;
  objectName: string;
  generation: string;
  sourceUri: string;
  size?: number | null;
  md5Hash?: string | null;
  crc32c?: string | null;
}

/**
 * Records objects in the ledger; an object generation already recorded is skipped.
 * Returns the ids of the rows this call created (several pollers at once: each row is
 * created by exactly one of them).
 */
export async function insertLedgerObjects(db: DbOrTx, objects: NewLedgerObject[]): Promise<number[]> {
  if (!objects.length) return [];
  const rows = await db
    .insert(patientImportLedger)
    .values(objects.map((o) => ({ ...o, source: o.source ?? 'bucket' })))
    .onConflictDoNothing({ target: [patientImportLedger.bucket, patientImportLedger.objectName, patientImportLedger.generation] })
    .returning({ id: patientImportLedger.id });
  return rows.map((r) => r.id).sort((a, b) => a - b);
}

export async function findLedgerByObject(db: DbOrTx, bucket: string, objectName: string, generation: string) {
  const [row] = await db
    .select()
    .from(patientImportLedger)
    .where(
      and(
        eq(patientImportLedger.bucket, bucket),
        eq(patientImportLedger.objectName, objectName),
        eq(patientImportLedger.generation, generation),
      ),
    );
  return row ?? null;
}

export async function getLedgerRow(db: DbOrTx, id: number): Promise<LedgerRow | null> {
  const [row] = await db.select().from(patientImportLedger).where(eq(patientImportLedger.id, id));
  return row ?? null;
}

export async function updateLedgerRow(db: DbOrTx, id: number, patch: LedgerPatch): Promise<LedgerRow> {
  const [row] = await db
    .update(patientImportLedger)
    .set({ ...patch, updatedAt: new Date() })
    .where(eq(patientImportLedger.id, id))
    .returning();
  if (!row) throw new Error(`ledger row ${id} does not exist`);
  return row;
}

/** Counts one more job run on the row. */
export async function startLedgerAttempt(db: DbOrTx, id: number, at: Date): Promise<LedgerRow | null> {
  const [row] = await db
    .update(patientImportLedger)
    .set({ attempts: sql`${patientImportLedger.attempts} + 1`, lastAttemptAt: at, updatedAt: at })
    .where(eq(patientImportLedger.id, id))
    .returning();
  return row ?? null;
}

/** Rows a job still has work to do for, oldest first (crash recovery). */
export async function openLedgerIds(db: DbOrTx, opts: { source?: 'bucket' | 'file'; limit?: number; updatedBefore?: Date } = {}) {
  const rows = await db
    .select({ id: patientImportLedger.id })
    .from(patientImportLedger)
    .where(
      and(
        inArray(patientImportLedger.status, [...patientImportOpenStatuses]),
        opts.source ? eq(patientImportLedger.source, opts.source) : undefined,
        opts.updatedBefore ? lt(patientImportLedger.updatedAt, opts.updatedBefore) : undefined,
      ),
    )
    .orderBy(asc(patientImportLedger.id))
    .limit(opts.limit ?? 10_000);
  return rows.map((r) => r.id);
}

export async function listLedger(db: DbOrTx, opts: { status?: PatientImportStatus[]; limit?: number } = {}) {
  return db
    .select()
    .from(patientImportLedger)
    .where(opts.status?.length ? inArray(patientImportLedger.status, opts.status) : undefined)
    .orderBy(desc(patientImportLedger.id))
    .limit(opts.limit ?? 50);
}

export async function countLedgerByStatus(db: DbOrTx) {
  return db
    .select({ status: patientImportLedger.status, n: sql<number>`count(*)::int` })
    .from(patientImportLedger)
    .groupBy(patientImportLedger.status);
}

/** Operator requeue: a failed row goes back to `received` (the job starts over). */
export async function reopenFailedLedgerRow(db: DbOrTx, id: number): Promise<boolean> {
  const rows = await db
    .update(patientImportLedger)
    .set({ status: 'received', updatedAt: new Date() })
    .where(and(eq(patientImportLedger.id, id), eq(patientImportLedger.status, 'failed')))
    .returning({ id: patientImportLedger.id });
  return rows.length > 0;
}

/** Operator discard: the row is closed for good (the object stays in the bucket). */
export async function discardLedgerRow(db: DbOrTx, id: number, at = new Date()): Promise<boolean> {
  const rows = await db
    .update(patientImportLedger)
    .set({ status: 'discarded', discardedAt: at, updatedAt: at })
    .where(and(eq(patientImportLedger.id, id), inArray(patientImportLedger.status, ['failed', ...patientImportOpenStatuses])))
    .returning({ id: patientImportLedger.id });
  return rows.length > 0;
}

/**
 * Transaction-scoped advisory locks (released at commit or rollback), taken in a fixed
 * order so two imports never deadlock. Serialises imports of the same token, payment
 * reference or email.
 */
export async function lockImportKeys(tx: DbOrTx, keys: string[]): Promise<void> {
  const sorted = [...new Set(keys)].sort();
  if (!sorted.length) return;
  // One round trip; the locks are taken one by one in the order of the array.
  const list = sql.join(sorted.map((k) => sql`${k}`), sql`, `);
  await tx.execute(
    sql`select pg_advisory_xact_lock(hashtextextended(t.k, 0)) from unnest(array[${list}]::text[]) with ordinality as t(k, n) order by t.n`,
  );
}

export async function findConsentByToken(db: DbOrTx, token: string) {
  const [row] = await db
    .select({ id: patientConsents.id, patientId: patientConsents.patientId, ledgerId: patientConsents.ledgerId })
    .from(patientConsents)
    .where(eq(patientConsents.registrationToken, token));
  return row ?? null;
}

export async function findPatientByZahlungsreferenz(db: DbOrTx, ref: string) {
  const [row] = await db.select({ id: patienten.id }).from(patienten).where(eq(patienten.zahlungsreferenz, ref));
  return row ?? null;
}

/** Patients whose email equals `normalisedEmail` (trimmed, NFC, lower case). */
export async function findPatientsByEmail(db: DbOrTx, normalisedEmail: string) {
  return db
    .select({ id: patienten.id, vorname: patienten.vorname, nachname: patienten.nachname, email: patienten.email })
    .from(patienten)
    .where(sql`lower(normalize(trim(${patienten.email}), NFC)) = ${normalisedEmail}`)
    .orderBy(asc(patienten.id));
}

export type NewPatientRow = typeof patienten.$inferInsert;

export async function insertPatient(tx: DbOrTx, values: NewPatientRow, at: Date): Promise<number> {
  const [row] = await tx
    .insert(patienten)
    .values({ ...values, createdAt: at, updatedAt: at })
    .returning({ id: patienten.id });
  return row!.id;
}

export type NewConsentRow = typeof patientConsents.$inferInsert;

export async function insertConsent(tx: DbOrTx, values: NewConsentRow): Promise<number> {
  const [row] = await tx.insert(patientConsents).values(values).returning({ id: patientConsents.id });
  return row!.id;
}

export async function getConsentsOfPatient(db: DbOrTx, patientId: number) {
  return db.select().from(patientConsents).where(eq(patientConsents.patientId, patientId)).orderBy(asc(patientConsents.id));
}
