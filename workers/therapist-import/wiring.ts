import path from 'node:path';
import type { FleetContext } from '../../libs/runtime/index.js';
import type { TherapistImportDeps } from './process-therapist-file.js';
import { therapistImportMetrics } from './metrics.js';
import { postgresTherapistImportStore } from './store.js';
import { readRegularFile } from './file-size.js';

/** A tracked path as stored (relative to the drop folder) -> the file on disk. */
export function resolveDropPath(dropDir: string, p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(dropDir, p);
}

export function therapistImportDeps(ctx: FleetContext): TherapistImportDeps {
  const dropDir = ctx.config.therapistImport.dropDir;
  return {
    store: postgresTherapistImportStore(ctx.database, { from: ctx.config.mail.from, to: ctx.config.mail.staffEmail }),
    readFile: async (p) => {
      return readRegularFile(resolveDropPath(dropDir, p), ctx.config.therapistImport.maxFileBytes);
    },
    sendEmail: async (deliveryId) => {
      await ctx.queues.enqueue('email-send', { deliveryId });
    },
    clock: ctx.clock,
    log: ctx.log,
    metrics: therapistImportMetrics(ctx.metrics),
    runPageUrl: ctx.config.http.dashboardUrl ? (runId) => `${ctx.config.http.dashboardUrl}/therapist-imports/runs/${runId}` : undefined,
  };
}
