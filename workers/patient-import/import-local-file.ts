import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { failedOfSameRegistration, findLedgerByObject, getLedgerRow, insertLedgerObjects, reopenFailedLedgerRow } from '../../libs/db/repositories/patient-import.js';
import { PermanentError } from '../../libs/errors/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { processPatientImport, type ImportResult } from './process-patient-import.js';
import type { ImportSource } from './ports.js';
import { importDeps } from './wiring.js';

export interface LocalImportOutcome {
  ledgerId: number;
  ok: boolean;
  result?: ImportResult;
  code?: string;
  reason?: string;
  /** Imported (or a duplicate): failed bucket records of the same registration token, whose dead letters are left to discard. */
  failedBucketRecords?: number[];
  /** Those of failedBucketRecords linked by the token in the file names only (their own token is not known): to check before discarding. */
  linkedByNameOnly?: number[];
}

/**
 * Imports a local file (one staff got by other means) through the same pipeline: ledger
 * row (source `file`, generation = sha256 of the bytes, so the same file twice is one row),
 * backup, validation, duplicate checks, the one transaction, staff email. Nothing is deleted.
 */
export async function importLocalFile(ctx: FleetContext, filePath: string): Promise<LocalImportOutcome> {
  const abs = path.resolve(filePath);
  const bytes = await readFile(abs);
  const generation = createHash('sha256').update(bytes).digest('hex');
  const objectName = path.basename(abs);
  const db = ctx.database.db;
  const base = { source: 'file' as const, bucket: '(local file)', objectName, generation };
  await insertLedgerObjects(db, [{ ...base, sourceUri: `file://${abs}`, size: bytes.length }]);
  const row = await findLedgerByObject(db, base.bucket, objectName, generation);
  if (!row) throw new Error('the ledger row of the local file was not recorded');
  if (row.status === 'failed') await reopenFailedLedgerRow(db, row.id);
  const source: ImportSource = { download: async () => bytes, currentGeneration: async () => generation, delete: async () => 'kept' };
  try {
    const result = await processPatientImport(row.id, importDeps(ctx, source, {}));
    const settled = result.outcome === 'imported' || result.outcome === 'duplicate' || (result.outcome === 'already-final' && result.status !== 'discarded');
    const failed = settled ? await failedOfSameRegistration(db, row.id) : [];
    const byName = failed.filter((f) => !f.tokenCompared).map((f) => f.id);
    return {
      ledgerId: row.id,
      ok: true,
      result,
      ...(failed.length ? { failedBucketRecords: failed.map((f) => f.id) } : {}),
      ...(byName.length ? { linkedByNameOnly: byName } : {}),
    };
  } catch (err) {
    if (err instanceof PermanentError) {
      // The ledger keeps the reason for staff (with the values quoted from the file).
      const failed = await getLedgerRow(db, row.id);
      return { ledgerId: row.id, ok: false, code: err.code, reason: failed?.reason ?? err.message };
    }
    throw err;
  }
}
