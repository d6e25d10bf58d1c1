import type { FleetContext } from '../../libs/runtime/index.js';
import { processWeeklyFanout } from './process-fanout.js';
import { fanoutDeps } from './wiring.js';

/** A fan-out by hand (CLI): the same code as the scheduled one; `log`: the caller's (the CLI passes one that leaves the refusal to its own message). */
export function runWeeklyFanout(ctx: FleetContext, input: { isoWeek: string; dryRun: boolean }, log = ctx.log) {
  return processWeeklyFanout(input, fanoutDeps(ctx, log));
}
