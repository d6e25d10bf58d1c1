import { eq, sql } from 'drizzle-orm';
import type { DbOrTx } from '../client.js';
import { deliveries } from '../schema/fleet.js';

export interface NewDelivery {
  /** Unique per message, e.g. `patient-import.staff.ledger.42` or `weekly.patient.7.2026-W48`. */
  idempotencyKey: string;
  kind: string;
  toAddress: string;
  fromAddress: string;
  subject: string;
  html: string;
  text: string;
  headers?: Record<string, string>;
  patientId?: number | null;
}

/**
 * Records a message to send, inside the caller's transaction. Saying the same idempotency
 * key twice records it once: returns the existing row's id with `created: false`.
 * After the transaction commits, enqueue `email-send` with the id (a sweep also enqueues
 * pending rows, so a crash between commit and enqueue loses nothing).
 */
export async function queueDelivery(tx: DbOrTx, d: NewDelivery): Promise<{ id: string; created: boolean }> {
  const inserted = await tx
    .insert(deliveries)
    .values({ ...d, headers: d.headers ?? {}, patientId: d.patientId ?? null })
    .onConflictDoNothing({ target: deliveries.idempotencyKey })
    .returning({ id: deliveries.id });
  if (inserted[0]) return { id: inserted[0].id, created: true };
  const [existing] = await tx
    .select({ id: deliveries.id })
    .from(deliveries)
    .where(eq(deliveries.idempotencyKey, d.idempotencyKey));
  return { id: existing!.id, created: false };
}

export async function getDelivery(db: DbOrTx, id: string) {
  const [row] = await db.select().from(deliveries).where(eq(deliveries.id, id));
  return row ?? null;
}

export async function countDeliveriesByStatus(db: DbOrTx) {
  return db
    .select({ status: deliveries.status, n: sql<number>`count(*)::int` })
    .from(deliveries)
    .groupBy(deliveries.status);
}
