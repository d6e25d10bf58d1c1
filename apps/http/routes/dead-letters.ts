import express, { Router, type Request, type Response } from 'express';
import { listAudit } from '../../../libs/db/repositories/audit.js';
import { discardOne, FutileRequeue, requeueAll, requeueOne, withRequeueAdvice, type AdvisedDeadLetter } from '../../../libs/ops/dead-letters.js';
import { countDeadLetters, DeadLetterNotFound, listDeadLetters, queueNames, type DeadLetterView } from '../../../libs/queues/index.js';
import { operatorOf } from '../auth.js';
import { html, page, pageTime, type SafeHtml } from '../html.js';
import type { HttpRouteDeps, HttpRouteModule } from './types.js';

const MAX_REASON = 500;
/** Rows shown per queue on the page (the JSON list and the CLI show all). */
const ROWS_PER_QUEUE = 200;

class BadRequest extends Error {}

function wantsJson(req: Request): boolean {
  return req.is('application/json') === 'application/json' || req.path.startsWith('/api/');
}

function checkQueue(queue: string | undefined): string | undefined {
  if (queue === undefined || queue === '') return undefined;
  if (!queueNames().includes(queue)) throw new BadRequest(`unknown queue ${queue}; queues: ${queueNames().join(', ')}`);
  return queue;
}

function reasonOf(req: Request): string {
  const raw = (req.body as { reason?: unknown } | undefined)?.reason;
  const reason = typeof raw === 'string' ? raw.trim() : '';
  if (!reason) throw new BadRequest('reason: required (say why, it goes to the audit table)');
  if (reason.length > MAX_REASON) throw new BadRequest(`reason: at most ${MAX_REASON} characters`);
  return reason;
}

/** `force` in the form or JSON body: requeue also where the entry's advice says a requeue cannot help. */
function forceOf(req: Request): boolean {
  const raw = (req.body as { force?: unknown } | undefined)?.force;
  return raw === true || raw === 'true';
}

function deadLetterRow(e: AdvisedDeadLetter) {
  const base = `/ops/dead-letters/${encodeURIComponent(e.originalQueue)}/${encodeURIComponent(e.id)}`;
  return html`<tr>
<td class="id"><code>${e.id}</code><div class="muted">${e.name}</div></td>
<td>${pageTime(new Date(e.failedAt))}<div class="muted">attempts since last queued ${e.attemptsMade}${e.code ? html` · code <code>${e.code}</code>` : ''}</div></td>
<td class="reason">${e.reason}${e.requeueAdvice ? html`<div class="advice"><strong>Before a requeue:</strong> ${e.requeueAdvice}</div>` : ''}</td>
<td><code>${JSON.stringify(e.data)}</code></td>
<td>
${e.requeueFutile
  ? html`<form class="inline" method="post" action="${base}/requeue"><input type="hidden" name="force" value="true"><input type="text" name="reason" placeholder="reason (required)" required maxlength="${MAX_REASON}"><button type="submit" class="danger" title="its advice says a requeue cannot help">Requeue anyway</button></form>`
  : html`<form class="inline" method="post" action="${base}/requeue"><input type="text" name="reason" placeholder="reason (required)" required maxlength="${MAX_REASON}"><button type="submit">Requeue</button></form>`}
<form class="inline" method="post" action="${base}/discard"><input type="text" name="reason" placeholder="reason (required)" required maxlength="${MAX_REASON}"><button type="submit" class="danger">Discard</button></form>
</td></tr>`;
}

async function overviewPage(deps: HttpRouteDeps, req: Request): Promise<string> {
  const queue = checkQueue(typeof req.query.queue === 'string' ? req.query.queue : undefined);
  // Counts from the dead-letter queues, rows only as many as the page shows (the oldest).
  const counts = await countDeadLetters(deps.ctx.queues, queue);
  const opsDeps = { db: deps.ctx.database.db, hooks: deps.deadLetterHooks };
  const byQueue = await Promise.all(
    (queue ? [queue] : queueNames()).map(async (q) => ({
      queue: q,
      total: counts[q] ?? 0,
      entries: counts[q] ? await withRequeueAdvice(opsDeps, await listDeadLetters(deps.ctx.queues, { queue: q, limit: ROWS_PER_QUEUE })) : [],
    })),
  );
  const audit = await listAudit(deps.ctx.database.db, 20);
  const notice = noticeOf(req.query);
  // A job requeued a moment ago that failed again is listed below once more: say so, or the
  // notice reads as if it had gone through.
  const requeuedJob = req.query.done === 'requeued' && typeof req.query.job === 'string' ? req.query.job : null;
  const againDead = requeuedJob !== null && byQueue.some((g) => g.entries.some((e) => e.originalJobId === requeuedJob));
  const done = notice && againDead ? `${notice} It has failed again since: see its entry below.` : notice;
  const body = html`<h1>Dead letters</h1>
${done ? html`<div class="notice">${done}</div>` : ''}
<p class="muted">Jobs that failed for good (permanent error or attempts used up). Requeue puts a job back on its queue
with fresh attempts under its original id; discard removes it for good. Both are written to the audit table with your
reason. Same as <code>fleet dlq requeue|discard &lt;id&gt; --reason "..."</code>.</p>
${byQueue.map(
  (g) => html`<h2 id="${g.queue}">${g.queue} <span class="muted">(${g.total})</span></h2>
${g.total
  ? html`${requeueAllForm(g)}
<div class="scroll"><table><thead><tr><th>Id / job</th><th>Failed</th><th>Reason</th><th>Payload</th><th>Action</th></tr></thead><tbody>${g.entries.map(deadLetterRow)}</tbody></table></div>
${g.total > g.entries.length ? html`<p class="muted">Showing the oldest ${g.entries.length} of ${g.total}; all of them: <a href="/ops/api/dead-letters?queue=${g.queue}">JSON</a> or <code>fleet dlq list --queue ${g.queue}</code>.</p>` : ''}`
  : html`<p class="muted">none</p>`}`,
)}
<h2>Recent operator actions</h2>
${audit.length
  ? html`<div class="scroll"><table><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Reason</th></tr></thead><tbody>${audit.map(
      (a) => html`<tr><td>${pageTime(a.createdAt)}</td><td>${a.actor}</td><td>${a.action}</td><td><code>${a.target}</code></td><td>${a.reason ?? ''}${noteOf(a.details) ? html`<br><span class="muted">Note: ${noteOf(a.details)}</span>` : ''}</td></tr>`,
    )}</tbody></table></div>`
  : html`<p class="muted">none yet</p>`}`;
  return page('Dead letters · Curavani Fleet', body, { nav: true });
}

