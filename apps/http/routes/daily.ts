import { Router, type Request } from 'express';
import { weeklyUnreachablePatients } from '../../../libs/db/repositories/weekly-status.js';
import { dailyDepsOf, dailyReport, formatAge, localTimeWithOffset, parseDailyHours, WEEKLY_UNREACHABLE_PAGE, WEEKLY_UNREACHABLE_WHY, type DailyReport } from '../../../libs/ops/daily.js';
import { outboxKafkaLine } from '../../../libs/ops/outbox-kafka.js';
import { html, page, type SafeHtml } from '../html.js';
import type { HttpRouteDeps, HttpRouteModule } from './types.js';

const num = (n: number) => n.toLocaleString('en-GB');

/** One part of the view: a heading and label/value rows. */
function part(title: SafeHtml | string, rows: Array<[string, number | string]>, cell: 'num' | 'text' = 'num'): SafeHtml {
  return html`<h2>${title}</h2><table class="counts"><tbody>${rows.map(
    ([label, v]) => html`<tr><th>${label}</th><td class="${cell}">${typeof v === 'number' ? num(v) : v}</td></tr>`,
  )}</tbody></table>`;
}

function body(r: DailyReport): SafeHtml {
  const p = r.patientImports;
  const t = r.therapistImports;
  const e = r.emails;
  const w = r.weeklyEmails;
  const o = r.outbox;
  const other = r.hours === 24 ? html`<a href="/daily?hours=168">last 7 days</a>` : html`<a href="/daily">last 24 hours</a>`;
  return html`<h1>Daily health</h1>
<p class="muted">Last ${r.hours} hours: ${r.window.fromLocal} to ${r.window.toLocal} (${r.timeZone}). Queues: prefix <code>${r.source.queuePrefix}</code> on redis ${r.source.redis}. Counts of the window; "open", "waiting",
"pending" and dead letters are as of now. Waiting longer than ${formatAge(r.staleAfterSeconds)} needs a look. Also: ${other} · <a href="/daily/api?hours=${r.hours}">JSON</a> · <code>fleet daily</code></p>
${r.status === 'ok'
  ? html`<p class="notice ok"><strong>All in order.</strong></p>`
  : html`<div class="notice"><strong>Needs attention:</strong><ul>${r.attention.map(
      // The page that deals with it; without one, the command (on the server) that does.
      (a) => html`<li>${a.message}${a.page ? html` — <a href="${a.page}">open ${a.page}</a>` : a.command ? html` — <code>${a.command}</code>` : ''}</li>`,
    )}</ul></div>`}
${part('Patient registration imports', [
  ['imported', p.imported],
  ['duplicate', p.duplicate],
  ['failed', p.failed],
  ['failed, discarded since', p.discarded],
  ['replaced by a newer upload before import', p.replaced],
  ['failed, waiting for an operator (any time)', p.failedWaiting],
  ['still open', p.open],
  ['oldest open', formatAge(p.oldestOpenAgeSeconds)],
  ['last successful bucket poll', p.lastPoll.at ? `${p.lastPoll.atLocal} (${formatAge(p.lastPoll.ageSeconds)} ago)` : 'none recorded'],
])}
${part('Therapist imports', [
  ['runs closed', t.runsClosed],
  ['runs open', t.runsOpen],
  ['files imported', t.files.imported],
  ['files partly imported', t.files.partial],
  ['files failed', t.files.failed],
  ['files skipped', t.files.skipped],
  ['therapists failed', t.therapistsFailed],
  ['failed or partial files replaced since by a newer one', t.superseded.failed + t.superseded.partial],
  ['skipped files needing a person (name does not fit, too large, unreadable)', t.skippedOpen.misfit + t.skippedOpen.tooLarge + t.skippedOpen.unreadable],
  ['files waiting', t.filesWaiting],
  ['oldest waiting', formatAge(t.oldestWaitingAgeSeconds)],
])}
${part('Emails', [
  ['sent', e.sent],
  ['failed', e.failed],
  ['dropped (no longer wanted)', e.dropped],
  ['pending', e.pending],
  ['oldest pending', formatAge(e.oldestPendingAgeSeconds)],
])}
${part(html`Weekly emails <span class="muted">(${w.isoWeek})</span>`, [
  ['sent', w.sent],
  ['skipped', w.skipped],
  ['pending', w.pending],
  ['failed', w.failed],
  ['searching patients who get none: no email address (now)', w.unreachable.noEmail],
  ['searching patients who get none: no valid email address (now)', w.unreachable.invalidEmail],
])}
${w.unreachable.noEmail + w.unreachable.invalidEmail ? html`<p class="muted">Their patient ids: <a href="${WEEKLY_UNREACHABLE_PAGE}">${WEEKLY_UNREACHABLE_PAGE}</a></p>` : ''}
${part(
  'Schedules',
  r.schedules.map((x) => [x.id, x.registered ? `next ${x.nextLocal ?? '–'}` : `not registered (${x.cronVariable}, role ${x.role})`] as [string, string]),
  'text',
)}
${r.pausedQueues.length ? html`<p class="muted">Paused queues (their jobs wait until resumed on <a href="/dashboard">/dashboard</a>): ${r.pausedQueues.join(', ')}</p>` : ''}
${part('Dead letters', [...Object.entries(r.deadLetters.byQueue).map(([q, n]) => [q, n] as [string, number]), ['total waiting', r.deadLetters.total]])}
${part('Outbox', [
  ['unpublished', o.unpublished],
  ['parked', o.parked],
  ['oldest unpublished', formatAge(o.oldestUnpublishedAgeSeconds)],
])}
<p class="muted">${outboxKafkaLine(o.kafka, localTimeWithOffset)}</p>`;
}

