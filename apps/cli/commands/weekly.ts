import type { Command } from 'commander';
import { DEV_UNSUBSCRIBE_SECRET } from '../../../libs/config/index.js';
import {
  ineligibleReason,
  optBackInToWeeklyUpdates,
  optOutOfWeeklyUpdates,
  weeklyDeliveryOfWeek,
  weeklyUnreachablePatients,
  type WeeklyUnwantedReason,
} from '../../../libs/db/repositories/weekly-status.js';
import { isoWeekOf, isoWeekRange, parseIsoWeek, InvalidIsoWeekError } from '../../../libs/weekly/iso-week.js';
import { dueWeek, nextRun } from '../../../libs/weekly/schedule.js';
import { WEEKLY_SCHEDULER_ID, registerWeeklySchedule } from '../../producers/weekly-schedule.js';
import { previewWeeklyEmail, runWeeklyFanout, type FanoutResult } from '../../../workers/weekly-status/index.js';
import { CliError, operatorName, printJson, requiredReason, withContext } from '../context.js';
import { columns, displayTime, isoSeconds } from '../format.js';
import { WEEKLY_UNREACHABLE_WHY } from '../../../libs/ops/daily.js';
import { jobIdFor } from '../../../libs/queues/index.js';

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

/**
 * Why a fan-out queued nothing, or stopped: the week is not the current one, or it ended while
 * the fan-out ran (then the jobs queued before its end are said, not "nothing queued").
 */
export function refusalMessage(r: Pick<FanoutResult, 'isoWeek' | 'queued' | 'refused'>): string {
  if (r.refused === 'past_week' && r.queued > 0) {
    return `week ${r.isoWeek} ended while the fan-out ran: it stopped after queueing ${r.queued} email job(s); any of them not sent by the week's end is skipped (past weeks are never sent)`;
  }
  return `week ${r.isoWeek} is not the current week (${r.refused === 'past_week' ? 'past weeks are never sent' : 'not started yet'}): nothing queued; use --dry-run to count`;
}

/** `4: 2 sent, 1 pending, 0 failed, 1 dropped` (this week's email recorded, by what became of it). */
export function alreadyRecordedText(r: Pick<FanoutResult, 'skippedAlreadySent' | 'skippedAlreadyRecorded'>): string {
  const a = r.skippedAlreadyRecorded;
  if (!r.skippedAlreadySent) return '0';
  const parts = [[a.sent, 'sent'], [a.pending, 'pending'], [a.failed, 'failed'], [a.dropped, 'dropped']] as const;
  return `${r.skippedAlreadySent}: ${parts.filter(([n]) => n > 0).map(([n, what]) => `${n} ${what}`).join(', ')}`;
}

const berlinTime = (d: Date, timeZone: string) =>
  new Intl.DateTimeFormat('de-DE', { timeZone, dateStyle: 'full', timeStyle: 'short' }).format(d);

