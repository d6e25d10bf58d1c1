import type { LocalCopy } from '../../libs/db/repositories/patient-import.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { removeStaleTemps } from './file-keeper.js';

/** A temporary copy older than this is one a crash left (writeDurably takes milliseconds). */
const STALE_TEMP_MS = 3_600_000;

/**
 * Removes the temporary files a process that died while writing a copy left in BACKUP_DIR and
 * FAILED_DIR (hidden `.<name>.<hex>.tmp`, older than an hour): they hold a whole registration and
 * no record points to them, so neither the sweep nor `unrecordedCopies` would ever see them.
 * `dryRun`: counts only. Counts per folder.
 */
export async function removeStaleTempCopies(ctx: FleetContext, opts: { dryRun?: boolean } = {}): Promise<Record<LocalCopy, number>> {
  const c = ctx.config.patientImport;
  const before = new Date(ctx.clock.now().getTime() - STALE_TEMP_MS);
  return { backup: await removeStaleTemps(c.backupDir, before, opts), failed: await removeStaleTemps(c.failedDir, before, opts) };
}
