import { Counter } from 'prom-client';
import { listExpiredCopies, sweepExpiredCopies } from '../../libs/db/repositories/patient-import.js';
import { oncePerRegistry } from '../../libs/metrics/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { isOwnCopy, removeSaved } from './file-keeper.js';
import { sweepRetention, type RetentionResult } from './process-retention.js';

export const retentionMetrics = oncePerRegistry((registry) => {
  const removed = new Counter({
    name: 'fleet_patient_import_copies_removed_total',
    help: 'Local copies of registration files the retention sweep removed (or found already gone) and recorded, by folder (backup, failed)',
    labelNames: ['folder'],
    registers: [registry],
  });
  // Exported from the start (the sweep runs once a night), so /metrics shows it before the first run.
  for (const folder of ['backup', 'failed']) removed.inc({ folder }, 0);
  return removed;
});

/**
 * One retention sweep of the local copies (the scheduled job and `fleet retention run`): removes
 * copies of final rows past BACKUP_RETENTION_DAYS / FAILED_RETENTION_DAYS and records it on the
 * row. `dryRun`: only counts what it would remove.
 */
export async function runRetention(ctx: FleetContext, opts: { dryRun?: boolean } = {}): Promise<RetentionResult> {
  const c = ctx.config.patientImport;
  const db = ctx.database.db;
  const removed = retentionMetrics(ctx.metrics.registry);
  return sweepRetention(
    {
      store: {
        listExpired: (copy, q) => listExpiredCopies(db, copy, q),
        sweepBatch: (copy, q, remove) => sweepExpiredCopies(db, copy, q, remove),
      },
      remove: { backup: (rows) => removeSaved(c.backupDir, rows), failed: (rows) => removeSaved(c.failedDir, rows) },
      isOwnCopy: { backup: (row) => isOwnCopy(c.backupDir, row), failed: (row) => isOwnCopy(c.failedDir, row) },
      days: { backup: c.retention.backupDays, failed: c.retention.failedDays },
      clock: ctx.clock,
      log: ctx.log,
      onRecorded: (copy, n) => removed.inc({ folder: copy }, n),
    },
    opts,
  );
}
