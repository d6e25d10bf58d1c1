import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { listAudit, recordAudit } from '../../libs/db/repositories/audit.js';
import { insertLedgerObjects, updateLedgerRow } from '../../libs/db/repositories/patient-import.js';
import { createLogger } from '../../libs/log/index.js';
import { addDeadLetter, catalog, discardDeadLetter, listDeadLetters } from '../../libs/queues/index.js';
import { ensureJobScheduler } from '../../libs/queues/job-scheduler.js';
import { openContext, workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_ADMIN_DB_URL, TEST_REDIS_URL } from '../../libs/testing/services.js';
import { Router } from 'express';
import { httpComponent, type HttpComponent } from './component.js';
import { routeModules, type HttpRouteModule } from './routes/index.js';
import { deadLetterHooks } from '../fleet/roles.js';
import { everyOutcomeFile } from '../../workers/therapist-import/fixtures.js';
import { importTherapistFileNow } from '../../workers/therapist-import/index.js';
import { tcpProxy } from '../../libs/testing/tcp-proxy.js';

const USER = 'operator';
const PASSWORD = 'correct horse battery staple';
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const AUTH = basic(USER, PASSWORD);

async function until<T>(fn: () => Promise<T | undefined | false | null>, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A request with headers fetch will not send as given (Host): what a browser sends to a page
 * whose host name an attacker pointed at 127.0.0.1 (DNS rebinding).
 */
function rawRequest(url: string, opts: { method?: string; headers: Record<string, string>; body?: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Log lines of one app, to check what it says at start. */
function captureLog() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, log: createLogger({ level: 'info', pretty: 'false' }, stream) };
}

interface RunningApp {
  ctx: FleetContext;
  http: HttpComponent;
  base: string;
  logLines: Array<Record<string, unknown>>;
  extra: Component[];
  stop(): Promise<void>;
}

async function startApp(env: Record<string, string>, opts: Parameters<typeof httpComponent>[1] = {}): Promise<RunningApp> {
  const config = loadConfig({ HTTP_PORT: '0', RETRY_BACKOFF_SCALE: '0.001', SHUTDOWN_TIMEOUT_MS: '5000', LOG_PRETTY: 'false', ...env });
  const { lines, log } = captureLog();
  const ctx = openContext(config, log);
  const http = httpComponent(ctx, opts);
  await http.start();
  const addr = http.address()!;
  const extra: Component[] = [];
  return {
    ctx,
    http,
    base: `http://127.0.0.1:${addr.port}`,
    logLines: lines,
    extra,
    async stop() {
      for (const c of extra.reverse()) await c.stop(5_000);
      await http.stop(5_000);
      await ctx.close();
    },
  };
}

const redisPort = Number(new URL(TEST_REDIS_URL).port || 6379);
const redisHost = new URL(TEST_REDIS_URL).hostname;

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
});