export function registerWeekly(program: Command): void {
  const weekly = program
    .command('weekly')
    .description('weekly patient status emails: preview, run a fan-out by hand, show the schedule, opt a patient out or back in');

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
        // The fan-out skips a patient whose email of the week is recorded, whatever its status.
        const thisWeek = await weeklyDeliveryOfWeek(ctx.database.db, patientId, week);
        const verdict = previewVerdict(week, reason, thisWeek);
        // A terminal without the fleet's UNSUBSCRIBE_SECRET signs the link with the development
        // secret: the link printed does not work against a fleet with its own (404).
        if (ctx.config.weekly.unsubscribeSecret === DEV_UNSUBSCRIBE_SECRET) {
          process.stderr.write(
            "fleet: warning: UNSUBSCRIBE_SECRET is not set here: the unsubscribe link is signed with the development secret and does not work against a fleet with its own secret (404); export the fleet's UNSUBSCRIBE_SECRET to preview the link it sends\n",
          );
        }
        if (opts.json) {
          // eligible: the next fan-out would send this email; reason already_recorded: this week's is recorded (thisWeek says what became of it).
          return printJson({
            isoWeek: week,
            eligible: reason === null && thisWeek === null,
            reason: reason ?? (thisWeek ? 'already_recorded' : null),
            thisWeek: thisWeek
              ? { status: thisWeek.status, sentAt: isoSeconds(thisWeek.sentAt), updatedAt: isoSeconds(thisWeek.updatedAt), dropReason: thisWeek.status === 'dropped' ? dropReasonOf(thisWeek.dropReason) : null, says: verdict }
              : null,
            ...preview,
          });
        }
        const e = preview.email;
        const out = [
          `# patient ${patientId}, week ${week}: ${verdict}`,
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
        // A refused week is said below in one line (exit 2): not also as the worker's warn log line before it.
        const r = await runWeeklyFanout(ctx, { isoWeek, dryRun: Boolean(opts.dryRun) }, ctx.log.child({}, { level: 'error' }));
        // A refused week's counts would read like a run that happened.
        if (r.refused) throw new CliError(refusalMessage(r), 2);
        if (opts.json) printJson(r);
        else {
          process.stdout.write(
            [
              `week ${r.isoWeek}${r.dryRun ? ' (dry run: nothing queued)' : ''}`,
              ...([
                ['searching with an active search', r.candidates],
                ['eligible', r.eligible],
                ['queued', r.queued],
                ['skipped: opted out', r.skippedOptedOut],
                ['skipped: no email address', r.skippedNoEmail],
                ['skipped: no valid email address', r.skippedInvalidEmail],
                // Not "already sent": the week's email may be waiting, failed or dropped; none gets a second one.
                ['skipped: already recorded this week', alreadyRecordedText(r)],
              ] as const).map(([label, v]) => `  ${label.padEnd(37)}${v}`),
              '',
            ].join('\n'),
          );
          if (!r.dryRun && r.queued > 0) process.stdout.write('the weekly workers (fleet start --only weekly,email) compose and send them\n');
        }
      });
    });

  // The patients the fan-out skips every week for want of an address (/daily counts them): ids only.
  weekly
    .command('unreachable')
    .description('list the patients who would get the weekly email but have no email address or no valid one (patient ids and why, no names or addresses)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await withContext(async (ctx) => {
        const patients = await weeklyUnreachablePatients(ctx.database.db);
        const noEmail = patients.filter((p) => p.why === 'no_email').length;
        const invalidEmail = patients.length - noEmail;
        if (opts.json) return printJson({ count: patients.length, noEmail, invalidEmail, patients });
        if (!patients.length) {
          process.stdout.write('every patient searching with an active search and no opt-out has a valid email address\n');
          return;
        }
          process.stdout.write(
          [
            `${patients.length} patient(s) searching with an active search and no opt-out get no weekly email: ${noEmail} without an email address, ${invalidEmail} without a valid one`,
            '',
            columns(['patient', 'why'], patients.map((p) => [p.patientId, WEEKLY_UNREACHABLE_WHY[p.why]])),
            '',
            'They get the weekly email from the next fan-out on once their address is corrected on the platform.',
            '',
          ].join('\n'),
        );
      });
    });

  weekly
    .command('schedule')
    .description("show the schedule: cron, zone, the week due now and its fan-out job's state, the next runs, and the registered BullMQ job scheduler")
    .option('--register', 'register (or update) the job scheduler now and catch up this week if due')
    .option('--json', 'print JSON')
    .action(async (opts: { register?: boolean; json?: boolean }) => {
      await withContext(async (ctx) => {
        const { cron, timeZone } = ctx.config.weekly;
        const now = ctx.clock.now();
        const fanouts = ctx.queues.queue('weekly-fanout');
        const due = dueWeek({ cron, timeZone }, now);
        const next: Array<{ at: Date; isoWeek: string }> = [];
        for (let i = 0, at = now; i < 3; i++) {
          at = nextRun({ cron, timeZone }, at);
          next.push({ at, isoWeek: isoWeekOf(at, timeZone) });
        }
        let registered: { action: string; catchUp: string } | null = null;
        if (opts.register) {
          const before = Date.now();
          const r = await registerWeeklySchedule(ctx);
          let catchUp = '';
          if (r.catchUp) {
            // The fan-out is keyed by its week: when this week's job exists already (run at the
            // start of a fleet process, or queued before), adding it again does nothing.
            const job = await fanouts.getJob(r.catchUp.jobId);
            catchUp = job && job.timestamp < before
              ? `this week's fan-out (${r.catchUp.isoWeek}) exists already (${await job.getState()}): nothing queued again`
              : `catch-up fan-out queued for ${r.catchUp.isoWeek}`;
          }
          registered = { action: r.action, catchUp };
        }
        // "due now: 2026-W50" alone read as "this week's emails have not gone out yet", also
        // after the fan-out had run: the job's state says whether it has.
        const dueJob = due ? await fanouts.getJob(jobIdFor('weekly-fanout', { isoWeek: due })!) : undefined;
        const dueState = dueJob ? await dueJob.getState() : null;
        const s = await fanouts.getJobScheduler(WEEKLY_SCHEDULER_ID);
        const scheduler = s ? { id: WEEKLY_SCHEDULER_ID, pattern: s.pattern ?? null, timeZone: s.tz ?? null, next: isoSeconds(s.next ? new Date(s.next) : null) } : null;
        if (opts.json) {
          printJson({
            cron,
            timeZone,
            dueWeek: due ?? null,
            dueWeekFanout: due ? { jobId: jobIdFor('weekly-fanout', { isoWeek: due }), state: dueState } : null,
            next: next.map((n) => ({ at: isoSeconds(n.at), isoWeek: n.isoWeek })),
            ...(registered ? { registered } : {}),
            scheduler,
          });
          return;
        }
        const dueText = due
          ? `${due} (its fan-out: ${dueState ?? 'not in the queue: not run yet, or removed after its retention'})`
          : '(no week due)';
        const lines = [`WEEKLY_CRON ${cron}  WEEKLY_TZ ${timeZone}`, `due now: ${dueText}`];
        for (const n of next) lines.push(`next: ${displayTime(n.at)}  (${berlinTime(n.at, timeZone)}, ${n.isoWeek})`);
        if (registered) lines.push(`registered: ${registered.action}${registered.catchUp ? `, ${registered.catchUp}` : ''}`);
        lines.push(
          scheduler
            ? `job scheduler ${WEEKLY_SCHEDULER_ID}: ${scheduler.pattern} ${scheduler.timeZone}, next ${displayTime(s?.next ? new Date(s.next) : null) ?? '-'}`
            : `job scheduler ${WEEKLY_SCHEDULER_ID}: not registered (fleet start --only weekly registers it)`,
        );
        process.stdout.write(lines.join('\n') + '\n');
      });
    });

  // A patient who asks staff (phone, letter, email) to stop the weekly emails, or to have them
  // back, is served as by the unsubscribe link: the same row change, audit row and
  // patient.updated event (source "staff"), with who did it and why.
  for (const optOut of [true, false]) {
    weekly
      .command(`${optOut ? 'opt-out' : 'opt-in'} <patientId>`)
      .description(
        optOut
          ? 'opt a patient out of the weekly emails on their request (as the unsubscribe link does; an email of this week not yet sent is dropped)'
          : "undo an opt-out on the patient's request: the emails resume with the next fan-out (still one a week)",
      )
      .option('--reason <text>', 'why, e.g. how the patient asked (required; written to the audit table)')
      .option('--actor <name>', 'who (default: $FLEET_OPERATOR, else the login name)')
      .option('--json', 'print JSON')
      .action(async (rawId: string, opts: { reason?: string; actor?: string; json?: boolean }) => {
        const patientId = patientIdArg(rawId);
        const reason = requiredReason(opts.reason);
        await withContext(async (ctx) => {
          const by = { actor: operatorName(opts.actor), via: 'cli', source: 'staff' as const, reason };
          const r = await (optOut ? optOutOfWeeklyUpdates : optBackInToWeeklyUpdates)(ctx.database.db, patientId, by);
          if (!r.found) throw new CliError(`patient ${patientId} not found`, 3);
          // Read after the change: a delivery claimed from now on sees the opt-out.
          const isoWeek = isoWeekOf(ctx.clock.now(), ctx.config.weekly.timeZone);
          const thisWeek = await weeklyDeliveryOfWeek(ctx.database.db, patientId, isoWeek);
          if (opts.json) {
            return printJson({ patientId, optedOut: optOut, changed: r.changed, thisWeek: { isoWeek, status: thisWeek?.status ?? null, sentAt: isoSeconds(thisWeek?.sentAt ?? null) } });
          }
          const done = !r.changed
            ? `patient ${patientId} ${optOut ? 'has opted out already' : 'has not opted out'}: nothing changed, nothing audited`
            : optOut
              ? `patient ${patientId} opted out of the weekly emails (audited, patient.updated event queued)`
              : `patient ${patientId} gets the weekly emails again from the next fan-out, still one a week (audited, patient.updated event queued)`;
          process.stdout.write(`${done}\n${thisWeekLine(isoWeek, thisWeek, optOut)}\n`);
        });
      });
  }
}

