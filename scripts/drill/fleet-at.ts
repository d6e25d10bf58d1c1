/**
 * Drill helper: `fleet start` with the fleet's clock (FleetContext.clock) shifted to a chosen
 * time, so week boundaries and DST changes can be drilled without touching the system time.
 * The shift is read from a small JSON file that several processes share and that can be
 * changed while they run (read again every 200 ms):
 *
 *   echo '{"at":"2026-11-29T22:58:30Z"}' > /tmp/clock.json    # the fleet's "now" is this, from now on
 *   FLEET_CLOCK_FILE=/tmp/clock.json npx tsx scripts/drill/fleet-at.ts [--only weekly,email]
 *   echo '{"at":"2026-11-29T22:59:50Z"}' > /tmp/clock.json    # jump: every process follows
 *
 * `at` is the fleet time at the moment the file was written (its mtime); it then runs at real
 * speed. BullMQ's own timers (job schedulers, delays, locks) stay on the real clock: the
 * weekly tick fires by real time, the fan-out, per-patient jobs and the still-wanted check
 * read the shifted one. No migration is run (use `fleet migrate` first).
 */
import { readFileSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import type { Clock } from '../../libs/runtime/clock.js';
import { openContext } from '../../libs/runtime/index.js';
import { checkRoleFolders, resolveRoles } from '../../apps/fleet/roles.js';
import { startFleet, stopOnSignals } from '../../apps/fleet/runtime.js';

const { values } = parseArgs({ options: { only: { type: 'string' } } });
const file = process.env.FLEET_CLOCK_FILE;
if (!file) throw new Error('FLEET_CLOCK_FILE is required');

let offsetMs = 0;
let seenMtime = -1;
function refresh() {
  const st = statSync(file!);
  if (st.mtimeMs === seenMtime) return;
  const { at } = JSON.parse(readFileSync(file!, 'utf8')) as { at: string };
  offsetMs = new Date(at).getTime() - st.mtimeMs;
  seenMtime = st.mtimeMs;
}
refresh();
setInterval(refresh, 200).unref();
const clock: Clock = { now: () => new Date(Date.now() + offsetMs) };

const config = loadConfig(process.env);
const roleNames = resolveRoles(values.only);
await checkRoleFolders(config, roleNames);
const log = createLogger(config.log);
log.info({ clockNow: clock.now().toISOString() }, 'fleet started on a shifted clock');
const fleet = await startFleet(openContext(config, log, { clock }), roleNames);
stopOnSignals(fleet, (code) => process.exit(code));
