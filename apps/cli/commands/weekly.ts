import type { Command } from 'commander';
import { ineligibleReason } from '../../../libs/db/repositories/weekly-status.js';
import { isoWeekOf, isoWeekRange, parseIsoWeek, InvalidIsoWeekError } from '../../../libs/weekly/iso-week.js';
import { dueWeek, nextRun } from '../../../libs/weekly/schedule.js';
import { WEEKLY_SCHEDULER_ID, registerWeeklySchedule } from '../../producers/weekly-schedule.js';
import { previewWeeklyEmail, runWeeklyFanout } from '../../../workers/weekly-status/worker.js';
import { CliError, printJson, withContext } from '../context.js';
import { isoSeconds } from '../format.js';

function patientIdArg(raw: string): number {
  if (!/^[1-9][0-9]{0,9}$/.test(raw)) throw new CliError(`patientId: expected a positive whole number (got ${JSON.stringify(raw)})`, 2);
  return Number(raw);
}

function weekArg(raw: string): string {
  try {
    parseIsoWeek(raw);
    return raw;
  } catch (err) {
    if (err instanceof InvalidIsoWeekError) throw new CliError(`--week: ${err.message}`, 2);
    throw err;
  }
}

const berlinTime = (d: Date, timeZone: string) =>
  new Intl.DateTimeFormat('de-DE', { timeZone, dateStyle: 'full', timeStyle: 'short' }).format(d);

export function registerWeekly(program: Command): void {
  const weekly = program.command('weekly').description('weekly patient status emails: preview, run a fan-out by hand, show the schedule');

  weekly
    .command('preview <patientId>')
    .description('print the email this patient would get now (subject, headers, plain text; --html for HTML)')
    .option('--html', 'print the HTML instead of the plain text')
    .option('--json', 'print JSON (facts and the rendered email)')
    .action(async (rawId: string, opts: { html?: boolean; json?: boolean }) => {
      const patientId = patientIdArg(rawId);
      await withContext(async (ctx) => {
        const preview = await previewWeeklyEmail(ctx, patientId);
        if (!preview) throw new CliError(`patient ${patientId} not found`, 3);
        const week = isoWeekOf(ctx.clock.now(), ctx.config.weekly.timeZone);
        const { start } = isoWeekRange(week, ctx.config.weekly.timeZone);
        const reason = ineligibleReason(preview.facts, { isoWeek: week, weekStart: start });
        if (opts.json) return printJson({ isoWeek: week, eligible: reason === null, reason, ...preview });
        const e = preview.email;
        const out = [
          `# patient ${patientId}, week ${week}: ${reason === null ? 'eligible' : `would not be sent (${reason})`}`,
          `# ${preview.facts.activeSearches} active search(es); requests ${preview.facts.requestsSince} since last update, ${preview.facts.requestsTotal} in total; answers ${preview.facts.answersTotal}`,
          `From: ${e.from}`,
          `To: ${e.to ?? '(no email address)'}`,
          `Reply-To: ${e.replyToAddress}`,
          `Subject: ${e.subject}`,
          ...Object.entries(e.headers).map(([k, v]) => `${k}: ${v}`),
          '',
          opts.html ? e.html : e.text,
        ];
        process.stdout.write(out.join('\n') + (out.at(-1)!.endsWith('\n') ? '' : '\n'));
      });
    });

  weekly
    .command('run')
    .description('run a fan-out by hand: select eligible patients and queue one email job each (workers send them)')
    .option('--week <isoWeek>', 'ISO week, e.g. 2026-W48 (default: the current week; past weeks are refused)')
    .option('--dry-run', 'count only, queue nothing')
    .option('--json', 'print JSON')
    .action(async (opts: { week?: string; dryRun?: boolean; json?: boolean }) => {
      await withContext(async (ctx) => {
        const isoWeek = opts.week ? weekArg(opts.week) : isoWeekOf(ctx.clock.now(), ctx.config.weekly.timeZone);
        const r = await runWeeklyFanout(ctx, { isoWeek, dryRun: Boolean(opts.dryRun) });
        // A refused week queues nothing: its counts would read like a run that happened.
        if (r.refused) {
          throw new CliError(`week ${isoWeek} is not the current week (${r.refused === 'past_week' ? 'past weeks are never sent' : 'not started yet'}): nothing queued; use --dry-run to count`, 2);
        }
        if (opts.json) printJson(r);
        else {
          process.stdout.write(
            [
              `week ${r.isoWeek}${r.dryRun ? ' (dry run: nothing queued)' : ''}`,
              `  searching with an active search  ${r.candidates}`,
              `  eligible                         ${r.eligible}`,
              `  queued                           ${r.queued}`,
              `  skipped: opted out               ${r.skippedOptedOut}`,
              `  skipped: no email address        ${r.skippedNoEmail}`,
              `  skipped: no valid email address  ${r.skippedInvalidEmail}`,
              `  skipped: already sent this week  ${r.skippedAlreadySent}`,
              '',
            ].join('\n'),
          );
          if (!r.dryRun && r.queued > 0) process.stdout.write('the weekly workers (fleet start --only weekly,email) compose and send them\n');
        }
      });
    });

  weekly
    .command('schedule')
    .description('show the schedule: cron, zone, the next runs, and the registered BullMQ job scheduler')
    .option('--register', 'register (or update) the job scheduler now and catch up this week if due')
    .action(async (opts: { register?: boolean }) => {
      await withContext(async (ctx) => {
        const { cron, timeZone } = ctx.config.weekly;
        const now = ctx.clock.now();
        const lines = [`WEEKLY_CRON ${cron}  WEEKLY_TZ ${timeZone}`, `due now: ${dueWeek({ cron, timeZone }, now) ?? '(no week due)'}`];
        let at = now;
        for (let i = 0; i < 3; i++) {
          at = nextRun({ cron, timeZone }, at);
          lines.push(`next: ${isoSeconds(at)}  (${berlinTime(at, timeZone)}, ${isoWeekOf(at, timeZone)})`);
        }
        if (opts.register) {
          const before = Date.now();
          const r = await registerWeeklySchedule(ctx);
          let catchUp = '';
          if (r.catchUp) {
            // The fan-out is keyed by its week: when this week's job exists already (run at the
            // start of a fleet process, or queued before), adding it again does nothing.
            const job = await ctx.queues.queue('weekly-fanout').getJob(r.catchUp.jobId);
            catchUp = job && job.timestamp < before
              ? `, this week's fan-out (${r.catchUp.isoWeek}) exists already (${await job.getState()}): nothing queued again`
              : `, catch-up fan-out queued for ${r.catchUp.isoWeek}`;
          }
          lines.push(`registered: ${r.action}${catchUp}`);
        }
        const s = await ctx.queues.queue('weekly-fanout').getJobScheduler(WEEKLY_SCHEDULER_ID);
        lines.push(
          s
            ? `job scheduler ${WEEKLY_SCHEDULER_ID}: ${s.pattern} ${s.tz}, next ${isoSeconds(s.next ? new Date(s.next) : null) ?? '-'}`
            : `job scheduler ${WEEKLY_SCHEDULER_ID}: not registered (fleet start --only weekly registers it)`,
        );
        process.stdout.write(lines.join('\n') + '\n');
      });
    });
}
