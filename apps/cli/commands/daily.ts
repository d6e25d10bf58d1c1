import type { Command } from 'commander';
import { DEFAULT_DAILY_HOURS, dailyReport, dailyText, parseDailyHours } from '../../../libs/ops/daily.js';
import { CliError, printJson, withContext } from '../context.js';

export function registerDaily(program: Command): void {
  program
    .command('daily')
    .description('daily health view: imports, emails, weekly emails, dead letters and the outbox of the last hours (the /daily page)')
    .option('--hours <n>', `window in hours (default ${DEFAULT_DAILY_HOURS})`)
    .option('--json', 'print JSON')
    .action(async (opts: { hours?: string; json?: boolean }) => {
      const hours = parseDailyHours(opts.hours);
      if (typeof hours === 'string') throw new CliError(`--${hours}`, 2);
      await withContext(async (ctx) => {
        const r = await dailyReport({ database: ctx.database, queues: ctx.queues, now: ctx.clock.now(), weeklyTimeZone: ctx.config.weekly.timeZone, kafkaConfigured: Boolean(ctx.config.kafka.brokers?.length) }, hours);
        if (opts.json) return printJson(r);
        process.stdout.write(dailyText(r));
      });
    });
}
