import { desc } from 'drizzle-orm';
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