/** This week's delivery of a patient, as weeklyDeliveryOfWeek reads it. */
type ThisWeek = { status: string; sentAt: Date | null; updatedAt?: Date; dropReason?: string | null; outcomeUnknown?: boolean };

/** The still-wanted check's drop codes in staff's words (every code: the compiler checks it). */
const DROP_REASONS: Record<WeeklyUnwantedReason, string> = {
  address_changed: 'address changed',
  opted_out: 'opted out',
  not_searching: 'stopped searching',
  no_active_search: 'no active search',
  week_over: 'its week ended before it went out',
  not_found: 'patient not found',
  no_patient: 'no patient',
  not_a_weekly_key: 'not a weekly email',
};

/** Why a weekly email was dropped, from its recorded code (`drop_reason`); null when none is recorded. */
export function dropReasonOf(code: string | null | undefined): string | null {
  if (!code) return null;
  return DROP_REASONS[code as WeeklyUnwantedReason] ?? code.replace(/_/g, ' ');
}

/**
 * What became of this week's email, in the words staff say on the phone (`went out already at
 * ...`, `dropped (address changed) at ..., not sent`): `fleet weekly opt-out`/`opt-in` and
 * `fleet weekly preview` say it the same way. `willBeDropped`: the patient no longer wants it
 * (opted out, stopped searching), so one still pending is dropped at send time.
 */