/**
 * "Requeue all" counts what it will requeue: requeue-all skips the dead letters whose advice says
 * a requeue cannot help, so a button reading "Requeue all 1" that then requeued 0 misled. When
 * every one listed would be skipped, no button (each row offers "Requeue anyway"). Past the rows
 * shown, the advice of the rest is not read here: the button says it skips such ones.
 */
function requeueAllForm(g: { queue: string; total: number; entries: Array<{ requeueFutile?: boolean }> }): SafeHtml {
  const futile = g.entries.filter((e) => e.requeueFutile).length;
  const all = g.entries.length >= g.total;
  if (all && futile === g.total) {
    return html`<p class="muted">A requeue cannot help ${g.total === 1 ? 'this one' : `any of these ${g.total}`} (see the advice below): fix the cause, then requeue anyway or discard.</p>`;
  }
  const form = (label: string) =>
    html`<form class="inline" method="post" action="/ops/dead-letters/${encodeURIComponent(g.queue)}/requeue-all"><input type="text" name="reason" placeholder="reason (required)" required maxlength="${MAX_REASON}"><button type="submit">${label}</button></form>`;
  if (!futile) return form(`Requeue all ${g.total} of ${g.queue}`);
  if (all) return html`${form(`Requeue ${g.total - futile} of ${g.queue}`)} <span class="muted">(skips ${futile} whose advice says a requeue cannot help)</span>`;
  return html`${form(`Requeue all ${g.total} of ${g.queue}`)} <span class="muted">(skips those whose advice says a requeue cannot help: ${futile} of the ${g.entries.length} shown)</span>`;
}

/** The notice a requeue left in its audit row (e.g. an email that may have gone out already). */
function noteOf(details: Record<string, unknown>): string | undefined {
  return typeof details.notice === 'string' ? details.notice : undefined;
}

/** `of`: the job's queue (not `queue`, which filters the page). */
type Notice =
  | { done: 'discarded' | 'requeued' | 'already-queued'; job: string; of: string }
  | { done: 'requeued-all'; of: string; count: number; skipped: number };

/** Where an action sends the browser: what was done, as codes and ids (`noticeOf` words it). */
function noticeUrl(n: Notice): string {
  const q = new URLSearchParams(Object.entries(n).map(([k, v]): [string, string] => [k, String(v)]));
  return `/ops?${q.toString()}`;
}

const JOB_ID = /^[A-Za-z0-9._:-]{1,200}$/;

/**
 * The notice after an action, from the codes its redirect carries. The page never shows text
 * from the link itself: a crafted link could otherwise put any message in the operators' page.
 */
function noticeOf(query: Request['query']): string | undefined {
  const str = (k: string) => (typeof query[k] === 'string' ? (query[k] as string) : undefined);
  const queue = str('of');
  if (!queue || !queueNames().includes(queue)) return undefined;
  const done = str('done');
  if (done === 'requeued-all') {
    const count = Number(str('count'));
    const skipped = Number(str('skipped') ?? '0');
    if (!Number.isSafeInteger(count) || count < 0) return undefined;
    const skippedText = Number.isSafeInteger(skipped) && skipped > 0 ? ` Skipped ${skipped} whose advice says a requeue cannot help (see "Before a requeue" below; "Requeue anyway" on each, if you must).` : '';
    return `Requeued ${count} dead letter(s) of ${queue}.${skippedText}`;
  }
  const job = str('job');
  if (!job || !JOB_ID.test(job)) return undefined;
  if (done === 'discarded') return `Discarded ${job}.`;
  if (done === 'requeued') return `Requeued ${job} on ${queue}.`;
  if (done === 'already-queued') return `${job} was already queued again; dead letter removed.`;
  return undefined;
}

