import type { Command } from 'commander';
import { listOutbox } from '../../../libs/db/repositories/outbox.js';
import { outboxStats } from '../../../libs/db/repositories/outbox-relay.js';
import { setupTopics, TopicSetupError } from '../../../libs/events/kafka.js';
import { createLogger } from '../../../libs/log/index.js';
import { CliError, configOrExit, printJson, withContext } from '../context.js';

function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

const iso = (d: Date | null) => (d ? d.toISOString().replace(/\.\d{3}Z$/, 'Z') : '-');

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
    .option('--limit <n>', 'at most this many events', '50')
    .option('--json', 'print JSON (with payloads)')
    .action(async (opts: { unpublished?: boolean; limit: string; json?: boolean }) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new CliError(`--limit: expected a whole number >= 1 (got ${JSON.stringify(opts.limit)})`, 2);
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
              iso(r.publishedAt),
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
        const kafka = ctx.config.kafka.brokers ? ctx.config.kafka.brokers.join(',') : null;
        if (opts.json) return printJson({ kafkaBrokers: kafka, retentionDays: ctx.config.outbox.retentionDays, ...stats });
        process.stdout.write(
          `kafka brokers:       ${kafka ?? 'not configured (KAFKA_BROKERS empty): events stay in the outbox'}\n` +
            `unpublished events:  ${stats.unpublished}${stats.unpublished ? ` (oldest ${age(stats.oldestUnpublishedAgeSeconds)} old, since ${iso(stats.oldestUnpublishedAt)})` : ''}\n` +
            `  with failed tries: ${stats.failing}\n` +
            `published (kept):    ${stats.published} (pruned after ${ctx.config.outbox.retentionDays || 'never: retention 0'}${ctx.config.outbox.retentionDays ? ' days' : ''})\n`,
        );
        if (stats.byTopic.length) {
          process.stdout.write('\n' + table(['topic', 'unpublished', 'published'], stats.byTopic.map((t) => [t.topic, String(t.unpublished), String(t.published)])));
        }
      });
    });

  events
    .command('setup')
    .description('create the event topics on Kafka (deploy time; existing topics are left alone)')
    .option('--partitions <n>', 'partitions per topic (default KAFKA_TOPIC_PARTITIONS)')
    .option('--replication-factor <n>', 'replicas per partition (default KAFKA_TOPIC_REPLICATION_FACTOR)')
    .option('--json', 'print JSON')
    .action(async (opts: { partitions?: string; replicationFactor?: string; json?: boolean }) => {
      const config = configOrExit();
      if (!config.kafka.brokers) throw new CliError('KAFKA_BROKERS is not set: nothing to set up (events stay in the outbox until it is)', 2);
      const whole = (v: string | undefined, flag: string, fallback: number) => {
        if (v === undefined) return fallback;
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1) throw new CliError(`${flag}: expected a whole number >= 1 (got ${JSON.stringify(v)})`, 2);
        return n;
      };
      const partitions = whole(opts.partitions, '--partitions', config.kafka.topicPartitions);
      const replicationFactor = whole(opts.replicationFactor, '--replication-factor', config.kafka.topicReplicationFactor);
      const log = createLogger({ ...config.log, level: config.log.level === 'info' ? 'warn' : config.log.level });
      let result;
      try {
        result = await setupTopics({ ...config.kafka, brokers: config.kafka.brokers }, log, { partitions, replicationFactor });
      } catch (err) {
        if (err instanceof TopicSetupError) throw new CliError(err.message, err.code === 'unreachable' ? 3 : 1);
        throw err;
      }
      if (opts.json) return printJson(result);
      for (const r of result) {
        process.stdout.write(`${r.topic.padEnd(18)} ${r.outcome === 'created' ? `created (${partitions} partitions, replication ${replicationFactor})` : 'exists (left as it is)'}\n`);
      }
    });
}
