import { currentLeaseHolders } from '../../libs/db/lease.js';
import { newestLedgerReceivedAt } from '../../libs/db/repositories/patient-import.js';
import { formatAge, secondsSince } from '../../libs/ops/daily.js';
import { fleetSeenUnderPrefix, redisTargetWithDb, type QueueSource } from '../../libs/queues/index.js';
import { within, type FleetContext } from '../../libs/runtime/index.js';

/** Which queue prefix and Redis the command reads, and whether a fleet has used that prefix there. */
export async function queueSource(ctx: FleetContext): Promise<QueueSource> {
  return { queuePrefix: ctx.config.queues.prefix, redis: redisTargetWithDb(ctx.config.queues.redisUrl), fleetSeen: await fleetSeenUnderPrefix(ctx.queues) };
}

/** The first line of `fleet status`, `fleet daily` and `fleet dlq list`. */
export function sourceLine(s: QueueSource): string {
  return `queue prefix "${s.queuePrefix}" on redis ${s.redis} (QUEUE_PREFIX, REDIS_URL)`;
}

/**
 * Said (on stderr) when no fleet has used the prefix: the empty queues, missing schedules and
 * absent dead letters read there say nothing about the fleet. When the database shows a fleet
 * (a process holding the outbox relay's or the scraper watcher's lease, a recent import record),
 * says so: that fleet runs with another QUEUE_PREFIX or REDIS_URL. The database's answer is a
 * hint only: unreachable, it is left out.
 */
export async function noFleetWarning(ctx: FleetContext, s: QueueSource): Promise<string> {
  const head = `no fleet has used queue prefix "${s.queuePrefix}" on redis ${s.redis}: is QUEUE_PREFIX (and REDIS_URL) the one the fleet runs with? (the CLI reads the environment only: export the fleet's variables in this terminal too) What is read here is empty for that reason`;
  const seen = await within(fleetInDatabase(ctx), 5_000).catch(() => []);
  return seen.length ? `${head}. Yet the database (DATABASE_URL) shows a fleet: ${seen.join('; ')}: it runs with another QUEUE_PREFIX or REDIS_URL` : head;
}

/** An import record newer than this says a fleet works on the database (an older one may be of a fleet long gone). */
const RECENT_IMPORT_SECONDS = 7 * 24 * 3600;

async function fleetInDatabase(ctx: FleetContext): Promise<string[]> {
  const [holders, newest] = await Promise.all([currentLeaseHolders(ctx.database.sql), newestLedgerReceivedAt(ctx.database.db)]);
  const doing: Record<string, string> = { outboxRelay: 'publishes events', scraperWatcher: 'watches the scraper folder' };
  return [
    ...holders.map((h) => `${h.applicationName} ${doing[h.lease] ?? `holds the lease ${h.lease}`}`),
    ...(newest && secondsSince(newest, ctx.clock.now()) < RECENT_IMPORT_SECONDS ? [`the newest patient import record was received ${formatAge(secondsSince(newest, ctx.clock.now()))} ago`] : []),
  ];
}
