import type { FleetContext } from '../../libs/runtime/index.js';
import { closeRunIfDrained } from './process-therapist-file.js';
import { therapistImportDeps } from './wiring.js';

/** Closes a run whose files are all done (after the watcher sealed it) and sends its summary. */
export function closeTherapistRun(ctx: FleetContext, runId: number): Promise<string | null> {
  return closeRunIfDrained(runId, therapistImportDeps(ctx));
}
