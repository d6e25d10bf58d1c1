import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { recordedCopyPaths, type LocalCopy } from '../../libs/db/repositories/patient-import.js';
import type { FleetContext } from '../../libs/runtime/index.js';

/** Files in a copy folder that no import record points to: how many, and the records their names begin with. */
export interface UnrecordedCopies {
  files: number;
  /** Ledger ids from the names (`<id>-<object name>`), for `fleet imports show`; a file without one is counted only. */
  records: number[];
}

/**
 * Files in BACKUP_DIR and FAILED_DIR that no ledger row points to. The retention sweep removes
 * only what a row records, so these would stay for ever: a row whose path was lost (a requeued
 * row's second failure cleared it before that was fixed), or a file put there by hand. Reported,
 * never removed: nothing says what they are. Names are not returned (they hold patient names).
 */
export async function unrecordedCopies(ctx: FleetContext): Promise<Record<LocalCopy, UnrecordedCopies>> {
  const c = ctx.config.patientImport;
  const one = async (copy: LocalCopy, dir: string): Promise<UnrecordedCopies> => {
    const root = path.resolve(dir);
    let names: string[];
    try {
      names = (await readdir(root, { withFileTypes: true })).filter((d) => d.isFile() && !d.name.startsWith('.')).map((d) => d.name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { files: 0, records: [] };
      throw err;
    }
    const known = new Set([...(await recordedCopyPaths(ctx.database.db, copy))].map((p) => path.resolve(p)));
    const unknown = names.filter((n) => !known.has(path.join(root, n)));
    const records = unknown.map((n) => /^(\d+)-/.exec(n)?.[1]).filter((x): x is string => x !== undefined).map(Number);
    return { files: unknown.length, records: [...new Set(records)].sort((a, b) => a - b) };
  };
  return { backup: await one('backup', c.backupDir), failed: await one('failed', c.failedDir) };
}
