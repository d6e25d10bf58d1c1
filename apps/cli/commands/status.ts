import type { Command } from 'commander';
import { currentLeaseHolders, type LeaseHolderInfo } from '../../../libs/db/lease.js';
import { retryingDeliveries } from '../../../libs/db/repositories/deliveries.js';
import { formatAge, localTimeWithOffset, secondsSince } from '../../../libs/ops/daily.js';
import { kafkaBrokersMismatch, outboxKafkaLine, outboxKafkaState, type OutboxKafkaState } from '../../../libs/ops/outbox-kafka.js';
import { queueNames, deadLetterQueueName, lastBucketPollSuccess, pausedQueues, schedulerStates } from '../../../libs/queues/index.js';
import { within } from '../../../libs/runtime/index.js';
import { displayTime } from '../format.js';
import { printJson, withContext } from '../context.js';
import { noFleetWarning, queueSource, sourceLine } from '../queue-source.js';

const STATES = ['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'] as const;

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('workers and job counts per queue and state, dead letters waiting for an operator, paused queues, the schedules\' next runs, and which process publishes events and which watches the scraper folder')
    .option('--json', 'print the queue prefix and Redis read (source) and the per-queue counts (queues, dead letters included) as JSON; schedules and paused queues: fleet daily --json')
    .action(async (opts: { json?: boolean }) => {
      await withContext(async (ctx) => {
        const source = await queueSource(ctx);
        if (!source.fleetSeen) process.stderr.write(`fleet: warning: ${await noFleetWarning(ctx, source)}\n`);
        const rows = [];
        for (const name of queueNames()) {
          const queue = ctx.queues.queue(name);
          const counts = await queue.getJobCounts(...STATES);
          const dead = await ctx.queues.queue(deadLetterQueueName(name)).getJobCounts('waiting', 'prioritized', 'delayed');
          // The fleet processes serving the queue now (BullMQ names their connections under the
          // prefix; CLIENT LIST): waiting jobs and none is "start one", not "slow". null: Redis refuses CLIENT LIST.
          const workers = await queue.getWorkers().then((w) => (w.some((x) => x.name === 'GCP does not support client list') ? null : w.length), () => null);
          rows.push({
            queue: name,
            workers,
            waiting: counts.waiting ?? 0,
            prioritized: counts.prioritized ?? 0,
            active: counts.active ?? 0,
            delayed: counts.delayed ?? 0,
            completed: counts.completed ?? 0,
            failed: counts.failed ?? 0,
            dead: (dead.waiting ?? 0) + (dead.prioritized ?? 0) + (dead.delayed ?? 0),
          });
        }
        if (opts.json) return printJson({ source, queues: rows });
        process.stdout.write(`${sourceLine(source)}\n\n`);
        // waiting: jobs with a priority (every therapist import) wait as prioritized, counted here too.
        const header = ['queue', 'workers', 'waiting', 'active', 'delayed', 'completed', 'failed', 'dead'];
        const table = [header, ...rows.map((r) => [r.queue, r.workers ?? '?', r.waiting + r.prioritized, r.active, r.delayed, r.completed, r.failed, r.dead].map(String))];
        const widths = header.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
        for (const row of table) process.stdout.write(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ') + '\n');
        for (const r of rows) {
          if (r.workers === 0 && r.waiting + r.prioritized > 0) {
            process.stdout.write(`\nno worker on ${r.queue}: ${r.waiting + r.prioritized} job(s) wait and no process serves the queue: start a process with its role (fleet start --help lists them)\n`);
          }
        }
        // A provider outage shows here before FleetJobsRetrying (15 min): emails retried, with the latest error.
        const retrying = await within(retryingDeliveries(ctx.database.db), 5_000).catch(() => null);
        if (retrying?.count) {
          process.stdout.write(
            `\nemails being retried after a failed provider request: ${retrying.count}; the latest error (${retrying.lastAt ? displayTime(retrying.lastAt) : '?'}): ${retrying.lastError}\n`,
          );
        }
        const totalDead = rows.reduce((a, r) => a + r.dead, 0);
        process.stdout.write(totalDead ? `\n${totalDead} dead letter(s) wait for an operator: fleet dlq list\n` : '\nno dead letters\n');
        const paused = await pausedQueues(ctx.queues);
        if (paused.length) process.stdout.write(`paused (jobs wait until resumed on /dashboard): ${paused.join(', ')}\n`);
        process.stdout.write('\nschedules:\n');
        const schedules = await schedulerStates(ctx.queues);
        for (const x of schedules) {
          process.stdout.write(
            x.registered
              ? `  ${x.id}: next ${x.next ? displayTime(x.next) : '–'} (${x.pattern} ${x.timeZone})\n`
              : source.fleetSeen
                ? `  ${x.id}: NOT REGISTERED: nothing produces its jobs; a process with the ${x.role} role registers it (${x.cronVariable}) at start and within SCHEDULE_CHECK_MS when it is missing: is one running?\n`
                : `  ${x.id}: NOT REGISTERED under this queue prefix (no fleet has used it: see the warning)\n`,
          );
        }
        // A failing poll is retried up to the next one and then left to it (no dead letter): this says whether polls go through.
        const lastPoll = await lastBucketPollSuccess(ctx.queues);
        const polling = schedules.some((x) => x.id === 'bucket-poll' && x.registered);
        process.stdout.write(
          lastPoll
            ? `  last successful bucket poll: ${displayTime(lastPoll)} (${formatAge(secondsSince(lastPoll, ctx.clock.now()))} ago)\n`
            : `  last successful bucket poll: none recorded (none yet, or none since Redis lost its data)${polling ? '; a poll that fails logs why in the bucket-poller (job attempt failed)' : ''}\n`,
        );
        // PostgreSQL away must not cost the operator the queue table above: said, not thrown.
        const holders = await within(currentLeaseHolders(ctx.database.sql), 5_000).catch((err: unknown) => new Error(`which processes publish events and watch the scraper folder is not known: PostgreSQL (DATABASE_URL): ${(err as Error).message}`));
        // Kafka as the fleet's relays see it (their lease, what they record in Redis), not as this terminal's KAFKA_BROKERS.
        const kafka = await outboxKafkaState({ database: ctx.database, queues: ctx.queues, now: ctx.clock.now() });
        const mismatch = kafkaBrokersMismatch(kafka, ctx.config.kafka.brokers);
        if (mismatch) process.stderr.write(`fleet: warning: ${mismatch}\n`);
        process.stdout.write(`\n${holders instanceof Error ? `${holders.message}\n${outboxKafkaLine(kafka, localTimeWithOffset)}` : leaseLines(holders, kafka).join('\n')}\n`);
      });
    });
}

/**
 * Which process publishes events and which watches the scraper folder (by its PostgreSQL
 * session), or that none does, and why; under the relay, Kafka as it sees it (reachable,
 * unreachable since when, a topic missing). Why no relay publishes is judged from what the
 * fleet's relays record (none runs, they stand by, they run without KAFKA_BROKERS), never from
 * this terminal's environment.
 */
function leaseLines(holders: LeaseHolderInfo[], kafka: OutboxKafkaState): string[] {
  const line = (lease: LeaseHolderInfo['lease'], doing: string, none: string) => {
    const h = holders.find((x) => x.lease === lease);
    return h ? `${doing}: ${h.applicationName} (session since ${displayTime(h.since)})` : none;
  };
  const relay = holders.some((x) => x.lease === 'outboxRelay');
  return [
    line('outboxRelay', 'outbox relay publishing', `outbox relay: none publishing: ${outboxKafkaLine(kafka, localTimeWithOffset)}`),
    ...(relay ? [`  ${outboxKafkaLine(kafka, localTimeWithOffset)}`] : []),
    line('scraperWatcher', 'scraper watcher watching', 'scraper watcher: none watching (no process with the scraper-watcher role runs): dropped files wait for one'),
  ];
}
