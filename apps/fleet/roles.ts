import type { Config } from '../../libs/config/index.js';
import type { Component, FleetContext } from '../../libs/runtime/index.js';
import type { DeadLetterHooks } from '../../libs/ops/dead-letters.js';
import { scraperWatcherComponent } from '../producers/scraper-watcher.js';
import { therapistImportComponents, therapistImportDeadLetterHook } from '../../workers/therapist-import/index.js';
import { workerComponent } from '../../libs/runtime/index.js';
import { bucketPollerComponents } from '../producers/bucket-poller.js';
import { retentionComponents } from '../producers/retention-schedule.js';
import { patientImportDeadLetterHook, patientImportHandlers, warnIfSignaturesUnchecked } from '../../workers/patient-import/index.js';
import { httpComponent } from '../http/component.js';
import type { StillWantedCheck } from '../../libs/mail/index.js';
import { emailComponents, emailDeadLetterHook } from '../../workers/email/index.js';
import { weeklyComponents } from '../producers/weekly-schedule.js';
import { weeklyStillWanted } from '../../workers/weekly-status/index.js';
import { outboxRelayComponents } from '../../workers/outbox-relay/index.js';
import { checkFolders, type FolderNeed } from './folders.js';

/**
 * The roles a fleet process can take. `fleet start` runs them all; `--only a,b` runs a
 * subset, so the same build scales out as separate processes on several machines.
 * Each job family adds one line here.
 */
export interface RoleSpec {
  description: string;
  /** Stops after every other role has drained (the HTTP app); the others stop all at once. */
  stopsLast?: boolean;
  components(ctx: FleetContext): Component[] | Promise<Component[]>;
  /** The folders the role uses: checked before anything starts (checkRoleFolders). */
  folders?(config: Config): FolderNeed[];
}

export const roles: Record<string, RoleSpec> = {};

// First in the list: the HTTP app starts before and stops after the other roles, so /ready
// answers (503 "starting"/"stopping") while they start and drain.
roles.http = {
  stopsLast: true,
  description: 'HTTP app: Bull Board (/dashboard), dead letters (/ops), failed imports (/imports), therapist runs (/therapist-imports), daily health (/daily), unsubscribe links, /health, /ready, /metrics',
  components: (ctx) => [httpComponent(ctx, { deadLetterHooks })],
};

roles['outbox-relay'] = {
  description: 'publishes domain events from the outbox to Kafka (one relay publishes, others stand by)',
  components: (ctx) => outboxRelayComponents(ctx),
};

/** Domain bookkeeping for operator actions on dead letters, per job name. */
export const deadLetterHooks: DeadLetterHooks = {};

roles['therapist-import'] = {
  description: 'imports therapist scraper files (one job per content hash): validate, match, write only what changed, report',
  components: (ctx) => therapistImportComponents(ctx),
  // reads the files the watcher registered (the folder must be mounted here too)
  folders: (c) => [{ variable: 'SCRAPER_DROP_DIR', dir: c.therapistImport.dropDir }],
};
roles['scraper-watcher'] = {
  description: 'watches SCRAPER_DROP_DIR (catch-up at start, complete files only) and enqueues one import per new file content',
  components: (ctx) => [scraperWatcherComponent(ctx)],
  folders: (c) => [{ variable: 'SCRAPER_DROP_DIR', dir: c.therapistImport.dropDir, create: true }],
};
deadLetterHooks['therapist-import'] = therapistImportDeadLetterHook;

/** The local folder standing in for the bucket (STORAGE_DRIVER=local): listed, read and deleted from. */
function localBucket(c: Config): FolderNeed[] {
  return c.storage.driver === 'local' ? [{ variable: 'LOCAL_BUCKET_DIR', dir: c.storage.local.dir, create: true, write: true }] : [];
}

roles['patient-import'] = {
  description:
    'imports patient registration files (one job per ledger row): backup, validate, one transaction, delete the generation; removes local copies and email contents past their retention (RETENTION_CRON)',
  // The retention sweep runs here: these processes have BACKUP_DIR and FAILED_DIR (its email part
  // needs only the database and Redis).
  components: (ctx) => {
    // Once per process at start: files are taken unchecked, which older site versions need.
    warnIfSignaturesUnchecked(ctx.config.patientImport, ctx.log);
    return [workerComponent(ctx, 'patient-import', patientImportHandlers(ctx)), ...retentionComponents(ctx)];
  },
  folders: (c) => [
    { variable: 'BACKUP_DIR', dir: c.patientImport.backupDir, create: true, write: true, private: true },
    { variable: 'FAILED_DIR', dir: c.patientImport.failedDir, create: true, write: true, private: true },
    ...localBucket(c),
  ],
};
roles['bucket-poller'] = {
  description: 'lists the registration bucket on POLL_CRON (one schedule for all pollers) and enqueues new object generations',
  components: (ctx) => bucketPollerComponents(ctx),
  folders: (c) => localBucket(c),
};
deadLetterHooks['patient-import'] = patientImportDeadLetterHook;

roles.weekly = {
  description: 'weekly patient status emails: the schedule (WEEKLY_CRON in WEEKLY_TZ, one for all processes, catch-up within the week), fan-out and one job per patient',
  components: (ctx) => weeklyComponents(ctx),
};

/**
 * "Still wanted?" checks asked right before an email goes out, by delivery kind (e.g. the
 * weekly email drops a message whose patient opted out). A feature registers a factory here.
 */
export const stillWantedChecks: Record<string, (ctx: FleetContext) => StillWantedCheck> = {};
stillWantedChecks['weekly-status'] = weeklyStillWanted;

roles.email = {
  description: 'sends email deliveries (batches of up to 100 per provider request, shared rate limit) and sweeps forgotten or stuck ones',
  components: (ctx) =>
    emailComponents(ctx, {
      stillWanted: Object.fromEntries(Object.entries(stillWantedChecks).map(([kind, make]) => [kind, make(ctx)])),
    }),
  folders: (c) => (c.mail.driver === 'outbox' ? [{ variable: 'MAIL_OUTBOX_DIR', dir: c.mail.outboxDir, create: true, write: true }] : []),
};
deadLetterHooks['email-send'] = emailDeadLetterHook;

/**
 * Checks the folders the given roles use (only theirs: an HTTP-only process does not need the
 * backup volume), before anything starts; a ConfigError names each variable, path and reason.
 */
export async function checkRoleFolders(config: Config, roleNames: string[]): Promise<void> {
  await checkFolders(roleNames.flatMap((n) => roles[n]?.folders?.(config) ?? []));
}

export class UnknownRoleError extends Error {
  override name = 'UnknownRoleError';
}

export function resolveRoles(only?: string): string[] {
  const all = Object.keys(roles);
  if (only === undefined) return all;
  const asked = only.split(',').map((r) => r.trim()).filter(Boolean);
  // `--only "$ROLES"` with the variable empty or unset names no role: that is a mistake, not a
  // request for every role (a process meant for one role would also poll, watch and send).
  if (!asked.length) throw new UnknownRoleError(`--only names no role; known roles: ${all.join(', ')}`);
  const unknown = asked.filter((r) => !all.includes(r));
  if (unknown.length) {
    throw new UnknownRoleError(`unknown role(s): ${unknown.join(', ')}; known roles: ${all.join(', ')}`);
  }
  return asked;
}