function sendError(req: Request, res: Response, status: number, message: string): void {
  if (wantsJson(req)) res.status(status).json({ error: status === 404 ? 'not_found' : status === 409 ? 'requeue_futile' : 'bad_request', message });
  else res.status(status).type('html').send(page('Dead letters · error', html`<h1>Could not do that</h1><p class="reason">${message}</p><p><a href="/ops">Back to the dead letters</a></p>`, { nav: true }));
}

async function act(deps: HttpRouteDeps, req: Request, res: Response, action: 'requeue' | 'discard'): Promise<void> {
  try {
    const queue = checkQueue(String(req.params.queue));
    const id = String(req.params.id);
    const reason = reasonOf(req);
    const operator = { actor: operatorOf(res), reason, force: forceOf(req) };
    const opsDeps = { db: deps.ctx.database.db, queues: deps.ctx.queues, hooks: deps.deadLetterHooks };
    let outcome: string;
    let view: DeadLetterView;
    let notice: string | undefined;
    if (action === 'requeue') {
      const r = await requeueOne(opsDeps, id, operator, queue);
      outcome = r.state;
      view = r.view;
      if ('notice' in r) notice = r.notice;
    } else {
      view = await discardOne(opsDeps, id, operator, queue);
      outcome = 'discarded';
    }
    deps.ctx.log.info({ action, queue: view.originalQueue, jobId: view.originalJobId, actor: operator.actor, outcome }, 'dead letter handled by an operator');
    if (wantsJson(req)) {
      res.json({ outcome, id: view.id, queue: view.originalQueue, jobId: view.originalJobId, ...(notice ? { notice } : {}) });
      return;
    }
    const done = outcome === 'discarded' ? 'discarded' : outcome === 'requeued' ? 'requeued' : 'already-queued';
    res.redirect(303, noticeUrl({ done, job: view.originalJobId, of: view.originalQueue }));
  } catch (err) {
    if (err instanceof BadRequest) return sendError(req, res, 400, err.message);
    if (err instanceof DeadLetterNotFound) return sendError(req, res, 404, err.message);
    if (err instanceof FutileRequeue) return sendError(req, res, 409, `${err.message} To requeue it anyway: "Requeue anyway" on /ops (JSON: "force": true).`);
    throw err;
  }
}

/**
 * The operator page for dead letters (HTML at /ops, JSON under /ops/api): list with reasons,
 * audited requeue and discard with a required reason, recent operator actions.
 */
export const deadLetterRoutes: HttpRouteModule = {
  name: 'dead-letters',
  queues: true,
  path: '/ops',
  access: 'operator',
  database: true,
  router(deps) {
    const router = Router();
    router.use(express.urlencoded({ extended: false, limit: '16kb' }), express.json({ limit: '16kb' }));

    router.get('/', async (req, res) => {
      try {
        res.type('html').send(await overviewPage(deps, req));
      } catch (err) {
        if (err instanceof BadRequest) return sendError(req, res, 400, err.message);
        throw err;
      }
    });
    router.get('/api/dead-letters', async (req, res) => {
      try {
        const queue = checkQueue(typeof req.query.queue === 'string' ? req.query.queue : undefined);
        res.json(await withRequeueAdvice({ db: deps.ctx.database.db, hooks: deps.deadLetterHooks }, await listDeadLetters(deps.ctx.queues, queue ? { queue } : {})));
      } catch (err) {
        if (err instanceof BadRequest) return sendError(req, res, 400, err.message);
        throw err;
      }
    });
    const requeueAllOf = async (req: Request, res: Response) => {
      try {
        const queue = checkQueue(String(req.params.queue))!;
        const reason = reasonOf(req);
        const results = await requeueAll({ db: deps.ctx.database.db, queues: deps.ctx.queues, hooks: deps.deadLetterHooks }, { actor: operatorOf(res), reason }, queue);
        const skipped = results.skipped.length;
        deps.ctx.log.info({ action: 'requeue-all', queue, count: results.length, skipped, actor: operatorOf(res) }, 'dead letters requeued by an operator');
        if (wantsJson(req)) return void res.json({ outcome: 'requeued', queue, count: results.length, ...(skipped ? { skipped: results.skipped.map((f) => ({ id: f.id, advice: f.advice })) } : {}) });
        res.redirect(303, noticeUrl({ done: 'requeued-all', of: queue, count: results.length, skipped }));
      } catch (err) {
        if (err instanceof BadRequest) return sendError(req, res, 400, err.message);
        throw err;
      }
    };
    for (const prefix of ['', '/api']) {
      router.post(`${prefix}/dead-letters/:queue/requeue-all`, requeueAllOf);
      router.post(`${prefix}/dead-letters/:queue/:id/requeue`, (req, res) => act(deps, req, res, 'requeue'));
      router.post(`${prefix}/dead-letters/:queue/:id/discard`, (req, res) => act(deps, req, res, 'discard'));
    }
    return router;
  },
};