export function thisWeekState(d: ThisWeek, willBeDropped: boolean): string {
  const at = (t: Date | null | undefined) => (t ? ` at ${displayTime(t)}` : '');
  switch (d.status) {
    case 'sent':
      return `went out already at ${displayTime(d.sentAt) ?? '(time not recorded)'}`;
    case 'sending':
      return 'being sent right now, it may still arrive';
    case 'pending':
      return willBeDropped ? 'not sent yet, it is dropped' : 'waiting to be sent';
    case 'dropped': {
      const why = dropReasonOf(d.dropReason);
      // A batch resumed after an unanswered request: it may have gone out with that request.
      const mayHaveGone = d.outcomeUnknown ? ' (an earlier request may have carried it)' : '';
      return `dropped${why ? ` (${why})` : ''}${at(d.updatedAt)}, not sent${mayHaveGone}`;
    }
    case 'failed':
      return `failed${at(d.updatedAt)}, not sent (its dead letter: fleet dlq list)`;
    default:
      return `${d.status}, not sent`;
  }
}

/** What became of this week's email, for staff on the phone with the patient. */
export function thisWeekLine(isoWeek: string, d: ThisWeek | null, optedOut: boolean): string {
  const week = `this week's email (${isoWeek})`;
  if (!d) return `${week}: none queued yet${optedOut ? '' : '; the next fan-out sends it if the patient is eligible (fleet weekly preview)'}`;
  return `${week}: ${thisWeekState(d, optedOut)}`;
}

/**
 * The preview's verdict for the week: the selection rules (ineligibleReason) and this week's
 * delivery. A patient whose email of the week is recorded (sent, pending, failed or dropped) gets
 * no other one this week, however eligible: "eligible" alone had staff promise an email that
 * would not come.
 */
export function previewVerdict(isoWeek: string, reason: string | null, thisWeek: ThisWeek | null): string {
  if (!thisWeek) return reason === null ? 'eligible' : `would not be sent (${reason})`;
  const unwanted = reason === 'opted_out' || reason === 'not_searching' || reason === 'no_active_search';
  const head = reason === null ? 'eligible, but' : `would not be sent (${reason}), and`;
  return `${head} this week's email (${isoWeek}) is already recorded: ${thisWeekState(thisWeek, unwanted)}; no other email this week`;
}
