import type { Command } from 'commander';
import { listOutbox } from '../../../libs/db/repositories/outbox.js';
import { listParked, ParkedEventNotFound, parkedEventIdOfRow, retryParked } from '../../../libs/db/repositories/outbox-parked.js';
import { outboxStats } from '../../../libs/db/repositories/outbox-relay.js';
import { eventTopicNames, setupTopics, TopicSetupError } from '../../../libs/events/kafka.js';
import { createLogger } from '../../../libs/log/index.js';
import { localTimeWithOffset } from '../../../libs/ops/daily.js';
import { kafkaBrokersMismatch, outboxKafkaLine, outboxKafkaState } from '../../../libs/ops/outbox-kafka.js';
import { CliError, configOrExit, operatorName, positiveInt, printJson, requiredReason, withContext } from '../context.js';
import { columns, displayTime } from '../format.js';

/** Times for people: the daily view's zone with its offset, to the second (events come in bursts); --json: ISO UTC. */
const iso = (d: Date | null) => displayTime(d, 'second') ?? '-';
/** Aligned columns, ending the line. */
const table = (header: string[], rows: string[][]) => `${columns(header, rows)}\n`;

function age(seconds: number): string {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} d`;
}

export function registerEvents(program: Command): void {
  const events = program.command('events').description('domain events: the transactional outbox and its Kafka topics');

  events
    .command('list')
    .description('outbox events, oldest first (payloads carry ids and field names only)')
    .option('--unpublished', 'only events not yet published to Kafka')
    .option('--limit <n>', 'at most this many events (default: 50)')
    .option('--json', 'print JSON (with payloads)')
    .action(async (opts: { unpublished?: boolean; limit?: string; json?: boolean }) => {
      const limit = positiveInt('--limit', opts.limit ?? '50');
      await withContext(async (ctx) => {
        const rows = await listOutbox(ctx.database.db, { unpublishedOnly: opts.unpublished === true, limit });
        if (opts.json) return printJson(rows);
        if (rows.length === 0) {
          process.stdout.write(opts.unpublished ? 'no unpublished events: the outbox is drained\n' : 'the outbox is empty\n');
          return;
        }
        process.stdout.write(
          table(
            ['id', 'event id', 'type', 'topic', 'key', 'created', 'published', 'attempts', 'last error'],
            rows.map((r) => [
              String(r.id),
              r.eventId,
              r.eventType,
              r.topic,
              r.key,
              iso(r.createdAt),
              // A parked event is not waiting for Kafka: it waits for an operator (`fleet events parked`).
              r.publishedAt ? iso(r.publishedAt) : r.parkedAt ? 'PARKED' : iso(r.publishedAt),
              String(r.attempts),
              r.lastError ? r.lastError.slice(0, 60) : '',
            ]),
          ),
        );
        if (rows.length === limit) process.stdout.write(`(first ${limit}; use --limit for more)\n`);
      });
    });

  events
    .command('stats')
    .description('outbox backlog: unpublished events, age of the oldest, published events kept, per topic')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await withContext(async (ctx) => {
        const stats = await outboxStats(ctx.database, ctx.clock.now());
        // The fleet's Kafka (what its relays record), not this terminal's KAFKA_BROKERS.
        const kafka = await outboxKafkaState({ database: ctx.database, queues: ctx.queues, now: ctx.clock.now() });
        const mismatch = kafkaBrokersMismatch(kafka, ctx.config.kafka.brokers);
        if (mismatch) process.stderr.write(`fleet: warning: ${mismatch}\n`);
        if (opts.json) return printJson({ kafkaBrokers: kafka.brokers, kafka, retentionDays: ctx.config.outbox.retentionDays, ...stats });
        process.stdout.write(
          `kafka brokers:       ${kafka.brokers ? kafka.brokers.join(',') : kafka.state === 'not_configured' ? 'not configured on the fleet (KAFKA_BROKERS empty): events stay in the outbox' : 'not known (no outbox relay records them)'}\n` +
            `kafka:               ${outboxKafkaLine(kafka, localTimeWithOffset)}\n` +
            `unpublished events:  ${stats.unpublished}${stats.unpublished ? ` (oldest ${age(stats.oldestUnpublishedAgeSeconds)} old, since ${iso(stats.oldestUnpublishedAt)})` : ''}\n` +
            `  with failed tries: ${stats.failing}\n` +
            (stats.oldestLastError ? `  oldest failed:     ${stats.oldestLastError}\n` : '') +
            `parked events:       ${stats.parked}${stats.parked ? ' (refused by Kafka, or held behind one that was: fleet events parked)' : ''}\n` +
            `published (kept):    ${stats.published} (pruned after ${ctx.config.outbox.retentionDays || 'never: retention 0'}${ctx.config.outbox.retentionDays ? ' days' : ''})\n`,
        );
        if (stats.byTopic.length) {
          process.stdout.write(
            '\n' + table(['topic', 'unpublished', 'parked', 'published'], stats.byTopic.map((t) => [t.topic, String(t.unpublished), String(t.parked), String(t.published)])),
          );
        }
      });
    });

  const checkTopic = (topic?: string) => {
    // An empty --topic is refused, not read as "every topic" (retry-parked --all --topic "" retried all).
    if (topic !== undefined && !eventTopicNames.includes(topic)) throw new CliError(`unknown topic ${topic || '""'}; topics: ${eventTopicNames.join(', ')}`, 2);
  };

  events
    .command('parked')
    .description('events set aside: Kafka refused them for good, or they wait behind a refused event of their key')
    .option('--topic <topic>', 'only this topic')
    .option('--limit <n>', 'at most this many events (default: 100)')
    .option('--json', 'print JSON')
    .action(async (opts: { topic?: string; limit?: string; json?: boolean }) => {
      checkTopic(opts.topic);
      const limit = positiveInt('--limit', opts.limit ?? '100');
      await withContext(async (ctx) => {
        const rows = await listParked(ctx.database.db, { ...(opts.topic ? { topic: opts.topic } : {}), limit });
        if (opts.json) return printJson(rows);
        if (rows.length === 0) return void process.stdout.write('no parked events\n');
        process.stdout.write(
          table(
            // The event id first: it is what retry-parked takes (the row number is in --json as id).
            ['event id', 'type', 'topic', 'key', 'created', 'parked', 'attempts', 'reason'],
            rows.map((r) => [r.eventId, r.eventType, r.topic, r.key, iso(r.createdAt), iso(r.parkedAt), String(r.attempts), r.reason.slice(0, 100)]),
          ),
        );
        if (rows.length === limit) process.stdout.write(`(first ${limit}; use --limit for more)\n`);
        process.stdout.write('Fix the cause (topic ACL, message size limit), then: fleet events retry-parked <event id> | --all --reason "..."\n');
      });
    });

  events
    .command('retry-parked')
    .description('put parked events back in line for the relay (same event ids); with an event id, its whole key goes back in order')
    .argument('[eventId]', 'event id of a parked event (as shown by fleet events parked), or its outbox row number (the id of fleet events list)')
    .option('--all', 'every parked event (of --topic, if given)')
    .option('--topic <topic>', 'with --all: only this topic')
    .option('--reason <text>', 'why (required; written to the audit table)')
    .option('--actor <name>', 'who (default: $FLEET_OPERATOR, else the login name)')
    .option('--json', 'print JSON')
    .action(async (eventId: string | undefined, opts: { all?: boolean; topic?: string; reason?: string; actor?: string; json?: boolean }) => {
      if (!eventId && !opts.all) throw new CliError('name a parked event id or pass --all', 2);
      if (eventId && opts.all) throw new CliError('pass either an event id or --all, not both', 2);
      if (eventId && opts.topic) throw new CliError('--topic goes with --all', 2);
      const rowNumber = eventId && /^\d+$/.test(eventId) ? Number(eventId) : null;
      if (eventId && rowNumber === null && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(eventId)) {
        throw new CliError(`not an event id (uuid) nor an outbox row number: ${JSON.stringify(eventId)}`, 2);
      }
      checkTopic(opts.topic);
      const reason = requiredReason(opts.reason);
      await withContext(async (ctx) => {
        const action = { actor: operatorName(opts.actor), reason };
        let result;
        try {
          // A row number is the parked row's event id (its whole key goes back, as with the event id).
          const id = rowNumber === null ? eventId : await parkedEventIdOfRow(ctx.database.db, rowNumber);
          if (rowNumber !== null && !id) throw new CliError(`no parked event in outbox row ${rowNumber} (fleet events parked lists them)`, 3);
          result = await retryParked(ctx.database.db, id ? { eventId: id } : { all: true, ...(opts.topic ? { topic: opts.topic } : {}) }, action);
        } catch (err) {
          if (err instanceof ParkedEventNotFound) throw new CliError(err.message, 3);
          throw err;
        }
        if (opts.json) return printJson(result);
        process.stdout.write(`${result.retried} parked event(s) put back: the relay publishes them in order (if Kafka still refuses one, it is parked again)\n`);
      });
    });

  events
    .command('setup')
    .description('create the event topics on Kafka (deploy time; existing topics are left alone)')
    .option('--partitions <n>', 'partitions per topic (default: KAFKA_TOPIC_PARTITIONS)')
    .option('--replication-factor <n>', 'replicas per partition (default: KAFKA_TOPIC_REPLICATION_FACTOR)')
    .option('--json', 'print JSON')
    .action(async (opts: { partitions?: string; replicationFactor?: string; json?: boolean }) => {
      const config = configOrExit();
      if (!config.kafka.brokers) throw new CliError('KAFKA_BROKERS is not set: nothing to set up (events stay in the outbox until it is)', 2);
      const partitions = opts.partitions === undefined ? config.kafka.topicPartitions : positiveInt('--partitions', opts.partitions);
      const replicationFactor = opts.replicationFactor === undefined ? config.kafka.topicReplicationFactor : positiveInt('--replication-factor', opts.replicationFactor);
      const log = createLogger({ ...config.log, level: config.log.level === 'info' ? 'warn' : config.log.level }, undefined, { stderr: true });
      let result;
      try {
        result = await setupTopics({ ...config.kafka, brokers: config.kafka.brokers }, log, { partitions, replicationFactor, answerTimeoutMs: config.outbox.relayKafkaTimeoutMs });
      } catch (err) {
        // Unreachable is a failure (exit 1), as for PostgreSQL and Redis; 3 is for what was asked for and is not there.
        if (err instanceof TopicSetupError) throw new CliError(err.message, 1);
        throw err;
      }
      if (opts.json) return printJson(result);
      for (const r of result) {
        process.stdout.write(`${r.topic.padEnd(18)} ${r.outcome === 'created' ? `created (${partitions} partitions, replication ${replicationFactor})` : 'exists (left as it is)'}\n`);
      }
    });
}
