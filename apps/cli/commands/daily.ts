import type { Command } from 'commander';
import { DEFAULT_DAILY_HOURS, dailyDepsOf, dailyReport, dailyText, parseDailyHours } from '../../../libs/ops/daily.js';
import { kafkaBrokersMismatch } from '../../../libs/ops/outbox-kafka.js';
import { CliError, printJson, withContext } from '../context.js';
import { noFleetWarning } from '../queue-source.js';

export function registerDaily(program: Command): void {
  program
    .command('daily')
    .description('daily health view: imports, emails, weekly emails, dead letters and the outbox of the last hours (the /daily page)')
    .option('--hours <n>', `window in hours (default: ${DEFAULT_DAILY_HOURS})`)
    .option('--json', 'print JSON')
    .action(async (opts: { hours?: string; json?: boolean }) => {
      const hours = parseDailyHours(opts.hours);
      if (typeof hours === 'string') throw new CliError(`--${hours}`, 2);
      await withContext(async (ctx) => {
        const r = await dailyReport(dailyDepsOf(ctx), hours);
        // The report says so too (attention queue_prefix_unused); here with what the database shows.
        if (!r.source.fleetSeen) process.stderr.write(`fleet: warning: ${await noFleetWarning(ctx, r.source)}\n`);
        const mismatch = kafkaBrokersMismatch(r.outbox.kafka, ctx.config.kafka.brokers);
        if (mismatch) process.stderr.write(`fleet: warning: ${mismatch}\n`);
        if (opts.json) return printJson(r);
        process.stdout.write(dailyText(r));
      });
    });
}
