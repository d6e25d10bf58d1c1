import { Router, type Request, type Response } from 'express';
import { therapistImportFileStatuses, type TherapistImportCounts, type TherapistImportFileStatus } from '../../../libs/db/schema/fleet-therapist-import.js';
import { COUNT_LABELS, formatShare, isOutcomeCount, metadataFoundText, notReadText, outcomeKeys, reportOf, therapistImportRepo as repo } from '../../../workers/therapist-import/index.js';
import { runFilesNeedingStaff, supersedingFiles, type RunFilesNeedingStaff } from '../../../libs/db/repositories/therapist-import.js';
import { html, page, pageTime, type SafeHtml } from '../html.js';
import type { HttpRouteModule } from './types.js';

/**
 * Therapist imports as staff follow them: the runs (files picked up together, one staff
 * summary email each) with their totals, the files of a run, and one file's report (every
 * count with its share, failed therapists with their reasons, status mismatches, metadata
 * that disagrees with the file, file-level errors). The same records `fleet imports runs` and
 * `fleet imports show <id> --kind therapist` print; JSON under ./api/.
 */
const RUN_LIMIT = 50;
const FILE_LIMIT = 1000;

const when = (d: Date | null | undefined) => pageTime(d);
/** In tables: to the minute, the zone in the column head. */
const at = (d: Date | null | undefined) => pageTime(d, 'minute');
const plural = (n: number, one: string, many: string) => `${num(n)} ${n === 1 ? one : many}`;
const num = (n: number | null | undefined) => (n === null || n === undefined ? '' : n.toLocaleString('en-GB'));
/** Short column heads of the tables (the counts table spells them out): Created, Updated, ... */
const OUTCOME_COLUMNS = outcomeKeys.map((k) => [k, k[0]!.toUpperCase() + k.slice(1)] as const);

function idParam(raw: string | string[] | undefined): number | null {
  return typeof raw === 'string' && /^\d{1,15}$/.test(raw) ? Number(raw) : null;
}

function countCells(c: TherapistImportCounts | null): SafeHtml {
  return html`<td class="num">${num(c?.total)}</td>${OUTCOME_COLUMNS.map(([k]) => html`<td class="num">${num(c?.[k])}</td>`)}`;
}

const countHeads = html`<th class="num">Therapists</th>${OUTCOME_COLUMNS.map(([, label]) => html`<th class="num">${label}</th>`)}`;
/** The overview's heads: "skipped" therapists are those not for adults (skipped files are another thing). */
const runCountHeads = html`<th class="num">Therapists</th>${OUTCOME_COLUMNS.map(([k, label]) => html`<th class="num">${k === 'skipped' ? 'Not adult' : label}</th>`)}`;

/** A run's files that need staff, each kind linking to the run's files of that status; empty when none. */
function staffCell(runId: number, n: RunFilesNeedingStaff | undefined): SafeHtml {
  const parts = n
    ? ([
        ['failed', n.failed, 'failed'],
        ['partial', n.partial, 'partial'],
        ['skipped', n.notImported, 'not imported'],
      ] as const).filter(([, count]) => count > 0)
    : [];
  return html`<td class="staff">${parts.map(([status, count, label], i) => html`${i ? ', ' : ''}<a href="/therapist-imports/runs/${runId}?status=${status}">${num(count)} ${label}</a>`)}</td>`;
}
const wide = (table: SafeHtml) => html`<div class="scroll">${table}</div>`;

/** The report's counts, each with its share of the file's (or run's) therapists. */
function countsTable(c: TherapistImportCounts, totalLabel = 'therapists in the file', status?: string): SafeHtml {
  const notRead = status === undefined ? null : notReadText(status);
  if (notRead) return html`<table class="counts"><tbody><tr><th>${totalLabel}</th><td class="muted">${notRead}</td></tr></tbody></table>`;
  return html`<table class="counts"><tbody>${COUNT_LABELS.map(
    ([k, label]) =>
      html`<tr><th>${k === 'total' ? totalLabel : label}</th><td class="num">${num(c[k])}</td><td class="muted">${k !== 'total' && isOutcomeCount(k) ? `of ${num(c.total)} (${formatShare(c[k], c.total, 'en-GB')})` : ''}</td></tr>`,
  )}</tbody></table>`;
}

function notFound(res: Response, what: string) {
  res.status(404).type('html').send(page('Not found · Curavani Fleet', html`<h1>Not found</h1><p>${what}</p><p><a href="/therapist-imports">All therapist import runs</a></p>`, { nav: true }));
}

