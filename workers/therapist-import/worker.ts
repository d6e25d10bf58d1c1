import { withAbandoned, type Handlers } from '../../libs/queues/index.js';
import { workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { processTherapistFile, recordAbandonedFile } from './process-therapist-file.js';
import { registerTherapistImportGauges } from './metrics.js';
import { therapistImportDeps } from './wiring.js';

/** Handlers of the `therapist-import` queue. */
export function therapistImportHandlers(ctx: FleetContext): Handlers {
  const deps = therapistImportDeps(ctx);
  return {
    'therapist-import': withAbandoned<'therapist-import'>(
      (payload, helpers) => processTherapistFile(payload, { ...deps, log: helpers.log }, { isFinalAttempt: helpers.isFinalAttempt, carried: helpers.carriedThroughOutage }),
      (payload, reason, log) => recordAbandonedFile(payload.fileId, reason, { ...deps, log }),
    ),
  };
}

/** The `therapist-import` role: the worker of the therapist-import queue. */
export function therapistImportComponents(ctx: FleetContext): Component[] {
  registerTherapistImportGauges(ctx);
  return [workerComponent(ctx, 'therapist-import', therapistImportHandlers(ctx))];
}
