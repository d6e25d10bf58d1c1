import { PermanentError } from '../../libs/errors/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import type { BucketPort } from '../../libs/storage/index.js';
import { folderKeeper } from './file-keeper.js';
import { pgImportStore } from './pg-store.js';
import type { ImportDeps, ImportRow, ImportSource } from './ports.js';

export interface PatientImportOptions {
  /** The bucket (default: the configured driver). */
  bucket?: BucketPort;
  /** Test hook: runs right after the import transaction committed, before the delete. */
  afterCommit?: () => void | Promise<void>;
}

export function bucketSource(bucket: BucketPort): ImportSource {
  return {
    async download(row: ImportRow) {
      if (row.source !== 'bucket' || row.bucket !== bucket.bucket) {
        throw new PermanentError('not_in_bucket', `ledger ${row.id}: the file is not in the configured bucket`);
      }
      return bucket.download(row.objectName, row.generation, row.md5Hash ? { md5Hash: row.md5Hash } : {});
    },
    currentGeneration: async (row) => (await bucket.stat(row.objectName))?.generation ?? null,
    delete: (row) => (row.source === 'bucket' ? bucket.deleteGeneration(row.objectName, row.generation) : Promise.resolve('kept' as const)),
  };
}

export function importDeps(ctx: FleetContext, source: ImportSource, opts: PatientImportOptions): ImportDeps {
  const c = ctx.config.patientImport;
  return {
    store: pgImportStore({ db: ctx.database.db, clock: ctx.clock, mail: { from: ctx.config.mail.from, staffEmail: ctx.config.mail.staffEmail } }),
    source,
    backups: folderKeeper(c.backupDir),
    failed: folderKeeper(c.failedDir),
    sendMail: async (deliveryId) => {
      await ctx.queues.enqueue('email-send', { deliveryId });
    },
    signing: { secret: c.signingSecret, environment: c.environment },
    staffImportEmails: c.staffImportEmails,
    maxFileBytes: c.maxFileBytes,
    dashboardUrl: ctx.config.http.dashboardUrl,
    clock: ctx.clock,
    log: ctx.log,
    ...(opts.afterCommit ? { afterCommit: opts.afterCommit } : {}),
  };
}