/**
 * The daily health view: the last N hours (?hours=, default 24) of imports, emails, dead
 * letters and the outbox, with one line on top that says whether anything needs a look. The
 * same report as `fleet daily`; JSON at ./api. Counts only, no personal data.
 */
export const dailyRoutes: HttpRouteModule = {
  name: 'daily',
  queues: true,
  path: '/daily',
  access: 'operator',
  database: true,
  router({ ctx }: HttpRouteDeps) {
    const router = Router();
    const report = (hours: number) =>
      dailyReport(dailyDepsOf(ctx), hours);
    const hoursOf = (req: Request) => parseDailyHours(typeof req.query.hours === 'string' ? req.query.hours : undefined);

    router.get('/api', async (req, res) => {
      const hours = hoursOf(req);
      if (typeof hours === 'string') return void res.status(400).json({ error: hours });
      res.json(await report(hours));
    });
    // The patients who would get the weekly email but have no (valid) email address: ids only.
    router.get(WEEKLY_UNREACHABLE_PAGE.slice('/daily'.length), async (_req, res) => {
      const patients = await weeklyUnreachablePatients(ctx.database.db);
      res.type('html').send(
        page(
          'Patients without a weekly email · Curavani Fleet',
          html`<h1>Patients without a weekly email</h1>
<p class="muted">Searching (<code>auf_der_Suche</code>), with an active search and no opt-out, but no email address or no plausible one: the weekly fan-out skips them every week. Patient ids only; <code>fleet weekly unreachable</code> lists the same. Back to <a href="/daily">Daily health</a>.</p>
${patients.length
  ? html`<table class="counts"><thead><tr><th>patient id</th><th>why</th></tr></thead><tbody>${patients.map((p) => html`<tr><td class="num">${String(p.patientId)}</td><td class="text">${WEEKLY_UNREACHABLE_WHY[p.why]}</td></tr>`)}</tbody></table>`
  : html`<p class="notice ok">None: every searching patient with an active search and no opt-out has a valid email address.</p>`}`,
          { nav: true },
        ),
      );
    });
    router.get('/', async (req, res) => {
      const hours = hoursOf(req);
      if (typeof hours === 'string') {
        return void res.status(400).type('html').send(page('Bad request · Curavani Fleet', html`<h1>Bad request</h1><p>${hours}</p><p><a href="/daily">Last 24 hours</a></p>`, { nav: true }));
      }
      res.type('html').send(page('Daily health · Curavani Fleet', body(await report(hours)), { nav: true }));
    });
    return router;
  },
};