export const therapistImportRoutes: HttpRouteModule = {
  name: 'therapist-imports',
  path: '/therapist-imports',
  access: 'operator',
  database: true,
  router({ ctx }) {
    const router = Router();
    const db = ctx.database.db;
    // The run or file a request names (null for an id that is not a number or not there).
    const runOf = (req: Request) => {
      const id = idParam(req.params.id);
      return id === null ? null : repo.getRun(db, id);
    };
    const fileOf = (req: Request) => {
      const id = idParam(req.params.id);
      return id === null ? null : repo.getFile(db, id);
    };

    router.get('/api/runs', async (_req, res) => {
      res.json(await repo.listRuns(db, RUN_LIMIT));
    });
    router.get('/api/runs/:id', async (req, res) => {
      const run = await runOf(req);
      if (!run) return void res.status(404).json({ error: `no therapist import run ${req.params.id}` });
      res.json({ run, files: await repo.listFiles(db, { runId: run.id, limit: FILE_LIMIT }) });
    });
    router.get('/api/files/:id', async (req, res) => {
      const file = await fileOf(req);
      if (!file) return void res.status(404).json({ error: `no therapist import file ${req.params.id}` });
      res.json(file);
    });

    router.get('/', async (_req, res) => {
      const runs = await repo.listRuns(db, RUN_LIMIT);
      const needingStaff = await runFilesNeedingStaff(db, runs.map((r) => r.id));
      const body = html`<h1>Therapist imports</h1>
<p class="muted">Runs: the scraper files picked up together, newest first (the last ${RUN_LIMIT}). A run closes when its
last file is done and sends one summary email to staff. Totals are those of its files; file-level errors are counted
apart from therapists; "Not adult": therapists skipped as not for adults. "Needs staff": files failed or partly imported
(and not replaced since by a later import of their postcode), and files not imported for a reason staff can fix (a name
that does not fit, too large, unreadable; a file superseded by a newer date folder is skipped on purpose and not
counted). Failed imports of every kind are also on <a href="/imports">Failed imports</a>.</p>
${runs.length
  ? wide(html`<table class="runs"><thead><tr><th>Run</th><th>Trigger</th><th>State</th><th class="num">Files</th><th>Needs staff</th><th>Started / closed (Berlin)</th>${runCountHeads}<th class="num">File errors</th></tr></thead><tbody>${runs.map(
      (r) =>
        html`<tr><td class="id"><a href="/therapist-imports/runs/${r.id}"><code>${r.id}</code></a></td><td>${r.trigger}</td><td>${r.state}</td><td class="num">${num(r.fileCount)}</td>${staffCell(r.id, needingStaff.get(r.id))}<td>${at(r.startedAt)}${r.closedAt ? html`<br>${at(r.closedAt)}` : ''}</td>${countCells(r.counts)}<td class="num">${num(r.counts?.fileErrors)}</td></tr>`,
    )}</tbody></table>`)
  : html`<p class="muted">No therapist import has run yet. Files dropped into the scraper folder start one.</p>`}`;
      res.type('html').send(page('Therapist imports · Curavani Fleet', body, { nav: true }));
    });

    router.get('/runs/:id', async (req, res) => {
      const run = await runOf(req);
      if (!run) return notFound(res, `There is no therapist import run ${req.params.id}.`);
      // ?status=failed,partial: only those files (the ones staff look at in a run of hundreds),
      // filtered in the query: a run of thousands of postcode files has failed ones beyond the newest FILE_LIMIT.
      const wanted = typeof req.query.status === 'string' && req.query.status ? new Set(req.query.status.split(',')) : null;
      const unknown = wanted ? [...wanted].filter((st) => !(therapistImportFileStatuses as readonly string[]).includes(st)) : [];
      if (unknown.length) {
        return void res.status(400).type('html').send(
          page(
            'Bad request · Curavani Fleet',
            html`<h1>Bad request</h1><p>status: unknown ${unknown.join(', ')}; expected one or more of ${therapistImportFileStatuses.join(', ')}, separated by commas</p><p><a href="/therapist-imports/runs/${run.id}">All files of run ${run.id}</a></p>`,
            { nav: true },
          ),
        );
      }
      const files = await repo.listFiles(db, { runId: run.id, limit: FILE_LIMIT, ...(wanted ? { status: [...wanted] as TherapistImportFileStatus[] } : {}) });
      const perStatus = new Map(Object.entries(await repo.countRunFilesByStatus(db, run.id)));
      const allCount = [...perStatus.values()].reduce((a, b) => a + b, 0);
      // The summary line counts what the file list below counts (one query: a file registered
      // meanwhile cannot make them disagree), for a run still taking files too.
      const statuses = [...perStatus].filter(([, n]) => n).sort(([a], [b]) => a.localeCompare(b));
      const matching = wanted ? [...wanted].reduce((a, st) => a + (perStatus.get(st) ?? 0), 0) : allCount;
      const filterLinks = html`<p class="muted">Show: ${wanted ? html`<a href="/therapist-imports/runs/${run.id}">all</a>` : html`<strong>all</strong>`}${[...perStatus].sort().map(
        ([st, n]) => html` · ${wanted?.size === 1 && wanted.has(st) ? html`<strong>${st}</strong>` : html`<a href="/therapist-imports/runs/${run.id}?status=${st}">${st}</a>`} (${num(n)})`,
      )}</p>`;
      const body = html`<p class="muted"><a href="/therapist-imports">Therapist imports</a> › run ${run.id}</p>
<h1>Run ${run.id} <span class="muted">(${run.trigger}, ${run.state})</span></h1>
<p>Started ${when(run.startedAt)}, ${run.closedAt ? html`closed ${when(run.closedAt)}` : run.sealedAt ? html`takes no more files since ${when(run.sealedAt)}; closes when its last file is done` : 'still taking files (it closes once no new file has come for SCRAPER_RUN_QUIET_MS and its files are done)'}.
${plural(allCount, 'file', 'files')}${statuses.length ? html` (${statuses.map(([s, n], i) => html`${i ? ', ' : ''}${num(n)} ${s}`)})` : ''}.${run.summaryDeliveryId ? html` Staff summary email: delivery <code>${run.summaryDeliveryId}</code>.` : ''}</p>
${run.closedAt && allCount === 0 ? html`<p class="muted">No files: the file it was opened for was registered by another run, or the process watching the folder stopped before registering it (the next one picked the file up). Nothing was imported here, and no summary is sent: nothing to do.</p>` : ''}
${run.counts ? countsTable(run.counts, "therapists in the run's files") : html`<p class="muted">Totals appear when the run closes.</p>`}
<h2>Files <span class="muted">(${wanted ? `${num(matching)} of ${num(allCount)}` : num(allCount)}${matching > files.length ? `, the newest ${num(files.length)} shown` : ''})</span></h2>
${filterLinks}
${files.length
  ? wide(html`<table><thead><tr><th>Record</th><th>File</th><th>Status</th>${countHeads}<th class="note">Note</th><th class="num">ms</th></tr></thead><tbody>${files.map(
      (f) =>
        html`<tr><td class="id"><a href="/therapist-imports/files/${f.id}"><code>${f.id}</code></a></td><td><code>${f.path}</code></td><td>${f.status}</td>${countCells(f.counts)}<td class="reason note">${f.reason ?? ''}</td><td class="num">${num(f.durationMs)}</td></tr>`,
    )}</tbody></table>`)
  : html`<p class="muted">none</p>`}`;
      res.type('html').send(page(`Therapist import run ${run.id} · Curavani Fleet`, body, { nav: true }));
    });

    router.get('/files/:id', async (req, res) => {
      const row = await fileOf(req);
      if (!row) return notFound(res, `There is no therapist import file ${req.params.id}.`);
      const r = reportOf(row);
      const run = row.runId === null ? null : await repo.getRun(db, row.runId);
      const deadLetter = repo.deadLetterStateOf(row, run?.trigger);
      // As on /imports: a failed or partial file a later file of its postcode has replaced needs
      // nothing more (staff reach this page from the run's summary email, not only from /imports).
      const replacedBy = row.status === 'failed' || row.status === 'partial' ? ((await supersedingFiles(db, [row.id])).get(row.id) ?? null) : null;
      const ext = (externalId: string | null | undefined) => (externalId ? html`<code>${externalId}</code>` : html`<span class="muted">none</span>`);
      const body = html`<p class="muted"><a href="/therapist-imports">Therapist imports</a>${r.runId ? html` › <a href="/therapist-imports/runs/${r.runId}">run ${r.runId}</a>` : ''} › file ${r.fileId}</p>
<h1><code>${r.path}</code></h1>
<p><strong>${r.status}</strong>${r.durationMs !== null ? ` in ${num(r.durationMs)} ms` : ''}${r.reason ? html`: <span class="reason">${r.reason}</span>` : ''}</p>
${replacedBy ? html`<p class="notice ok">Replaced since by <a href="/therapist-imports/files/${replacedBy.id}">#${replacedBy.id}</a> <code>${replacedBy.path}</code> (${replacedBy.status}): nothing to do.</p>` : ''}
${countsTable(r.counts, undefined, r.status)}
${r.fileErrors.length ? html`<h2>File-level errors (${r.fileErrors.length})</h2><ul>${r.fileErrors.map((e) => html`<li class="reason">${e}</li>`)}</ul>` : ''}
${r.metadataDisagreements.length
  ? html`<h2>Metadata that disagrees with the file (${r.metadataDisagreements.length})</h2>
${wide(html`<table><thead><tr><th>Field</th><th>Metadata says</th><th>The file has</th></tr></thead><tbody>${r.metadataDisagreements.map(
      (d) => html`<tr><td><code>${d.field}</code></td><td>${String(d.stated)}</td><td>${metadataFoundText(d)}</td></tr>`,
    )}</tbody></table>`)}`
  : ''}
${r.failures.length
  ? html`<h2>Failed therapists (${r.failures.length})</h2>
${wide(html`<table><thead><tr><th>Entry</th><th>External id</th><th>Reason</th></tr></thead><tbody>${r.failures.map(
      (f) => html`<tr><td><code>therapists[${f.index}]</code></td><td>${ext(f.externalId)}</td><td class="reason">${f.reason}</td></tr>`,
    )}</tbody></table>`)}`
  : ''}
${r.statusMismatches.length
  ? html`<h2>Status mismatches (${r.statusMismatches.length})</h2>
${wide(html`<table><thead><tr><th>Entry</th><th>External id</th><th>File says</th><th>Found</th><th>Therapist</th></tr></thead><tbody>${r.statusMismatches.map(
      (m) => html`<tr><td><code>therapists[${m.index}]</code></td><td>${ext(m.externalId)}</td><td>${m.stated}</td><td>${m.found}</td><td>${m.therapistId ?? ''}</td></tr>`,
    )}</tbody></table>`)}`
  : ''}
${r.replacedCorrections.length
  ? html`<h2>Staff corrections replaced by the scraper (${r.replacedCorrections.length})</h2>
<p class="muted">The platform held another value than the one the scraper gave last time (a correction on the platform); the scraper now gives a new one, which was written. Corrections the scraper has not changed since are kept and not listed.</p>
${wide(html`<table><thead><tr><th>Entry</th><th>External id</th><th>Therapist</th><th>Fields</th></tr></thead><tbody>${r.replacedCorrections.map(
      (c) => html`<tr><td><code>therapists[${c.index}]</code></td><td>${ext(c.externalId)}</td><td>${c.therapistId ?? ''}</td><td>${c.fields.map((f, i) => html`${i ? ', ' : ''}<code>${f}</code>`)}</td></tr>`,
    )}</tbody></table>`)}`
  : ''}
<h2>Record</h2>
<table class="counts"><tbody>
<tr><th>content hash</th><td><code>${row.contentHash ?? '–'}</code></td></tr>
<tr><th>size</th><td>${row.sizeBytes === null ? '–' : `${num(row.sizeBytes)} bytes`}</td></tr>
<tr><th>attempts</th><td>${row.attempts}</td></tr>
<tr><th>discovered</th><td>${when(row.discoveredAt)}</td></tr>
<tr><th>started</th><td>${when(row.startedAt) || '–'}</td></tr>
<tr><th>finished</th><td>${when(row.finishedAt) || '–'}</td></tr>
${row.errorCode ? html`<tr><th>error code</th><td><code>${row.errorCode}</code></td></tr>` : ''}
${deadLetter === 'waiting' ? html`<tr><th>dead letter</th><td>waiting for an operator: requeue once the cause is fixed, or discard, on <a href="/ops">/ops</a></td></tr>` : ''}
${deadLetter === 'discarded' ? html`<tr><th>dead letter</th><td>discarded ${when(row.deadLetterDiscardedAt)}: nothing more to do</td></tr>` : ''}
</tbody></table>`;
      res.type('html').send(page(`Therapist import file ${r.fileId} · Curavani Fleet`, body, { nav: true }));
    });
    return router;
  },
};
