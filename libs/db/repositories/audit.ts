import { and, asc, desc, eq, inArray, sql } from 'drizzle-orm';
import type { DbOrTx } from '../client.js';
import { auditLog } from '../schema/fleet.js';

export interface AuditEntry {
  actor: string;
  action: string;
  target: string;
  reason?: string | undefined;
  details?: Record<string, unknown>;
}

export async function recordAudit(db: DbOrTx, entry: AuditEntry) {
  const [row] = await db
    .insert(auditLog)
    .values({ ...entry, reason: entry.reason ?? null, details: entry.details ?? {} })
    .returning();
  return row!;
}

export async function listAudit(db: DbOrTx, limit = 50) {
  return db.select().from(auditLog).orderBy(desc(auditLog.id)).limit(limit);
}

/** Every audit row on these targets (e.g. one import record's dead letter and the record), oldest first. */
export async function auditOfTargets(db: DbOrTx, targets: string[]) {
  if (!targets.length) return [];
  return db.select().from(auditLog).where(inArray(auditLog.target, targets)).orderBy(asc(auditLog.id));
}

/**
 * The newest audit row of the given actions on a job, by the job's id (the part of `target`
 * after `<queue>/`), within one queue when given.
 */
export async function lastAuditOf(db: DbOrTx, q: { actions: string[]; jobId: string; queue?: string | undefined }) {
  const [row] = await db
    .select()
    .from(auditLog)
    .where(
      and(
        inArray(auditLog.action, q.actions),
        eq(sql`split_part(${auditLog.target}, '/', 2)`, q.jobId),
        q.queue ? eq(sql`split_part(${auditLog.target}, '/', 1)`, q.queue) : undefined,
      ),
    )
    .orderBy(desc(auditLog.id))
    .limit(1);
  return row ?? null;
}