describe('http app with dashboard credentials', () => {
  let app: RunningApp;
  let cleanupRedis: () => Promise<void>;

  beforeAll(async () => {
    const q = testQueuePrefix();
    cleanupRedis = q.cleanup;
    app = await startApp({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD });
  });
  afterAll(async () => {
    await app.stop();
    await cleanupRedis();
  });

  it('GET /health answers 200 with a tiny JSON body', async () => {
    const res = await fetch(`${app.base}/health`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string };
    expect(body.status).toBe('ok');
  });

  it('the pages name their tab icon, served without login; /favicon.ico answers with no content, not a 404 page', async () => {
    const ops = await (await fetch(`${app.base}/ops`, { headers: { authorization: AUTH } })).text();
    expect(ops).toContain('<link rel="icon" type="image/svg+xml" href="/favicon.svg">');
    const icon = await fetch(`${app.base}/favicon.svg`);
    expect(icon.status).toBe(200);
    expect(icon.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    expect(await icon.text()).toMatch(/^<svg [^>]*viewBox="0 0 32 32"/);
    const ico = await fetch(`${app.base}/favicon.ico`);
    expect(ico.status).toBe(204);
    expect(await ico.text()).toBe('');
  });

  it('GET /ready answers 200 with the PostgreSQL and Redis checks', async () => {
    const res = await fetch(`${app.base}/ready`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; checks: Record<string, { ok: boolean; critical: boolean }> };
    expect(body.status).toBe('ready');
    expect(body.checks.postgres).toMatchObject({ ok: true, critical: true });
    expect(body.checks.redis).toMatchObject({ ok: true, critical: true });
  });

  it('Bull Board: 401 without credentials, 401 with wrong ones, 200 with the configured ones', async () => {
    const none = await fetch(`${app.base}/dashboard`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Basic realm="Curavani Fleet"/);
    const wrongPassword = await fetch(`${app.base}/dashboard`, { headers: { authorization: basic(USER, 'guess') } });
    expect(wrongPassword.status).toBe(401);
    const wrongUser = await fetch(`${app.base}/dashboard`, { headers: { authorization: basic('admin', PASSWORD) } });
    expect(wrongUser.status).toBe(401);
    const apiNone = await fetch(`${app.base}/dashboard/api/queues`);
    expect(apiNone.status).toBe(401);
    const ok = await fetch(`${app.base}/dashboard`, { headers: { authorization: AUTH } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('<div id="root">');
    const opsNone = await fetch(`${app.base}/ops`);
    expect(opsNone.status).toBe(401);
  });

  it('Bull Board lists every fleet queue and every dead-letter queue', async () => {
    const res = await fetch(`${app.base}/dashboard/api/queues`, { headers: { authorization: AUTH } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { queues: Array<{ name: string; readOnlyMode: boolean; allowRetries: boolean }> };
    const expected = app.ctx.queues.allQueues().map((q) => q.name);
    expect(body.queues.map((q) => q.name).sort()).toEqual([...expected].sort());
    expect(expected).toContain('patient-import-dlq');
    for (const q of body.queues) {
      expect(q.allowRetries).toBe(false);
      expect(q.readOnlyMode).toBe(q.name.endsWith('-dlq'));
    }
  });

  it('/metrics shows the queue depth per queue and state, read from Redis', async () => {
    for (const patientId of [1, 2, 3]) await app.ctx.queues.enqueue('weekly-status', { patientId, isoWeek: '2026-W48' });
    const res = await fetch(`${app.base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toContain('# TYPE fleet_queue_jobs gauge');
    expect(text).toMatch(/^fleet_queue_jobs\{queue="weekly-status",state="waiting"\} 3$/m);
    expect(text).toMatch(/^fleet_queue_jobs\{queue="email",state="waiting"\} 0$/m);
    expect(text).toMatch(/^fleet_queue_jobs\{queue="email-dlq",state="waiting"\} 0$/m);
    expect(text).toMatch(/^fleet_queue_depth_scrape_ok 1$/m);
    expect(text).toMatch(/^fleet_postgres_up 1$/m);
    expect(text).toContain('# TYPE fleet_jobs_completed_total counter');
    expect(text).toContain('# TYPE fleet_job_duration_seconds histogram');
    // Labels are queue and state only.
    for (const line of text.split('\n').filter((l) => l.startsWith('fleet_queue_jobs{'))) {
      expect(line).toMatch(/^fleet_queue_jobs\{queue="[a-z-]+",state="[a-z-]+"\} \d+$/);
    }
  });

  it('a job that used up its attempts is visible in Bull Board in its dead-letter queue; retrying from Bull Board is refused', async () => {
    let runs = 0;
    const worker = workerComponent(app.ctx, 'test-patient-import', {
      'patient-import': async () => {
        runs++;
        throw new Error('storage timed out');
      },
    });
    await worker.start();
    app.extra.push(worker);
    const { jobId } = await app.ctx.queues.enqueue('patient-import', { ledgerId: 42 });

    const dlq = await until(async () => {
      const res = await fetch(`${app.base}/dashboard/api/queues?activeQueue=patient-import-dlq&status=latest`, { headers: { authorization: AUTH } });
      const body = (await res.json()) as { queues: Array<{ name: string; counts: Record<string, number>; jobs: Array<{ id: string; name: string; data: Record<string, unknown> }> }> };
      const q = body.queues.find((x) => x.name === 'patient-import-dlq');
      // Bull Board reads the counts and the jobs one after the other: a dead letter added in between shows in one only.
      return q && q.jobs.length > 0 && (q.counts.waiting ?? 0) > 0 ? q : null;
    }, 30_000, 'dead letter in Bull Board');
    const attempts = catalog['patient-import'].retry.attempts;
    expect(runs).toBe(attempts);
    expect(dlq.counts.waiting).toBe(1);
    expect(dlq.jobs[0]!.name).toBe('patient-import: storage timed out');
    expect(dlq.jobs[0]!.data).toMatchObject({ originalQueue: 'patient-import', originalJobId: jobId, reason: 'storage timed out', attemptsMade: attempts, data: { ledgerId: 42 } });

    // The dead letter is written just before BullMQ marks the job failed: wait for that too.
    await until(async () => {
      const main = await fetch(`${app.base}/dashboard/api/queues?activeQueue=patient-import&status=failed`, { headers: { authorization: AUTH } });
      const mainBody = (await main.json()) as { queues: Array<{ name: string; counts: Record<string, number> }> };
      return mainBody.queues.find((x) => x.name === 'patient-import')!.counts.failed === 1;
    }, 10_000, 'original job failed in Bull Board');

    const retry = await fetch(`${app.base}/dashboard/api/queues/patient-import/${encodeURIComponent(jobId)}/retry`, { method: 'PUT', headers: { authorization: AUTH } });
    expect(retry.status).toBe(405);
    const retryAll = await fetch(`${app.base}/dashboard/api/queues/patient-import/retry/failed`, { method: 'PUT', headers: { authorization: AUTH } });
    expect(retryAll.status).toBe(405);
    const add = await fetch(`${app.base}/dashboard/api/queues/patient-import/add`, {
      method: 'POST',
      headers: { authorization: AUTH, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'patient-import', data: { ledgerId: 42 }, options: {} }),
    });
    expect(add.status).toBe(405);
    const pauseDlq = await fetch(`${app.base}/dashboard/api/queues/patient-import-dlq/pause`, { method: 'PUT', headers: { authorization: AUTH } });
    expect(pauseDlq.status).toBe(405);
    expect(runs).toBe(attempts);

    const metrics = await (await fetch(`${app.base}/metrics`)).text();
    expect(metrics).toMatch(/^fleet_jobs_dead_total\{queue="patient-import"\} 1$/m);
    expect(metrics).toMatch(/^fleet_queue_jobs\{queue="patient-import-dlq",state="waiting"\} 1$/m);
    expect(metrics).toMatch(/^fleet_queue_jobs\{queue="patient-import",state="failed"\} 1$/m);
  });

  it("editing a job's data from Bull Board is refused (the catalog's validation and the job id's key would no longer match it)", async () => {
    const { jobId } = await app.ctx.queues.enqueue('weekly-status', { patientId: 7, isoWeek: '2026-W48' }, { delayMs: 3_600_000 });
    const edit = await fetch(`${app.base}/dashboard/api/queues/weekly-status/${encodeURIComponent(jobId)}/update-data`, {
      method: 'PATCH',
      headers: { authorization: AUTH, 'content-type': 'application/json' },
      body: JSON.stringify({ jobData: { patientId: 8, isoWeek: '2026-W48' } }),
    });
    expect(edit.status).toBe(405);
    const job = await app.ctx.queues.queue('weekly-status').getJob(jobId);
    expect(job!.data).toEqual({ patientId: 7, isoWeek: '2026-W48' });
    await job!.remove();
  });

  it('Bull Board cannot remove or edit a schedule, empty or obliterate a queue, or set its limits; "run now" still works', async () => {
    const ensured = await ensureJobScheduler({
      queues: app.ctx.queues,
      log: app.ctx.log,
      schedulerId: 'bucket-poll',
      jobName: 'bucket-poll',
      data: { trigger: 'schedule' },
      pattern: '0 * * * *',
      timeZone: 'Europe/Berlin',
    });
    expect(ensured.next).not.toBeNull();
    await app.ctx.queues.queue('email').pause();
    const metrics = await (await fetch(`${app.base}/metrics`)).text();
    expect(metrics).toMatch(/^fleet_job_scheduler_registered\{scheduler="bucket-poll"\} 1$/m);
    expect(metrics).toMatch(/^fleet_job_scheduler_registered\{scheduler="patient-import-retention"\} 0$/m);
    expect(metrics).toMatch(/^fleet_queue_paused\{queue="email"\} 1$/m);
    expect(metrics).toMatch(/^fleet_queue_paused\{queue="patient-import"\} 0$/m);
    expect(metrics).not.toMatch(/^fleet_queue_paused\{queue="[^"]*-dlq"\}/m);
    await app.ctx.queues.queue('email').resume();
    const { jobId } = await app.ctx.queues.enqueue('weekly-status', { patientId: 9, isoWeek: '2026-W48' }, { delayMs: 3_600_000 });
    const call = async (method: string, p: string, body?: unknown) => {
      const res = await fetch(`${app.base}/dashboard/api/queues/${p}`, {
        method,
        headers: { authorization: AUTH, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: res.status, body: (await res.json().catch(() => null)) as { code?: string; message?: string; error?: { key?: string } } | null };
    };
    const refused = [
      ['PUT', 'bucket-poll/job-schedulers/bucket-poll/remove', undefined, 'schedule_from_config'],
      ['PATCH', 'bucket-poll/job-schedulers/bucket-poll', { pattern: '* * * * *' }, 'schedule_from_config'],
      ['PUT', 'weekly-status/empty', undefined, 'jobs_are_not_dropped'],
      ['PUT', 'weekly-status/obliterate', { force: true }, 'jobs_are_not_dropped'],
      ['PUT', 'email/concurrency', { concurrency: 1 }, 'limits_from_config'],
      ['PUT', 'email/rate-limit', { max: 1, duration: 60_000 }, 'limits_from_config'],
    ] as const;
    for (const [method, p, body, code] of refused) {
      const r = await call(method, p, body);
      expect({ p, status: r.status, code: r.body?.code, key: r.body?.error?.key }).toEqual({ p, status: 405, code, key: 'ERRORS.FORBIDDEN' });
      expect(r.body?.message).toMatch(/\S{10,}/);
    }
    const scheduler = await app.ctx.queues.queue('bucket-poll').getJobScheduler('bucket-poll');
    expect(scheduler).toMatchObject({ pattern: '0 * * * *', tz: 'Europe/Berlin' });
    expect(await app.ctx.queues.queue('weekly-status').getJob(jobId)).toBeDefined();
    expect(await app.ctx.queues.queue('email').getGlobalConcurrency()).toBeNull();

    // "Run now" adds one job and leaves the schedule as it was.
    const run = await call('PUT', 'bucket-poll/job-schedulers/bucket-poll/run');
    expect(run.status).toBeLessThan(300);
    expect(await app.ctx.queues.queue('bucket-poll').getJobScheduler('bucket-poll')).toMatchObject({ pattern: '0 * * * *' });

    await app.ctx.queues.queue('bucket-poll').removeJobScheduler('bucket-poll');
    await app.ctx.queues.queue('bucket-poll').obliterate({ force: true });
    await (await app.ctx.queues.queue('weekly-status').getJob(jobId))!.remove();
  });

  it('/ops lists dead letters with reasons and requeues/discards them with an audited reason', async () => {
    const page = await fetch(`${app.base}/ops`, { headers: { authorization: AUTH } });
    expect(page.status).toBe(200);
    const pageText = await page.text();
    expect(pageText).toContain('storage timed out');
    expect(pageText).toContain('patient-import.ledger.42');

    const list = (await (await fetch(`${app.base}/ops/api/dead-letters?queue=patient-import`, { headers: { authorization: AUTH } })).json()) as Array<{ id: string }>;
    expect(list).toHaveLength(1);
    const id = list[0]!.id;
    const url = `${app.base}/ops/api/dead-letters/patient-import/${encodeURIComponent(id)}`;
    const json = { authorization: AUTH, 'content-type': 'application/json' };

    const noReason = await fetch(`${url}/requeue`, { method: 'POST', headers: json, body: '{}' });
    expect(noReason.status).toBe(400);
    expect(((await noReason.json()) as { message: string }).message).toMatch(/^reason: required/);
    const crossSite = await fetch(`${url}/requeue`, { method: 'POST', headers: { ...json, origin: 'https://evil.example' }, body: JSON.stringify({ reason: 'x' }) });
    expect(crossSite.status).toBe(403);
    const crossSiteFetch = await fetch(`${url}/requeue`, { method: 'POST', headers: { ...json, origin: 'null', 'sec-fetch-site': 'cross-site' }, body: JSON.stringify({ reason: 'x' }) });
    expect(crossSiteFetch.status).toBe(403);
    const sameSite = await fetch(`${url}/requeue`, { method: 'POST', headers: { ...json, 'sec-fetch-site': 'same-site' }, body: JSON.stringify({ reason: 'x' }) });
    expect(sameSite.status).toBe(403);
    const unknownQueue = await fetch(`${app.base}/ops/api/dead-letters/nope/${encodeURIComponent(id)}/requeue`, { method: 'POST', headers: json, body: JSON.stringify({ reason: 'x' }) });
    expect(unknownQueue.status).toBe(400);
    const missing = await fetch(`${app.base}/ops/api/dead-letters/patient-import/no-such-id/discard`, { method: 'POST', headers: json, body: JSON.stringify({ reason: 'x' }) });
    expect(missing.status).toBe(404);
    expect(await listDeadLetters(app.ctx.queues)).toHaveLength(1);

    const requeue = await fetch(`${url}/requeue`, { method: 'POST', headers: json, body: JSON.stringify({ reason: 'bucket is back' }) });
    expect(requeue.status).toBe(200);
    expect(await requeue.json()).toMatchObject({ outcome: 'requeued', queue: 'patient-import' });

    // The worker still fails: the job runs 8 more times and comes back as a dead letter.
    await until(async () => (await listDeadLetters(app.ctx.queues)).length === 1, 30_000, 'dead letter again');
    // The page the requeue form leads to says that it failed again (the entry is listed once more).
    const afterRequeue = await (await fetch(`${app.base}/ops?done=requeued&job=${encodeURIComponent(id)}&of=patient-import`, { headers: { authorization: AUTH } })).text();
    expect(afterRequeue).toContain(`<div class="notice">Requeued ${id} on patient-import. It has failed again since: see its entry below.</div>`);
    // Discard through the HTML form (urlencoded), as the page does.
    const form = await fetch(`${app.base}/ops/dead-letters/patient-import/${encodeURIComponent(id)}/discard`, {
      method: 'POST',
      redirect: 'manual',
      // Sec-Fetch-Site same-origin decides, whatever the Origin says (Chromium says "null" under no-referrer).
      headers: { authorization: AUTH, 'content-type': 'application/x-www-form-urlencoded', origin: 'null', 'sec-fetch-site': 'same-origin' },
      body: new URLSearchParams({ reason: 'file is broken for good' }).toString(),
    });
    expect(form.status).toBe(303);
    const location = form.headers.get('location')!;
    expect(location).toMatch(/^\/ops\?done=discarded&job=[^&]+&of=patient-import$/);
    expect(await listDeadLetters(app.ctx.queues)).toHaveLength(0);
    const notice = await (await fetch(`${app.base}${location}`, { headers: { authorization: AUTH } })).text();
    expect(notice).toContain('<div class="notice">Discarded ');
    // A link cannot put its own words into the operators' page.
    for (const crafted of ['done=Your+session+expired%3A+log+in+at+evil.example', 'done=discarded&job=log+in+at+evil.example&of=patient-import', 'done=discarded&job=x&of=nope']) {
      const shown = await (await fetch(`${app.base}/ops?${crafted}`, { headers: { authorization: AUTH } })).text();
      expect(shown).not.toContain('class="notice"');
      expect(shown).not.toContain('evil.example');
    }

    const audit = await listAudit(app.ctx.database.db, 10);
    const actions = audit.filter((a) => a.action.startsWith('dlq.')).map((a) => ({ actor: a.actor, action: a.action, reason: a.reason, target: a.target }));
    expect(actions).toEqual([
      { actor: `dashboard:${USER}`, action: 'dlq.discard', reason: 'file is broken for good', target: `patient-import/${id}` },
      { actor: `dashboard:${USER}`, action: 'dlq.requeue', reason: 'bucket is back', target: `patient-import/${id}` },
    ]);
    const after = await (await fetch(`${app.base}/ops`, { headers: { authorization: AUTH } })).text();
    expect(after).toContain('file is broken for good');
  });

  it('/ops shows the note a requeue left (an email that goes out with its batch again), escaped', async () => {
    const note = 'delivery d-1: its last provider request got no answer, so it goes out again with its batch b-1 <under the same key>';
    await recordAudit(app.ctx.database.db, { actor: 'cli:ops', action: 'dlq.requeue', target: 'email/email-send.delivery.d-1', reason: 'provider is back', details: { outcome: 'requeued', notice: note } });
    const page = await (await fetch(`${app.base}/ops`, { headers: { authorization: AUTH } })).text();
    expect(page).toContain('provider is back<br><span class="muted">Note: delivery d-1: its last provider request got no answer, so it goes out again with its batch b-1 &lt;under the same key&gt;</span>');
  });

  it('/ops requeues every dead letter of one queue, each audited', async () => {
    for (const patientId of [11, 12]) {
      const jobId = `weekly-status.patient.${patientId}.week.2026-W48`;
      await addDeadLetter(app.ctx.queues, {
        originalQueue: 'weekly-status', originalJobId: jobId, name: 'weekly-status', data: { patientId, isoWeek: '2026-W48' },
        reason: 'database went away', code: null, attemptsMade: 8, enqueuedAt: null, failedAt: new Date().toISOString(),
      });
    }
    const page = await (await fetch(`${app.base}/ops`, { headers: { authorization: AUTH } })).text();
    expect(page).toContain('Requeue all 2 of weekly-status');
    const json = { authorization: AUTH, 'content-type': 'application/json' };
    expect((await fetch(`${app.base}/ops/api/dead-letters/weekly-status/requeue-all`, { method: 'POST', headers: json, body: '{}' })).status).toBe(400);
    const res = await fetch(`${app.base}/ops/api/dead-letters/weekly-status/requeue-all`, { method: 'POST', headers: json, body: JSON.stringify({ reason: 'database is back' }) });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ outcome: 'requeued', queue: 'weekly-status', count: 2 });
    expect(await listDeadLetters(app.ctx.queues, { queue: 'weekly-status' })).toEqual([]);
    for (const patientId of [11, 12]) {
      expect(await app.ctx.queues.queue('weekly-status').getJob(`weekly-status.patient.${patientId}.week.2026-W48`)).toBeTruthy();
    }
    const audit = (await listAudit(app.ctx.database.db, 10)).filter((a) => a.action === 'dlq.requeue' && a.reason === 'database is back');
    expect(audit.map((a) => a.target).sort()).toEqual(['weekly-status/weekly-status.patient.11.week.2026-W48', 'weekly-status/weekly-status.patient.12.week.2026-W48']);
  });

  // /ops offered "Requeue" for a file whose content is wrong, and requeue-all requeued it too:
  // each such requeue failed the same way and added another import.failed event.
  it('/ops offers "Requeue anyway" where the advice says a requeue cannot help, refuses it without force, and requeue-all skips it', async () => {
    // The fleet's own hooks (the shared app here has none): the advice comes from the import records.
    const withHooks = await startApp(
      { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: app.ctx.config.queues.prefix, DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD },
      { deadLetterHooks },
    );
    try {
      await futileRequeueOnOps(withHooks);
    } finally {
      await withHooks.stop();
    }
  });

  async function futileRequeueOnOps(app: RunningApp) {
    const db = app.ctx.database.db;
    const [id] = await insertLedgerObjects(db, [{ bucket: 'b', objectName: 'registrations/Q_R_20250707_feedbeef.json', generation: '1', sourceUri: 'gs://b/q' }]);
    await updateLedgerRow(db, id!, { status: 'failed', errorCode: 'invalid_json', reason: `ledger ${id}: file: not valid JSON`, attempts: 1, failedAt: new Date() });
    const dlqId = `patient-import.ledger.${id}`;
    await addDeadLetter(app.ctx.queues, {
      originalQueue: 'patient-import', originalJobId: dlqId, name: 'patient-import', data: { ledgerId: id },
      reason: `ledger ${id}: file: not valid JSON`, code: 'invalid_json', attemptsMade: 1, enqueuedAt: null, failedAt: new Date().toISOString(),
    });
    const page = await (await fetch(`${app.base}/ops`, { headers: { authorization: AUTH } })).text();
    expect(page).toContain('Requeue anyway');
    expect(page).toContain('attempts since last queued 1');
    // The requeue-all button counts what it requeues (it skips this one), or is not offered when that is none.
    const others = (await listDeadLetters(app.ctx.queues, { queue: 'patient-import' })).length - 1;
    expect(page).not.toMatch(/Requeue all \d+ of patient-import/);
    expect(page).toContain(
      others ? `Requeue ${others} of patient-import</button></form> <span class="muted">(skips 1 whose advice says a requeue cannot help)</span>` : 'A requeue cannot help this one (see the advice below): fix the cause, then requeue anyway or discard.',
    );
    const listed = (await (await fetch(`${app.base}/ops/api/dead-letters?queue=patient-import`, { headers: { authorization: AUTH } })).json()) as Array<Record<string, unknown>>;
    expect(listed.find((e) => e.id === dlqId)).toMatchObject({ requeueFutile: true, requeueAdvice: expect.stringContaining('A requeue does not help') });

    const json = { authorization: AUTH, 'content-type': 'application/json' };
    const url = `${app.base}/ops/api/dead-letters/patient-import/${encodeURIComponent(dlqId)}`;
    const refused = await fetch(`${url}/requeue`, { method: 'POST', headers: json, body: JSON.stringify({ reason: 'try' }) });
    expect(refused.status).toBe(409);
    expect(await refused.json()).toMatchObject({ error: 'requeue_futile', message: expect.stringContaining(`${dlqId}: not requeued: A requeue does not help (the content is wrong)`) });
    const all = await fetch(`${app.base}/ops/api/dead-letters/patient-import/requeue-all`, { method: 'POST', headers: json, body: JSON.stringify({ reason: 'try all' }) });
    expect(await all.json()).toMatchObject({ outcome: 'requeued', count: 0, skipped: [{ id: dlqId, advice: expect.stringContaining('A requeue does not help') }] });
    expect((await listDeadLetters(app.ctx.queues, { queue: 'patient-import' })).map((e) => e.id)).toContain(dlqId);
    const notice = await (await fetch(`${app.base}/ops?done=requeued-all&of=patient-import&count=0&skipped=1`, { headers: { authorization: AUTH } })).text();
    expect(notice).toContain('Requeued 0 dead letter(s) of patient-import. Skipped 1 whose advice says a requeue cannot help');

    const forced = await fetch(`${url}/requeue`, { method: 'POST', headers: json, body: JSON.stringify({ reason: 'operator insists', force: true }) });
    expect(forced.status).toBe(200);
    // Leave nothing for the tests below: the requeued job removed, the record closed. The worker an
    // earlier test left on patient-import may be running the job (locked: it cannot be removed
    // then) and may have made it a dead letter again.
    await until(async () => {
      const job = await app.ctx.queues.queue('patient-import').getJob(dlqId);
      return !job || (await job.remove().then(() => true, () => false));
    }, 20_000, 'the requeued job removed');
    if ((await listDeadLetters(app.ctx.queues, { queue: 'patient-import' })).some((e) => e.id === dlqId)) await discardDeadLetter(app.ctx.queues, dlqId, 'patient-import');
    await updateLedgerRow(db, id!, { status: 'discarded', discardedAt: new Date(), finishedAt: new Date() });
  }

  it('/ops, the JSON list and requeue-all count every dead letter, also past 1000 in one queue, and the page shows the oldest', async () => {
    const N = 1003;
    const base = Date.parse('2026-11-01T00:00:00Z');
    for (let i = 0; i < N; i++) {
      await addDeadLetter(app.ctx.queues, {
        originalQueue: 'weekly-fanout', originalJobId: `weekly-fanout.many.${i}`, name: 'weekly-fanout', data: { isoWeek: '2026-W48' },
        reason: 'redis went away', code: null, attemptsMade: 5, enqueuedAt: null, failedAt: new Date(base + i * 1000).toISOString(),
      });
    }
    const page = await (await fetch(`${app.base}/ops`, { headers: { authorization: AUTH } })).text();
    expect(page).toContain(`weekly-fanout <span class="muted">(${N})</span>`);
    expect(page).toContain(`Requeue all ${N} of weekly-fanout`);
    expect(page).toContain(`Showing the oldest 200 of ${N}`);
    expect(page).toContain('<code>weekly-fanout.many.0</code>');
    expect(page).toContain('<code>weekly-fanout.many.199</code>');
    expect(page).not.toContain('<code>weekly-fanout.many.200</code>');
    const listed = (await (await fetch(`${app.base}/ops/api/dead-letters?queue=weekly-fanout`, { headers: { authorization: AUTH } })).json()) as unknown[];
    expect(listed).toHaveLength(N);
    const res = await fetch(`${app.base}/ops/api/dead-letters/weekly-fanout/requeue-all`, {
      method: 'POST', headers: { authorization: AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'redis is back' }),
    });
    expect(await res.json()).toEqual({ outcome: 'requeued', queue: 'weekly-fanout', count: N });
    expect(await listDeadLetters(app.ctx.queues, { queue: 'weekly-fanout' })).toEqual([]);
    await app.ctx.queues.queue('weekly-fanout').obliterate({ force: true });
  }, 120_000);

  it('/imports lists failed imports with their reasons, never the object names of registration files', async () => {
    const sql = app.ctx.database.sql;
    await sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, reason, reason_withheld, error_code, attempts, failed_at)
      values ('b', 'registrations/Mustermann_Max_2025-07-05_abc.json', '1', 'gs://b/x', 'failed', 'patient_data.plz: expected 5 digits, got the string "5207"; patient_data.geburtsdatum: not a date, got "1999-02-29"',
        'patient_data.plz: expected 5 digits, got the string (value not shown); patient_data.geburtsdatum: not a date, got (value not shown)', 'validation_failed', 1, now())`;
    // A row failed before reason_withheld existed: its reason is not shown at all.
    const [legacy] = await sql<{ id: string }[]>`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, reason, error_code, attempts, failed_at)
      values ('b', 'registrations/Musterfrau_Erika_2025-07-05_abd.json', '1', 'gs://b/y', 'failed', 'patient_data.symptome: got the string "Schlafstoerungen"', 'validation_failed', 1, now() - interval '1 minute') returning id`;
    await sql`insert into fleet.therapist_import_files (path, status, reason) values ('20260101/52074.json', 'failed', 'not JSON: Unexpected token < at 0')`;
    expect((await fetch(`${app.base}/imports`)).status).toBe(401);
    const res = await fetch(`${app.base}/imports`, { headers: { authorization: AUTH } });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('patient_data.plz: expected 5 digits, got the string (value not shown); patient_data.geburtsdatum: not a date, got (value not shown)');
    expect(text).toContain(`(not shown here: fleet imports show ${legacy!.id})`);
    expect(text).toContain('not JSON: Unexpected token &lt; at 0');
    // What helps: a requeue imports the same bytes again, so the page says it does not help here.
    expect(text).toContain(`A requeue does not help (the content is wrong): have a corrected file uploaded, then discard patient-import.ledger.${legacy!.id}.`);
    expect(text).toContain('20260101/52074.json');
    expect(text).not.toMatch(/Mustermann|Musterfrau|5207[^4]|1999-02-29|Schlafstoerungen/);
    const json = (await (await fetch(`${app.base}/imports/api/failed`, { headers: { authorization: AUTH } })).json()) as {
      patientFiles: Array<{ reason: string; errorCode: string }>;
      therapistFiles: Array<{ path: string; status: string }>;
    };
    expect(json.patientFiles).toEqual([
      expect.objectContaining({ reason: `(not shown here: fleet imports show ${legacy!.id})`, errorCode: 'validation_failed', nextStep: expect.stringContaining('A requeue does not help') }),
      expect.objectContaining({ reason: 'patient_data.plz: expected 5 digits, got the string (value not shown); patient_data.geburtsdatum: not a date, got (value not shown)', errorCode: 'validation_failed' }),
    ]);
    expect(json.therapistFiles).toEqual([expect.objectContaining({ path: '20260101/52074.json', status: 'failed', supersededBy: null })]);
    expect(JSON.stringify(json)).not.toMatch(/Mustermann|Musterfrau|5207[^4]|1999-02-29|Schlafstoerungen/);

    // The scraper drops a corrected file for the postcode: the failed one is marked as replaced, with a link.
    await sql`update fleet.therapist_import_files set postcode = '52074' where path = '20260101/52074.json'`;
    const [later] = await sql<{ id: string }[]>`insert into fleet.therapist_import_files (path, postcode, status, finished_at) values ('20260108/52074.json', '52074', 'imported', now()) returning id`;
    const after = (await (await fetch(`${app.base}/imports/api/failed`, { headers: { authorization: AUTH } })).json()) as { therapistFiles: Array<{ path: string; supersededBy: unknown }> };
    expect(after.therapistFiles).toEqual([expect.objectContaining({ path: '20260101/52074.json', supersededBy: expect.objectContaining({ id: Number(later!.id), path: '20260108/52074.json', status: 'imported' }) })]);
    const afterPage = await (await fetch(`${app.base}/imports`, { headers: { authorization: AUTH } })).text();
    expect(afterPage).toContain(`replaced since by <a href="/therapist-imports/files/${later!.id}">#${later!.id}</a> <code>20260108/52074.json</code> (imported): nothing to do`);
    // The failed file's own page (linked from the run's summary email) says so too: it said only "failed".
    const [failedFile] = await sql<{ id: string }[]>`select id from fleet.therapist_import_files where path = '20260101/52074.json'`;
    const filePage = await (await fetch(`${app.base}/therapist-imports/files/${failedFile!.id}`, { headers: { authorization: AUTH } })).text();
    expect(filePage).toContain(`Replaced since by <a href="/therapist-imports/files/${later!.id}">#${later!.id}</a> <code>20260108/52074.json</code> (imported): nothing to do.`);
    const laterPage = await (await fetch(`${app.base}/therapist-imports/files/${later!.id}`, { headers: { authorization: AUTH } })).text();
    expect(laterPage).not.toContain('Replaced since');

    // Skipped files that need a person are listed with what to do, until a later import replaces them.
    await sql`insert into fleet.therapist_import_files (path, postcode, status, reason, finished_at)
      values ('52060_alt.json', null, 'skipped', 'name does not fit', now()), ('52062.json', '52062', 'skipped', 'too large to import: 17.0 MB, more than SCRAPER_FILE_MAX_MB=16 allows', now()),
        ('20260101/52064.json', '52064', 'skipped', 'superseded by the newer folder 20260108/52064.json', now())`;
    const skipped = (await (await fetch(`${app.base}/imports/api/failed`, { headers: { authorization: AUTH } })).json()) as { skippedTherapistFiles: Array<{ path: string; kind: string }> };
    expect(skipped.skippedTherapistFiles).toEqual([
      expect.objectContaining({ path: '52062.json', kind: 'tooLarge', nextStep: expect.stringContaining('SCRAPER_FILE_MAX_MB') }),
      expect.objectContaining({ path: '52060_alt.json', kind: 'misfit', nextStep: expect.stringContaining('rename or move it') }),
    ]);
    expect(await (await fetch(`${app.base}/imports`, { headers: { authorization: AUTH } })).text()).toContain('Therapist scraper files not imported that need a person');
    await sql`insert into fleet.therapist_import_files (path, postcode, status, finished_at) values ('20260108/52062.json', '52062', 'imported', now())`;
    const fewer = (await (await fetch(`${app.base}/imports/api/failed`, { headers: { authorization: AUTH } })).json()) as { skippedTherapistFiles: Array<{ path: string }> };
    expect(fewer.skippedTherapistFiles.map((r) => r.path)).toEqual(['52060_alt.json']);
    await sql`delete from fleet.therapist_import_files where path in ('52060_alt.json', '52062.json', '20260108/52062.json', '20260101/52064.json')`;

    // A corrected registration uploaded under the same name and imported since: only the discard is left.
    // An upload of that name that failed again, or an older generation, is no such import.
    const [reupload] = await sql<{ id: string }[]>`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, patient_id, finished_at)
      values ('b', 'registrations/Musterfrau_Erika_2025-07-05_abd.json', '3', 'gs://b/y', 'done', 4711, now()) returning id`;
    await sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, error_code, failed_at) values
      ('b', 'registrations/Mustermann_Max_2025-07-05_abc.json', '2', 'gs://b/x', 'failed', 'validation_failed', now() - interval '1 hour'),
      ('b', 'registrations/Mustermann_Max_2025-07-05_abc.json', '0', 'gs://b/x', 'done', null, now() - interval '1 day')`;
    const withNewer = (await (await fetch(`${app.base}/imports/api/failed`, { headers: { authorization: AUTH } })).json()) as { patientFiles: Array<{ id: number; newerImport: unknown; nextStep: string }> };
    const byId = new Map(withNewer.patientFiles.map((f) => [f.id, f]));
    expect(byId.get(Number(legacy!.id))).toMatchObject({
      newerImport: { id: Number(reupload!.id), status: 'done', patientId: 4711, duplicateOfPatientId: null },
      nextStep: `A newer upload of this file name was imported since: import record ${reupload!.id} (patient 4711; fleet imports show ${reupload!.id}). Nothing is left to import from this record: discard patient-import.ledger.${legacy!.id}.`,
    });
    for (const f of withNewer.patientFiles.filter((p) => p.id !== Number(legacy!.id))) expect(f, `record ${f.id}`).toMatchObject({ newerImport: null, nextStep: expect.stringContaining('A requeue does not help') });
    expect(await (await fetch(`${app.base}/imports`, { headers: { authorization: AUTH } })).text()).toContain(`A newer upload of this file name was imported since: import record ${reupload!.id} (patient 4711;`);
    await sql`delete from fleet.therapist_import_files where path in ('20260101/52074.json', '20260108/52074.json')`;
    await sql`delete from fleet.patient_import_ledger where source_uri in ('gs://b/x', 'gs://b/y')`;
  });

  it('/imports says when it shows only the newest 100 failed imports of a kind', async () => {
    const sql = app.ctx.database.sql;
    await sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, reason, error_code, attempts, failed_at)
      select 'b', 'registrations/many_' || g || '.json', '1', 'gs://b/many', 'failed', 'patient_data.plz: expected 5 digits', 'validation_failed', 1, now()
      from generate_series(1, 101) g`;
    const text = await (await fetch(`${app.base}/imports`, { headers: { authorization: AUTH } })).text();
    expect(text).toContain('Patient registration files <span class="muted">(newest 100 of more than 100)</span>');
    expect(text).toContain('fleet imports list --status failed --limit 1000');
    expect(text.match(/<tr><td class="id"><code>\d+<\/code><\/td>/g)).toHaveLength(100);
    const json = (await (await fetch(`${app.base}/imports/api/failed`, { headers: { authorization: AUTH } })).json()) as { patientFiles: unknown[]; morePatientFiles: boolean };
    expect(json.patientFiles).toHaveLength(100);
    expect(json.morePatientFiles).toBe(true);
    await sql`delete from fleet.patient_import_ledger where source_uri = 'gs://b/many'`;
  });

  it('/therapist-imports shows runs, a run\'s files and a file\'s report with numbers that add up; unknown ids are 404', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'fleet-http-therapists-'));
    try {
      const file = path.join(dir, '52066.json');
      await writeFile(file, everyOutcomeFile());
      const report = await importTherapistFileNow(app.ctx, file);
      expect(report.status).toBe('partial');
      expect(report.runId).not.toBeNull();

      expect((await fetch(`${app.base}/therapist-imports`)).status).toBe(401);
      const get = async (p: string) => {
        const res = await fetch(`${app.base}${p}`, { headers: { authorization: AUTH } });
        return { status: res.status, text: await res.text() };
      };
      const runs = await get('/therapist-imports');
      expect(runs.status).toBe(200);
      expect(runs.text).toContain(`href="/therapist-imports/runs/${report.runId}"`);

      const run = await get(`/therapist-imports/runs/${report.runId}`);
      expect(run.status).toBe(200);
      expect(run.text).toContain(`href="/therapist-imports/files/${report.fileId}"`);
      expect(run.text).toContain('partial');
      expect(run.text).toContain(`href="/therapist-imports/runs/${report.runId}?status=partial"`);
      const onlyFailed = await get(`/therapist-imports/runs/${report.runId}?status=failed`);
      expect(onlyFailed.text).toContain('0 of 1');
      expect(onlyFailed.text).not.toContain(`href="/therapist-imports/files/${report.fileId}"`);
      expect((await get(`/therapist-imports/runs/${report.runId}?status=partial`)).text).toContain(`href="/therapist-imports/files/${report.fileId}"`);
      // A status that does not exist is a mistake in the link, not an empty list.
      const bogus = await get(`/therapist-imports/runs/${report.runId}?status=partial,bogus`);
      expect(bogus.status).toBe(400);
      expect(bogus.text).toContain('status: unknown bogus; expected one or more of');

      const shown = await get(`/therapist-imports/files/${report.fileId}`);
      expect(shown.status).toBe(200);
      const text = shown.text.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ');
      expect(text).toContain('therapists in the file 4');
      expect(text).toContain('created 2 of 4 (50%)');
      expect(text).toContain('skipped (not adult) 1 of 4 (25%)');
      expect(text).toContain('failed 1 of 4 (25%)');
      expect(text).toMatch(/Failed therapists \(1\) Entry External id Reason therapists\[2\] p3 [^<]*basic_info\.last_name/);
      expect(text).toContain('Metadata that disagrees with the file (1) Field Metadata says The file has total_therapists 5 4 entries');
      expect(text).toMatch(/Status mismatches \(1\) .* therapists\[3\] p4 modified/);
      expect(shown.text).not.toMatch(/Clara|Adler|praxis@example\.org/);
      expect(text).not.toContain('Staff corrections replaced');
      // A correction staff made that the scraper's newer value replaced is listed by entry and field name.
      await app.ctx.database.sql`update fleet.therapist_import_files set replaced_corrections = ${JSON.stringify([{ index: 1, externalId: 'p2', therapistId: 77, fields: ['telefon', 'email'] }])}::jsonb where id = ${report.fileId}`;
      const withCorrections = (await get(`/therapist-imports/files/${report.fileId}`)).text.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ');
      expect(withCorrections).toMatch(/Staff corrections replaced by the scraper \(1\) .* therapists\[1\] p2 77 telefon , email/);
      expect(withCorrections).not.toContain('dead letter');
      // Failed in the operator's terminal (a CLI run): there is no dead letter to point to.
      await app.ctx.database.sql`update fleet.therapist_import_files set status = 'failed', error_code = 'gave_up' where id = ${report.fileId}`;
      const byHand = await get(`/therapist-imports/files/${report.fileId}`);
      expect(byHand.text).toContain('<tr><th>error code</th><td><code>gave_up</code></td></tr>');
      expect(byHand.text).not.toContain('dead letter');
      // A file of the watcher's that failed its job: its dead letter waits on /ops, or was discarded.
      await app.ctx.database.sql`update fleet.therapist_import_runs set trigger = 'watcher' where id = ${report.runId}`;
      const failedJob = await get(`/therapist-imports/files/${report.fileId}`);
      expect(failedJob.text).toContain('<tr><th>error code</th><td><code>gave_up</code></td></tr>');
      expect(failedJob.text).toContain('<tr><th>dead letter</th><td>waiting for an operator: requeue once the cause is fixed, or discard, on <a href="/ops">/ops</a></td></tr>');
      await app.ctx.database.sql`update fleet.therapist_import_files set dead_letter_discarded_at = now() where id = ${report.fileId}`;
      expect((await get(`/therapist-imports/files/${report.fileId}`)).text).toMatch(/<tr><th>dead letter<\/th><td>discarded .+: nothing more to do<\/td><\/tr>/);

      const json = (await (await fetch(`${app.base}/therapist-imports/api/files/${report.fileId}`, { headers: { authorization: AUTH } })).json()) as { counts: Record<string, number> };
      const c = json.counts;
      expect(c.created! + c.updated! + c.unchanged! + c.deactivated! + c.skipped! + c.failed!).toBe(c.total);

      expect((await get('/therapist-imports/files/99999999')).status).toBe(404);
      expect((await get('/therapist-imports/files/abc')).status).toBe(404);
      expect((await get('/therapist-imports/runs/99999999')).status).toBe(404);
      expect((await fetch(`${app.base}/therapist-imports/api/runs/99999999`, { headers: { authorization: AUTH } })).status).toBe(404);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('/therapist-imports/runs/<id>?status=failed finds failed files beyond the newest 1000 of a run of thousands', async () => {
    const sql = app.ctx.database.sql;
    const [run] = await sql<Array<{ id: number }>>`insert into fleet.therapist_import_runs (trigger, state) values ('watcher', 'sealed') returning id`;
    // The failed file was picked up first (lowest id), then 1002 that went well.
    await sql`insert into fleet.therapist_import_files (run_id, path, status, reason, content_hash) values (${run!.id}, '20261130/01067.json', 'failed', 'not JSON', 'many-failed')`;
    await sql`insert into fleet.therapist_import_files (run_id, path, status, content_hash)
      select ${run!.id}, '20261130/' || (10000 + g) || '.json', 'imported', 'many-' || g from generate_series(1, 1002) g`;
    const text = await (await fetch(`${app.base}/therapist-imports/runs/${run!.id}?status=failed`, { headers: { authorization: AUTH } })).text();
    expect(text).toContain('20261130/01067.json');
    expect(text).toContain('Files <span class="muted">(1 of 1,003)</span>');
    expect(text).toContain('<strong>failed</strong> (1)');
    const all = await (await fetch(`${app.base}/therapist-imports/runs/${run!.id}`, { headers: { authorization: AUTH } })).text();
    expect(all).toContain('Files <span class="muted">(1,003, the newest 1,000 shown)</span>');
    expect(all).toContain('imported</a> (1,002)');
  });

  it('/therapist-imports and /therapist-imports/runs/<id> count the files of a run still collecting (its row is counted when it closes)', async () => {
    const sql = app.ctx.database.sql;
    const [run] = await sql<Array<{ id: number }>>`insert into fleet.therapist_import_runs (trigger, state) values ('watcher', 'collecting') returning id`;
    await sql`insert into fleet.therapist_import_files (run_id, path, postcode, status, content_hash, finished_at) values (${run!.id}, '52091.json', '52091', 'imported', 'collecting-1', now())`;
    await sql`insert into fleet.therapist_import_files (run_id, path, postcode, status, content_hash) values (${run!.id}, '52092.json', '52092', 'queued', 'collecting-2')`;
    const get = async (p: string) => (await fetch(`${app.base}${p}`, { headers: { authorization: AUTH } })).text();
    const runs = await get('/therapist-imports');
    expect(runs).toMatch(new RegExp(`<a href="/therapist-imports/runs/${run!.id}"><code>${run!.id}</code></a></td><td>watcher</td><td>collecting</td><td class="num">2</td>`));
    const page = (await get(`/therapist-imports/runs/${run!.id}`)).replace(/<[^>]+>/g, '').replace(/\s+/g, ' ');
    expect(page).toContain('2 files (1 imported, 1 queued).');
    expect(page).toContain('Files (2)');
    const api = (await (await fetch(`${app.base}/therapist-imports/api/runs/${run!.id}`, { headers: { authorization: AUTH } })).json()) as { run: { fileCount: number; fileStatusCounts: Record<string, number> } };
    expect(api.run).toMatchObject({ fileCount: 2, fileStatusCounts: { imported: 1, queued: 1 } });
  });

  it('/therapist-imports marks runs with files that need staff (failed, partial, skipped ones not by design) and calls its "skipped" column what it counts', async () => {
    const sql = app.ctx.database.sql;
    const run = async () => (await sql<Array<{ id: number }>>`insert into fleet.therapist_import_runs (trigger, state, sealed_at, closed_at) values ('watcher', 'closed', now(), now()) returning id`)[0]!.id;
    const problems = await run();
    await sql`insert into fleet.therapist_import_files (run_id, path, postcode, status, reason, finished_at) values
      (${problems}, 'aachen.json', null, 'skipped', 'name does not fit <plz>.json', now()),
      (${problems}, '20261127/52077.json', '52077', 'skipped', 'too large to import: 42.2 MB, more than SCRAPER_FILE_MAX_MB=16 allows', now()),
      (${problems}, '20261120/52078.json', '52078', 'skipped', 'superseded by the newer folder 20261127/52078.json', now()),
      (${problems}, '20261127/52079.json', '52079', 'failed', 'not JSON', now()),
      (${problems}, '20261127/52093.json', '52093', 'partial', '1 of 3 therapists failed', now())`;
    const clean = await run();
    await sql`insert into fleet.therapist_import_files (run_id, path, postcode, status, reason, finished_at) values
      (${clean}, '20261120/52094.json', '52094', 'skipped', 'superseded by the newer folder 20261127/52094.json', now()),
      (${clean}, '20261127/52094.json', '52094', 'imported', null, now())`;
    const text = await (await fetch(`${app.base}/therapist-imports`, { headers: { authorization: AUTH } })).text();
    expect(text).toContain('<th class="num">Not adult</th>');
    expect(text).not.toContain('>Skipped</th>');
    expect(text).toContain('<th>Needs staff</th>');
    const row = (id: number) => new RegExp(`<tr><td class="id"><a href="/therapist-imports/runs/${id}">.*?</tr>`).exec(text)?.[0] ?? '';
    expect(row(problems)).toContain(
      `<td class="staff"><a href="/therapist-imports/runs/${problems}?status=failed">1 failed</a>, <a href="/therapist-imports/runs/${problems}?status=partial">1 partial</a>, <a href="/therapist-imports/runs/${problems}?status=skipped">2 not imported</a></td>`,
    );
    // A superseded file is skipped by design: nothing for staff.
    expect(row(clean)).toContain('<td class="staff"></td>');
  });

  it('/therapist-imports/runs/<id> of a closed run without files says why it has none and that nothing is to do', async () => {
    const sql = app.ctx.database.sql;
    const [empty] = await sql<Array<{ id: number }>>`insert into fleet.therapist_import_runs (trigger, state, sealed_at, closed_at) values ('watcher', 'closed', now(), now()) returning id`;
    const [open] = await sql<Array<{ id: number }>>`insert into fleet.therapist_import_runs (trigger, state) values ('watcher', 'collecting') returning id`;
    const page = await (await fetch(`${app.base}/therapist-imports/runs/${empty!.id}`, { headers: { authorization: AUTH } })).text();
    expect(page).toContain('No files: the file it was opened for was registered by another run, or the process watching the folder stopped before registering it');
    // A run still taking files has none yet: nothing said of that.
    const collecting = await (await fetch(`${app.base}/therapist-imports/runs/${open!.id}`, { headers: { authorization: AUTH } })).text();
    expect(collecting).toContain('still taking files');
    expect(collecting).not.toContain('No files:');
  });

  it('/ops escapes what it shows', async () => {
    await app.ctx.queues.queue('bucket-poll-dlq').add('bucket-poll', {
      originalQueue: 'bucket-poll',
      originalJobId: 'bucket-poll.x',
      name: 'bucket-poll',
      data: { trigger: 'manual' },
      reason: '<script>alert(1)</script>',
      code: null,
      attemptsMade: 5,
      enqueuedAt: null,
      failedAt: new Date().toISOString(),
    }, { jobId: 'bucket-poll.x' });
    const text = await (await fetch(`${app.base}/ops`, { headers: { authorization: AUTH } })).text();
    expect(text).not.toContain('<script>alert(1)</script>');
    expect(text).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    // On a phone (390 px) the table scrolls inside its box instead of widening the page and
    // squeezing the reason to one word per line.
    expect(text).toContain('<div class="scroll"><table>');
    await app.ctx.database.sql`insert into fleet.therapist_import_files (path, status, reason) values ('20260102/52074.json', 'failed', 'not JSON')`;
    const imports = await (await fetch(`${app.base}/imports`, { headers: { authorization: AUTH } })).text();
    expect(imports).toContain('<div class="scroll"><table>');
  });

  it('a form post from another site over plain HTTP (no Sec-Fetch-Site, Origin: null) is refused; the operator pages give their own requests their origin', async () => {
    const entry = {
      originalQueue: 'bucket-poll', originalJobId: 'bucket-poll.csrf', name: 'bucket-poll', data: { trigger: 'manual' },
      reason: 'bucket unreachable', code: null, attemptsMade: 5, enqueuedAt: null, failedAt: new Date().toISOString(),
    };
    await addDeadLetter(app.ctx.queues, entry);
    const action = `${app.base}/ops/dead-letters/bucket-poll/bucket-poll.csrf/discard`;
    const form = { authorization: AUTH, 'content-type': 'application/x-www-form-urlencoded' };
    // What Chromium sends to an http:// address other than localhost for an auto-submitted form
    // on another site whose page says <meta name="referrer" content="no-referrer">: no
    // Sec-Fetch-Site (sent to https and localhost only), Origin "null", and the cached basic-auth login.
    const attack = await fetch(action, { method: 'POST', redirect: 'manual', headers: { ...form, origin: 'null' }, body: 'reason=x' });
    expect(attack.status).toBe(403);
    expect(await listDeadLetters(app.ctx.queues, { queue: 'bucket-poll' })).toContainEqual(expect.objectContaining({ id: 'bucket-poll.csrf' }));
    // The same from a sandboxed frame on another site, as a JSON call.
    const api = await fetch(`${app.base}/ops/api/dead-letters/bucket-poll/requeue-all`, { method: 'POST', headers: { authorization: AUTH, 'content-type': 'application/json', origin: 'null' }, body: '{"reason":"x"}' });
    expect(api.status).toBe(403);
    // The operator pages and Bull Board have the browser send their origin with their own
    // posts and API calls (under no-referrer it would say "null"); the unsubscribe page keeps no-referrer.
    for (const path of ['/ops', '/imports', '/daily', '/dashboard', '/dashboard/api/queues']) {
      const res = await fetch(`${app.base}${path}`, { headers: { authorization: AUTH } });
      expect(res.headers.get('referrer-policy'), path).toBe('same-origin');
    }
    expect((await fetch(`${app.base}/unsubscribe/1.garbage`)).headers.get('referrer-policy')).toBe('no-referrer');
    // The page's own form over plain HTTP: its origin, no Sec-Fetch-Site.
    const own = await fetch(action, { method: 'POST', redirect: 'manual', headers: { ...form, origin: new URL(app.base).origin }, body: 'reason=no+longer+needed' });
    expect(own.status).toBe(303);
    expect(await listDeadLetters(app.ctx.queues, { queue: 'bucket-poll' })).not.toContainEqual(expect.objectContaining({ id: 'bucket-poll.csrf' }));
  });

  it('pages run no script of their own and cannot be framed (CSP); Bull Board loads only from the app', async () => {
    for (const path of ['/ops', '/imports', '/daily', '/unsubscribe/1.garbage', '/nothing-here']) {
      const res = await fetch(`${app.base}${path}`, { headers: { authorization: AUTH } });
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp, path).toContain("default-src 'none'");
      expect(csp, path).toContain("frame-ancestors 'none'");
      expect(csp, path).toContain("form-action 'self'");
      expect(csp, path).not.toContain('script-src');
    }
    for (const path of ['/dashboard', '/dashboard/api/queues']) {
      const res = await fetch(`${app.base}${path}`, { headers: { authorization: AUTH } });
      expect(res.status, path).toBe(200);
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp, path).toContain("default-src 'self'");
      expect(csp, path).toContain("script-src 'self';");
      expect(csp, path).toContain("frame-ancestors 'none'");
      // Its stylesheet link to Google Fonts is not followed: no third party learns of the visit.
      expect(csp, path).not.toMatch(/https?:|googleapis/);
      expect(res.headers.get('x-powered-by'), path).toBeNull();
    }
    // Its page names nothing of another site (its link to Google Fonts is left out), and still loads its own styles.
    const board = await (await fetch(`${app.base}/dashboard`, { headers: { authorization: AUTH } })).text();
    expect(board).toMatch(/<link href="static\/css\/[^"]+\.css" rel="stylesheet">/);
    expect(board).toContain('id="__UI_CONFIG__"');
    expect(board).not.toMatch(/https?:\/\//);
  });

  it('state-changing Bull Board calls are audited', async () => {
    const res = await fetch(`${app.base}/dashboard/api/queues/weekly-status/pause`, { method: 'PUT', headers: { authorization: AUTH } });
    expect(res.status).toBeLessThan(300);
    const row = await until(async () => (await listAudit(app.ctx.database.db, 10)).find((a) => a.action === 'dashboard.put'));
    expect(row).toMatchObject({ actor: `dashboard:${USER}`, target: '/dashboard/api/queues/weekly-status/pause' });
    await fetch(`${app.base}/dashboard/api/queues/weekly-status/resume`, { method: 'PUT', headers: { authorization: AUTH } });
  });
});

describe('dashboard without credentials', () => {
  it('is served on a loopback address (local requests only) and says so at start', async () => {
    const q = testQueuePrefix();
    const app = await startApp({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, HTTP_HOST: '127.0.0.1' });
    try {
      expect(app.http.address()!.address).toBe('127.0.0.1');
      expect((await fetch(`${app.base}/dashboard`)).status).toBe(200);
      expect((await fetch(`${app.base}/ops`)).status).toBe(200);
      // Behind a reverse proxy every request would look local: a forwarded one is refused.
      const forwarded = await fetch(`${app.base}/dashboard`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
      expect(forwarded.status).toBe(403);
      expect(await forwarded.text()).toContain('came through a proxy');
      // Also a proxy that says so only in other headers (nginx with just `proxy_set_header X-Real-IP $remote_addr`).
      for (const [name, value] of [['x-real-ip', '203.0.113.9'], ['via', '1.1 proxy'], ['x-forwarded-proto', 'https'], ['x-forwarded-host', 'fleet.example']]) {
        expect((await fetch(`${app.base}/ops/api/dead-letters`, { headers: { [name!]: value! } })).status, name).toBe(403);
      }
      // A web page of another site that resolved its own name to 127.0.0.1 (DNS rebinding) is
      // same-origin to itself and local to the app: its Host header gives it away.
      const port = app.http.address()!.port;
      const rebound = { host: `evil.example:${port}`, 'sec-fetch-site': 'same-origin', origin: `http://evil.example:${port}` };
      const read = await rawRequest(`${app.base}/ops/api/dead-letters`, { headers: rebound });
      expect(read.status).toBe(403);
      expect(read.body).toContain('DNS rebinding');
      expect((await rawRequest(`${app.base}/imports/api/failed`, { headers: rebound })).status).toBe(403);
      const write = await rawRequest(`${app.base}/dashboard/api/queues/email/pause`, { method: 'PUT', headers: rebound });
      expect(write.status).toBe(403);
      expect(await app.ctx.queues.queue('email').isPaused()).toBe(false);
      for (const host of [`localhost:${port}`, `127.0.0.1:${port}`]) {
        expect((await rawRequest(`${app.base}/ops/api/dead-letters`, { headers: { host } })).status, host).toBe(200);
      }
      expect(app.logLines.some((l) => l.level === 40 && String(l.msg).startsWith('dashboard has no credentials'))).toBe(true);
    } finally {
      await app.stop();
      await q.cleanup();
    }
  });

  it('is refused in production also on a loopback address: a proxy in front of the public unsubscribe links makes every request look local', async () => {
    const q = testQueuePrefix();
    const production = {
      NODE_ENV: 'production', MAIL_DRIVER: 'resend', RESEND_API_KEY: 're_test', STORAGE_DRIVER: 'gcs', GCS_BUCKET: 'curavani-test-bucket',
      UNSUBSCRIBE_SECRET: 's'.repeat(32), PUBLIC_BASE_URL: 'https://fleet.curavani.example',
    };
    const app = await startApp({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, HTTP_HOST: '127.0.0.1', ...production });
    try {
      // What nginx sends for `location / { proxy_pass http://127.0.0.1:<port>; }` (the public
      // side of https://fleet.curavani.example): from 127.0.0.1, Host the proxied address, no X-Forwarded-For.
      const nginx = { host: `127.0.0.1:${app.http.address()!.port}`, connection: 'close' };
      const read = await rawRequest(`${app.base}/ops/api/dead-letters`, { headers: nginx });
      expect(read.status).toBe(403);
      expect(read.body).toContain('NODE_ENV=production');
      expect((await rawRequest(`${app.base}/dashboard/api/queues`, { headers: nginx })).status).toBe(403);
      expect((await rawRequest(`${app.base}/imports/api/failed`, { headers: nginx })).status).toBe(403);
      const write = await rawRequest(`${app.base}/dashboard/api/queues/email/pause`, { method: 'PUT', headers: nginx });
      expect(write.status).toBe(403);
      expect(await app.ctx.queues.queue('email').isPaused()).toBe(false);
      // The public routes work on.
      expect((await rawRequest(`${app.base}/unsubscribe/1.garbage`, { headers: nginx })).status).toBe(404);
      expect((await rawRequest(`${app.base}/health`, { headers: nginx })).status).toBe(200);
      const line = app.logLines.find((l) => l.level === 50 && String(l.msg).startsWith('dashboard DISABLED'));
      expect(String(line?.msg)).toContain('NODE_ENV=production');
    } finally {
      await app.stop();
      await q.cleanup();
    }
  });

  it('is refused on a non-loopback address, with a page that says how to configure credentials', async () => {
    const q = testQueuePrefix();
    const app = await startApp({ DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, HTTP_HOST: '0.0.0.0' });
    try {
      expect(app.http.address()!.address).toBe('0.0.0.0');
      const res = await fetch(`${app.base}/dashboard`);
      expect(res.status).toBe(403);
      const text = await res.text();
      expect(text).toContain('DASHBOARD_USER');
      expect(text).toContain('DASHBOARD_PASSWORD');
      expect(text).toContain('listens on a non-loopback address');
      expect((await fetch(`${app.base}/dashboard/api/queues`)).status).toBe(403);
      expect((await fetch(`${app.base}/ops/api/dead-letters`)).status).toBe(403);
      expect((await fetch(`${app.base}/health`)).status).toBe(200);
      expect((await fetch(`${app.base}/metrics`)).status).toBe(200);
      const line = app.logLines.find((l) => l.level === 50 && String(l.msg).startsWith('dashboard DISABLED'));
      expect(line).toBeDefined();
    } finally {
      await app.stop();
      await q.cleanup();
    }
  });
});

describe('/metrics of a process started while Redis is away', () => {
  it('answers at once with fleet_queue_depth_scrape_ok 0, and reads the depth once Redis is there', async () => {
    // BullMQ waits for a connection that was never ready: the scrape waited with it (Prometheus
    // saw the process as down, and lost every other metric) for as long as Redis was away.
    const redis = tcpProxy({ host: redisHost, port: redisPort });
    await redis.open();
    await redis.close(); // the port is known, nothing listens on it
    const q = testQueuePrefix();
    const app = await startApp({ DATABASE_URL: db.url, REDIS_URL: `redis://127.0.0.1:${redis.port}`, QUEUE_PREFIX: q.prefix, DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD });
    try {
      // The pages that read the queues say why at once instead of waiting for Redis.
      const get = (path: string) => fetch(`${app.base}${path}`, { headers: { authorization: AUTH }, signal: AbortSignal.timeout(8_000) });
      for (const path of ['/ops', '/daily', '/dashboard/', '/dashboard/api/queues']) {
        const res = await get(path);
        expect(res.status, path).toBe(503);
        expect(await res.text(), path).toContain(`Redis is not reachable at 127.0.0.1:${redis.port} (REDIS_URL`);
      }
      const api = await get('/ops/api/dead-letters');
      expect(api.status).toBe(503);
      expect(await api.json()).toMatchObject({ error: 'redis_unavailable' });
      // Pages that read only PostgreSQL work on.
      expect((await get('/imports')).status).toBe(200);
      expect((await fetch(`${app.base}/ops`)).status).toBe(401); // the login comes first
      const scrape = async () => {
        const res = await fetch(`${app.base}/metrics`, { signal: AbortSignal.timeout(8_000) });
        expect(res.status).toBe(200);
        return res.text();
      };
      const down = await scrape();
      expect(down).toMatch(/^fleet_queue_depth_scrape_ok 0$/m);
      expect(down).toMatch(/^process_cpu_seconds_total /m); // the rest of the scrape is there
      await redis.open();
      const up = await until(async () => {
        const text = await scrape();
        return /^fleet_queue_depth_scrape_ok 1$/m.test(text) ? text : null;
      }, 40_000, 'queue depth read once Redis is there');
      expect(up).toMatch(/^fleet_queue_jobs\{queue="email",state="waiting"\} 0$/m);
      expect((await get('/ops')).status).toBe(200);
      expect((await get('/dashboard/api/queues')).status).toBe(200);
    } finally {
      await app.stop();
      await redis.close();
      await q.cleanup();
    }
  });
});

describe('a Redis that is connected but does not answer (stopped with SIGSTOP, hung)', () => {
  it('/metrics answers with fleet_queue_depth_scrape_ok 0 and its other metrics; the pages that read the queues answer 503 naming Redis', async () => {
    // The connection stays open and `ready`, and the producer connection has no command timeout:
    // the scrape and these pages waited for as long as Redis stayed silent (65 s and more).
    const redis = tcpProxy({ host: redisHost, port: redisPort });
    await redis.open();
    const q = testQueuePrefix();
    const app = await startApp({ DATABASE_URL: db.url, REDIS_URL: `redis://127.0.0.1:${redis.port}`, QUEUE_PREFIX: q.prefix, DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD });
    try {
      const scrape = async () => {
        const res = await fetch(`${app.base}/metrics`, { signal: AbortSignal.timeout(8_000) });
        expect(res.status).toBe(200);
        return res.text();
      };
      expect(await until(async () => /^fleet_queue_depth_scrape_ok 1$/m.test(await scrape()), 20_000, 'depth read while Redis answers')).toBe(true);
      expect((await fetch(`${app.base}/ops`, { headers: { authorization: AUTH } })).status).toBe(200);

      redis.hang();
      const down = await scrape();
      expect(down).toMatch(/^fleet_queue_depth_scrape_ok 0$/m);
      expect(down).toMatch(/^process_cpu_seconds_total /m); // the rest of the scrape is there
      expect(down).not.toMatch(/^fleet_queue_jobs\{/m);
      // Twice: a second scrape is not held by the PING the first one left unanswered.
      expect(await scrape()).toMatch(/^fleet_queue_depth_scrape_ok 0$/m);

      const get = (path: string, accept = 'text/html') => fetch(`${app.base}${path}`, { headers: { authorization: AUTH, accept }, signal: AbortSignal.timeout(8_000) });
      for (const path of ['/ops', '/daily', '/dashboard/', '/dashboard/api/queues']) {
        const res = await get(path);
        expect(res.status, path).toBe(503);
        expect(await res.text(), path).toContain(`Redis is not reachable at 127.0.0.1:${redis.port} (REDIS_URL; no answer within 2000 ms)`);
      }
      const api = await get('/daily/api', 'application/json');
      expect(api.status).toBe(503);
      expect(await api.json()).toMatchObject({ error: 'redis_unavailable' });
      expect((await get('/imports')).status).toBe(200); // PostgreSQL only: works on
      const ready = await fetch(`${app.base}/ready`, { signal: AbortSignal.timeout(8_000) });
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { reason: string }).reason).toBe('redis down (no answer within 2000 ms)');
    } finally {
      await redis.close();
      await app.stop();
      await q.cleanup();
    }
  });
});

describe('operator pages while PostgreSQL is down', () => {
  const pages = ['/imports', '/therapist-imports', '/ops', '/daily'];
  const get = (app: RunningApp, path: string, accept = 'text/html') =>
    fetch(`${app.base}${path}`, { headers: { authorization: AUTH, accept }, signal: AbortSignal.timeout(8_000) });

  async function withApp(dbUrl: string, fn: (app: RunningApp) => Promise<void>, routes?: HttpRouteModule[]) {
    const q = testQueuePrefix();
    const app = await startApp({ DATABASE_URL: dbUrl, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD }, routes ? { routes } : {});
    try {
      await fn(app);
    } finally {
      await app.stop();
      await q.cleanup();
    }
  }

  it('a closed port: 503 with a page naming PostgreSQL and DATABASE_URL (JSON for JSON clients), not a 500 internal_error', async () => {
    const pg = tcpProxy({ host: '127.0.0.1', port: 1 });
    await pg.open();
    await pg.close(); // the port is known, nothing listens on it
    const dbUrl = new URL(db.url);
    dbUrl.host = `127.0.0.1:${pg.port}`;
    await withApp(dbUrl.toString(), async (app) => {
      for (const path of pages) {
        const res = await get(app, path);
        expect(res.status, path).toBe(503);
        expect(res.headers.get('content-type'), path).toMatch(/^text\/html/);
        const body = await res.text();
        expect(body, path).toContain('<h1>PostgreSQL not reachable</h1>');
        expect(body, path).toContain(`PostgreSQL is not reachable at 127.0.0.1:${pg.port} (DATABASE_URL; connect ECONNREFUSED 127.0.0.1:${pg.port})`);
        // what still works meanwhile: the pages and the command that read Redis only
        expect(body, path).toContain('Meanwhile the queues are on /dashboard, and `fleet dlq list` lists the dead letters');
      }
      for (const path of ['/imports/api/failed', '/daily/api', '/ops/api/dead-letters']) {
        const res = await get(app, path, 'application/json');
        expect(res.status, path).toBe(503);
        expect(await res.json(), path).toMatchObject({ error: 'postgres_unavailable', message: expect.stringContaining('(DATABASE_URL;') });
      }
      // FleetPostgresDown reads this.
      expect(await (await fetch(`${app.base}/metrics`)).text()).toMatch(/^fleet_postgres_up 0$/m);
    });
  });

  it('a server that accepts connections and never answers: the same 503 within a few seconds, not after the 30 s connect timeout', async () => {
    const pg = tcpProxy({ host: new URL(TEST_ADMIN_DB_URL).hostname, port: Number(new URL(TEST_ADMIN_DB_URL).port || 5432) });
    await pg.open();
    pg.hang();
    const dbUrl = new URL(db.url);
    dbUrl.host = `127.0.0.1:${pg.port}`;
    try {
      await withApp(dbUrl.toString(), async (app) => {
        for (const path of ['/imports', '/daily']) {
          const res = await get(app, path);
          expect(res.status, path).toBe(503);
          expect(await res.text(), path).toContain(`PostgreSQL is not reachable at 127.0.0.1:${pg.port} (DATABASE_URL; no answer within 2000 ms)`);
        }
      });
    } finally {
      await pg.close();
    }
  });

  it('an operator route whose query fails because PostgreSQL went away says so too (503), not internal_error', async () => {
    const pg = tcpProxy({ host: '127.0.0.1', port: 1 });
    await pg.open();
    await pg.close();
    const dbUrl = new URL(db.url);
    dbUrl.host = `127.0.0.1:${pg.port}`;
    // No `database: true`: its query fails, and the error handler asks PostgreSQL again.
    const reads: HttpRouteModule = {
      name: 'reads',
      path: '/reads',
      access: 'operator',
      router: ({ ctx }) =>
        Router().get('/', async (_req, res) => {
          res.json(await ctx.database.sql`select 1 as one`);
        }),
    };
    await withApp(dbUrl.toString(), async (app) => {
      const res = await get(app, '/reads', 'application/json');
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ error: 'postgres_unavailable' });
    }, [reads]);
  });
});

describe('/ready follows PostgreSQL, Redis and component checks', () => {
  const pg = tcpProxy({ host: new URL(TEST_ADMIN_DB_URL).hostname, port: Number(new URL(TEST_ADMIN_DB_URL).port || 5432) });
  const redis = tcpProxy({ host: redisHost, port: redisPort });
  let app: RunningApp;
  let cleanupRedis: () => Promise<void>;

  beforeAll(async () => {
    await pg.open();
    await redis.open();
    const q = testQueuePrefix();
    cleanupRedis = q.cleanup;
    const dbUrl = new URL(db.url);
    dbUrl.host = `127.0.0.1:${pg.port}`;
    app = await startApp({ DATABASE_URL: dbUrl.toString(), REDIS_URL: `redis://127.0.0.1:${redis.port}`, QUEUE_PREFIX: q.prefix, READY_TIMEOUT_MS: '1500', DB_POOL_MAX: '2' });
  });
  afterAll(async () => {
    await pg.open().catch(() => {});
    await redis.open().catch(() => {});
    await app.stop();
    await pg.close();
    await redis.close();
    await cleanupRedis();
  });

  async function ready() {
    const res = await fetch(`${app.base}/ready`);
    return { status: res.status, body: (await res.json()) as { status: string; reason?: string; checks: Record<string, { ok: boolean; critical: boolean; detail?: string }> } };
  }

  it('503 naming PostgreSQL when its port is closed, 200 again when it is back', async () => {
    expect((await until(async () => ((await ready()).status === 200 ? true : null), 10_000, 'ready at start'))).toBe(true);
    await pg.close();
    const down = await ready();
    expect(down.status).toBe(503);
    expect(down.body.status).toBe('not_ready');
    expect(down.body.checks.postgres!.ok).toBe(false);
    expect(down.body.checks.redis!.ok).toBe(true);
    expect(down.body.reason).toMatch(/^postgres down \(/);
    await pg.open();
    const back = await until(async () => {
      const r = await ready();
      return r.status === 200 ? r : null;
    }, 30_000, 'ready after PostgreSQL is back');
    expect(back.body.checks.postgres!.ok).toBe(true);
  });

  it('many /ready at once while PostgreSQL refuses sessions as it starts up: each names 57P03 in time, over a few connection attempts, not one each', async () => {
    expect((await until(async () => ((await ready()).status === 200 ? true : null), 10_000, 'ready at start'))).toBe(true);
    // A restart: the probe's session ends, and the new one is refused.
    await pg.close();
    await pg.open();
    pg.refuseStartup();
    try {
      await ready(); // (may still meet the session the restart ended: CONNECTION_CLOSED)
      const from = pg.accepted;
      // The probe waits PROBE_RECONNECT_MS between connection attempts: checks queued one
      // behind the other (not sharing one) answered "no answer within 1500 ms" from the 6th on.
      const answers = await Promise.all(Array.from({ length: 20 }, () => ready()));
      for (const a of answers) {
        expect(a.status).toBe(503);
        expect(a.body.checks.postgres!.detail).toBe('57P03: the database system is starting up');
      }
      expect(pg.accepted - from).toBeLessThanOrEqual(5);
    } finally {
      pg.forward();
    }
    await until(async () => ((await ready()).status === 200 ? true : null), 5_000, 'ready once PostgreSQL accepts');
  });

  it('503 naming Redis when its port is closed, 200 again when it is back', async () => {
    await redis.close();
    const down = await until(async () => {
      const r = await ready();
      return r.status === 503 ? r : null;
    }, 10_000, 'not ready without Redis');
    expect(down.body.checks.redis!.ok).toBe(false);
    expect(down.body.checks.postgres!.ok).toBe(true);
    expect(down.body.reason).toMatch(/^redis down \(/);
    // Says what the operator can act on, not ioredis's "Stream isn't writeable and
    // enableOfflineQueue options is false" (the PING of a connection that is not connected).
    expect(down.body.checks.redis!.detail).toMatch(new RegExp(`^not connected to 127\\.0\\.0\\.1:${redis.port} \\(REDIS_URL; connection (closed|connecting|reconnecting|close|end)\\)`));
    expect(down.body.reason).not.toContain('enableOfflineQueue');
    // /health does not depend on either.
    expect((await fetch(`${app.base}/health`)).status).toBe(200);
    // /metrics still answers, and says the depth could not be read.
    const metrics = await (await fetch(`${app.base}/metrics`)).text();
    expect(metrics).toMatch(/^fleet_queue_depth_scrape_ok 0$/m);
    await redis.open();
    await until(async () => ((await ready()).status === 200 ? true : null), 40_000, 'ready after Redis is back');
  });

  it('a busy database is not a database that is down: the probe has its own connection, not the workers\' pool', async () => {
    // every connection of the workers' pool (DB_POOL_MAX=2 here) held by a long query
    const held = [0, 1].map(() => app.ctx.database.sql`select pg_sleep(4)`.execute());
    try {
      const r = await ready();
      expect(r.body.checks.postgres).toMatchObject({ ok: true });
      expect(r.status).toBe(200);
    } finally {
      await Promise.all(held);
    }
  });

  it('a failing component check (e.g. Kafka) reports degraded with 200; a critical one makes it 503; so does the phase', async () => {
    app.ctx.readiness.add('outbox-relay', async () => ({ ok: false, detail: 'kafka unreachable: connect ECONNREFUSED' }));
    const degraded = await ready();
    expect(degraded.status).toBe(200);
    expect(degraded.body.status).toBe('degraded');
    expect(degraded.body.checks['outbox-relay']).toMatchObject({ ok: false, critical: false, detail: 'kafka unreachable: connect ECONNREFUSED' });
    expect(degraded.body.reason).toBe('outbox-relay degraded (kafka unreachable: connect ECONNREFUSED)');

    app.ctx.readiness.add('outbox-relay', async () => ({ ok: false, critical: true, detail: 'cannot work' }));
    expect((await ready()).status).toBe(503);
    app.ctx.readiness.add('outbox-relay', () => new Promise(() => {})); // never answers: the time limit applies
    const hung = await ready();
    expect(hung.status).toBe(200);
    expect(hung.body.checks['outbox-relay']).toMatchObject({ ok: false, detail: 'no answer within 1500 ms' });

    app.ctx.readiness.add('outbox-relay', async () => ({ ok: true }));
    expect((await ready()).body.status).toBe('ready');
    app.ctx.readiness.setPhase('stopping');
    const stopping = await ready();
    expect(stopping.status).toBe(503);
    expect(stopping.body.reason).toBe('process is stopping');
    app.ctx.readiness.setPhase('running');
  });
});

describe('an HTTP address already in use', () => {
  it('fails the start naming HTTP_PORT', async () => {
    const q = testQueuePrefix();
    const first = await startApp({ DATABASE_URL: db.url, QUEUE_PREFIX: q.prefix });
    try {
      const port = new URL(first.base).port;
      const ctx = openContext(loadConfig({ DATABASE_URL: db.url, QUEUE_PREFIX: q.prefix, HTTP_PORT: port, LOG_LEVEL: 'silent' }), captureLog().log);
      try {
        await expect(httpComponent(ctx).start()).rejects.toThrow(
          `listen EADDRINUSE: address already in use 127.0.0.1:${port}: another process uses this address; set HTTP_PORT (or HTTP_HOST) to a free one`,
        );
      } finally {
        await ctx.close();
      }
    } finally {
      await first.stop();
      await q.cleanup();
    }
  });
});

describe('feature routes and graceful stop', () => {
  /** Requests the slow route's handler has begun. */
  let slowEntered = 0;
  const slow: HttpRouteModule = {
    name: 'slow-public',
    path: '/slow',
    access: 'public',
    router: () =>
      Router().get('/', async (_req, res) => {
        slowEntered++;
        await new Promise((r) => setTimeout(r, 800));
        res.json({ done: true });
      }),
  };
  const boom: HttpRouteModule = {
    name: 'boom',
    path: '/boom',
    access: 'public',
    router: () =>
      Router().get('/:token', () => {
        throw new Error('handler failed');
      }),
  };
  const secret: HttpRouteModule = {
    name: 'operator-only',
    path: '/secret',
    access: 'operator',
    router: () => Router().get('/', (_req, res) => void res.json({ secret: true })),
  };

  it('mounts public routes without auth and operator routes behind it; stop lets requests in flight finish', async () => {
    const q = testQueuePrefix();
    const app = await startApp(
      { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD },
      { routes: [...routeModules, slow, secret, boom] },
    );
    let stopped = false;
    try {
      expect((await fetch(`${app.base}/secret`)).status).toBe(401);
      expect((await fetch(`${app.base}/secret`, { headers: { authorization: AUTH } })).status).toBe(200);
      expect((await fetch(`${app.base}/ops`)).status).toBe(401);
      expect((await fetch(`${app.base}/nothing-here`)).status).toBe(404);
      const failed = await fetch(`${app.base}/boom/s3cret-token`);
      expect(failed.status).toBe(500);
      expect(await failed.json()).toEqual({ error: 'internal_error', message: 'internal error (see the fleet log)' });
      const logged = app.logLines.find((l) => l.msg === 'http request failed');
      expect(logged).toMatchObject({ route: '/boom/:token', method: 'GET' });
      expect(JSON.stringify(app.logLines)).not.toContain('s3cret-token');

      const entered = slowEntered;
      const inFlight = fetch(`${app.base}/slow`);
      // In flight: its handler runs (a fixed pause let a slower request reach the server after the stop began).
      await until(async () => slowEntered > entered, 10_000, 'the slow request in its handler');
      const stopping = app.http.stop(5_000);
      const res = await inFlight;
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ done: true });
      await stopping;
      stopped = true;
      await expect(fetch(`${app.base}/health`)).rejects.toThrow();
    } finally {
      if (stopped) await app.ctx.close();
      else await app.stop();
      await q.cleanup();
    }
  });
});
