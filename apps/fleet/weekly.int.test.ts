import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import PostalMime from 'postal-mime';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defaultRepeatStrategy } from 'bullmq';
import { eq, sql } from 'drizzle-orm';
import { loadConfig } from '../../libs/config/index.js';
import { listAudit } from '../../libs/db/repositories/audit.js';
import { patienten, platzsuche, therapeutAnfragePatient, therapeuten, therapeutenanfrage, type PatientStatus } from '../../libs/db/schema/index.js';
import { createLogger, silentLogger } from '../../libs/log/index.js';
import { createOutboxFolderDriver } from '../../libs/mail/index.js';
import { fixedClock, openContext, workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { catalog } from '../../libs/queues/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { startResendStandIn, type ResendStandIn } from '../../libs/testing/resend-stand-in.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { nextRun } from '../../libs/weekly/schedule.js';
import { signUnsubscribeToken } from '../../libs/weekly/unsubscribe-token.js';
import { emailComponents } from '../../workers/email/index.js';
import { runCli } from '../cli/run-cli.js';
import { runWeeklyFanout, weeklyHandlers, weeklyStillWanted } from '../../workers/weekly-status/index.js';
import { httpComponent, type HttpComponent } from '../http/component.js';
import { registerWeeklySchedule, WEEKLY_SCHEDULER_ID } from '../producers/weekly-schedule.js';

/**
 * Weekly status emails end to end: real PostgreSQL and Redis, the Resend stand-in behind
 * the real `resend` SDK, the email worker with its still-wanted hook, an injected clock
 * (Monday 23 November 2026, 09:00:05 Berlin: ISO week 2026-W48).
 */
const SECRET = 'test-unsubscribe-secret-0123456789abcdef';
const MONDAY_0900 = '2026-11-23T08:00:05Z';
const WEEK = '2026-W48';
const DAY = 86_400_000;

let db: TestDatabase;
let resend: ResendStandIn;
let ctx: FleetContext;
let cleanupRedis: () => Promise<void>;
let queuePrefix = '';
const clock = fixedClock(MONDAY_0900);
let running: Component[] = [];

async function until<T>(fn: () => Promise<T | undefined | false | null>, what: string, timeoutMs = 20_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) {
      const counts: Record<string, unknown> = {};
      for (const q of ['weekly-fanout', 'weekly-status', 'email', 'email-dlq', 'weekly-status-dlq']) counts[q] = await ctx.queues.queue(q).getJobCounts();
      throw new Error(`${what} not met within ${timeoutMs} ms: deliveries ${JSON.stringify(await deliveryStatuses())}, queues ${JSON.stringify(counts)}, provider requests ${JSON.stringify(resend.requests.map((r) => r.status))}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function start(...components: Component[]) {
  for (const c of components) {
    await c.start();
    running.push(c);
  }
}
const weeklyWorkers = () => workerComponent(ctx, 'weekly-test', weeklyHandlers(ctx));
const emailWorkers = () => emailComponents(ctx, { stillWanted: { 'weekly-status': weeklyStillWanted(ctx) } });

let therapistId = 0;
let seq = 0;
interface PatientSpec {
  status?: PatientStatus;
  email?: string | null;
  optOut?: boolean;
  lastSent?: Date | null;
  vorname?: string;
  nachname?: string;
  searches?: Array<{ status: 'aktiv' | 'erfolgreich' | 'pausiert' | 'abgebrochen'; requests?: Array<{ sentDaysAgo: number | null; answer?: 'anstehend' | 'angenommen' | 'abgelehnt' | 'keine_antwort'; answeredDaysAgo?: number }> }>;
}
async function patient(spec: PatientSpec = {}): Promise<{ id: number; email: string | null }> {
  seq++;
  const email = spec.email === undefined ? `p${seq}@example.org` : spec.email;
  const now = clock.now().getTime();
  const [row] = await ctx.database.db
    .insert(patienten)
    .values({
      anrede: 'Frau',
      geschlecht: 'weiblich',
      vorname: spec.vorname ?? `Vorname${seq}`,
      nachname: spec.nachname ?? `Nachname${seq}`,
      email,
      zahlungsreferenz: `T${seq}`,
      status: spec.status ?? 'auf_der_Suche',
      weeklyUpdateOptOut: spec.optOut ?? false,
      weeklyUpdateLastSent: spec.lastSent ?? null,
    })
    .returning({ id: patienten.id });
  for (const s of spec.searches ?? [{ status: 'aktiv' }]) {
    const [search] = await ctx.database.db.insert(platzsuche).values({ patientId: row!.id, status: s.status }).returning({ id: platzsuche.id });
    for (const r of s.requests ?? []) {
      const [req] = await ctx.database.db
        .insert(therapeutenanfrage)
        .values({
          therapistId,
          gesendetDatum: r.sentDaysAgo === null ? null : new Date(now - r.sentDaysAgo * DAY),
          antwortDatum: r.answeredDaysAgo === undefined ? null : new Date(now - r.answeredDaysAgo * DAY),
        })
        .returning({ id: therapeutenanfrage.id });
      await ctx.database.db.insert(therapeutAnfragePatient).values({ therapeutenanfrageId: req!.id, platzsucheId: search!.id, status: r.answer ?? 'anstehend' });
    }
  }
  return { id: row!.id, email };
}

async function deliveryStatuses(): Promise<Record<string, number>> {
  const rows = await ctx.database.db.execute<{ status: string; n: number }>(sql`select status, count(*)::int as n from fleet.deliveries group by status`);
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}
/** The job has run to its end (completed or failed; removed once done counts as done). */
async function ran(job: { jobId: string; queue: string }): Promise<boolean> {
  return ['completed', 'failed', 'unknown'].includes(await ctx.queues.queue(job.queue).getJobState(job.jobId));
}

async function queuesIdle(): Promise<boolean> {
  for (const q of ['weekly-fanout', 'weekly-status', 'email']) {
    // (the scheduler's next tick waits as a delayed job on weekly-fanout: not work in hand)
    const c = await ctx.queues.queue(q).getJobCounts('waiting', 'active', 'delayed', 'prioritized');
    if ((c.waiting ?? 0) + (c.active ?? 0) + (q === 'weekly-fanout' ? 0 : (c.delayed ?? 0)) + (c.prioritized ?? 0) > 0) return false;
  }
  return true;
}
const recipients = () => resend.messages.map((m) => m.to[0]!).sort();
/**
 * Two eligible patients, the fan-out queues an email for each while no email worker runs, then
 * `optOut(leave)` opts one out; the email workers start: the other patient's email is sent, the
 * opted-out one's dropped. Returns the patient opted out.
 */
async function optOutBetweenFanoutAndSend(optOut: (leave: { id: number }) => Promise<void>): Promise<{ id: number }> {
  const stay = await patient();
  const leave = await patient();
  await start(weeklyWorkers()); // no email worker yet: deliveries wait as pending
  await runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false });
  await until(async () => (await deliveryStatuses()).pending === 2, 'two deliveries recorded');
  await optOut(leave);
  await start(...emailWorkers());
  await until(async () => {
    const s = await deliveryStatuses();
    return s.sent === 1 && s.dropped === 1;
  }, 'one sent, one dropped');
  expect(recipients()).toEqual([stay.email]);
  const [dropped] = await ctx.database.db.execute<{ patient_id: number; drop_reason: string | null }>(sql`select patient_id, drop_reason from fleet.deliveries where status = 'dropped'`);
  // The reason as a code the views go by (fleet weekly preview/opt-out: "dropped (opted out)"), not parsed from the sentence.
  expect(dropped).toEqual({ patient_id: leave.id, drop_reason: 'opted_out' });
  return leave;
}

/** The outbox rows an opt-out wrote (patient.updated on patient-events). */
async function optOutEvents(): Promise<Array<{ topic: string; key: string; payload: Record<string, unknown> }>> {
  return ctx.database.db.execute<{ topic: string; key: string; payload: Record<string, unknown> }>(
    sql`select topic, key, payload from fleet.outbox where event_type = 'patient.updated' order by id`,
  );
}
const optOutEvent = (patientId: number) => ({
  topic: 'patient-events',
  key: String(patientId),
  payload: { patientId, changedFields: ['weekly_update_opt_out'], source: 'unsubscribe' },
});

beforeAll(async () => {
  db = await createTestDatabase();
  const { prefix, cleanup } = testQueuePrefix();
  cleanupRedis = cleanup;
  queuePrefix = prefix;
  resend = await startResendStandIn({ keepBodies: true });
  const config = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: db.url,
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: prefix,
    MAIL_DRIVER: 'resend',
    RESEND_API_KEY: 're_test_key',
    RESEND_BASE_URL: resend.url,
    MAIL_RATE_PER_SECOND: '100',
    MAIL_SWEEP_INTERVAL_MS: '60000',
    RETRY_BACKOFF_SCALE: '0.001',
    UNSUBSCRIBE_SECRET: SECRET,
    PUBLIC_BASE_URL: 'https://app.curavani.example',
    HTTP_PORT: '0',
    WEEKLY_PAGE_SIZE: '7',
    WEEKLY_CONTACT_PHONE: '030 1234567',
    WEEKLY_CONTACT_EMAIL: 'fragen@curavani.example',
  });
  ctx = openContext(config, process.env.WEEKLY_TEST_LOG ? createLogger({ level: 'debug', pretty: 'false' }) : silentLogger(), { clock });
  const [t] = await ctx.database.db
    .insert(therapeuten)
    .values({ anrede: 'Herr', geschlecht: 'männlich', titel: 'Dr.', vorname: 'Gustav', nachname: 'Geheimname', plz: '10115' })
    .returning({ id: therapeuten.id });
  therapistId = t!.id;
});

afterEach(async () => {
  for (const c of running.reverse()) await c.stop(5_000);
  running = [];
  for (const q of ['weekly-fanout', 'weekly-status', 'email', 'email-dlq', 'weekly-status-dlq', 'weekly-fanout-dlq']) {
    await ctx.queues.queue(q).obliterate({ force: true });
  }
  await ctx.database.db.execute(sql`truncate fleet.deliveries, fleet.audit_log, fleet.outbox, patient_service.patienten, matching_service.platzsuche, matching_service.therapeutenanfrage, matching_service.therapeut_anfrage_patient`);
  resend.messages.length = 0;
  resend.requests.length = 0;
  resend.perRecipient.clear();
  clock.set(MONDAY_0900);
});

afterAll(async () => {
  await ctx?.close();
  await resend?.stop();
  await cleanupRedis?.();
  await db?.drop();
});

describe('weekly status emails', () => {
  it('sends exactly the eligible patients: status, active search, email, opt-out, already sent', async () => {
    const mondayBerlinMidnight = new Date('2026-11-22T23:00:00Z');
    const eligible = [
      await patient(),
      await patient({ lastSent: new Date(mondayBerlinMidnight.getTime() - 60_000) }), // last week, Sunday 23:59 Berlin
      await patient({ searches: [{ status: 'pausiert' }, { status: 'aktiv' }] }),
    ];
    await patient({ status: 'offen' });
    await patient({ status: 'in_Therapie' });
    await patient({ status: 'Suche_abgebrochen' });
    await patient({ searches: [{ status: 'pausiert' }] });
    await patient({ searches: [{ status: 'erfolgreich' }, { status: 'abgebrochen' }] });
    await patient({ searches: [] });
    await patient({ email: null });
    await patient({ email: '   ' });
    await patient({ optOut: true });
    await patient({ lastSent: mondayBerlinMidnight }); // already this week (Monday 00:00 Berlin)

    const dry = await runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: true });
    expect(dry).toMatchObject({ candidates: 7, eligible: 3, queued: 0, skippedOptedOut: 1, skippedNoEmail: 2, skippedAlreadySent: 1 });

    await start(weeklyWorkers(), ...emailWorkers());
    const run = await runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false });
    expect(run).toMatchObject({ eligible: 3, queued: 3 });
    await until(async () => (await deliveryStatuses()).sent === 3 && (await queuesIdle()), 'three emails sent');
    expect(recipients()).toEqual(eligible.map((p) => p.email!).sort());
    expect(await deliveryStatuses()).toEqual({ sent: 3 });
    // Sent patients carry the time of this week's update.
    const [{ n }] = (await ctx.database.db.execute<{ n: number }>(
      sql`select count(*)::int as n from patient_service.patienten where weekly_update_last_sent = ${clock.now().toISOString()}::timestamptz`,
    )) as unknown as [{ n: number }];
    expect(n).toBe(3);
  });

  it('several active searches give one email; content counts requests and answers, names no therapist; one-click and auto-reply suppression headers; replies go to WEEKLY_CONTACT_EMAIL', async () => {
    const p = await patient({
      vorname: 'Max <script>alert(1)</script>',
      nachname: 'Müller & Söhne',
      lastSent: new Date(clock.now().getTime() - 7 * DAY),
      searches: [
        { status: 'aktiv', requests: [{ sentDaysAgo: 20, answer: 'abgelehnt', answeredDaysAgo: 15 }, { sentDaysAgo: 10 }, { sentDaysAgo: 3 }, { sentDaysAgo: 2, answer: 'abgelehnt', answeredDaysAgo: 1 }] },
        { status: 'aktiv', requests: [{ sentDaysAgo: 1 }, { sentDaysAgo: null }] },
        { status: 'pausiert', requests: [{ sentDaysAgo: 1 }] },
      ],
    });
    await start(weeklyWorkers(), ...emailWorkers());
    await runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false });
    await until(async () => (await deliveryStatuses()).sent === 1 && (await queuesIdle()), 'one email sent');
    expect(resend.messages).toHaveLength(1);
    const m = resend.messages[0]!;
    expect(m.to).toEqual([p.email]);
    expect(m.subject).toBe('Ihr wöchentlicher Zwischenstand von Curavani');
    const token = signUnsubscribeToken(SECRET, p.id);
    expect(m.headers).toMatchObject({
      'List-Unsubscribe': `<https://app.curavani.example/unsubscribe/${token}>, <mailto:abmelden@curavani.com?subject=Abmelden%20${token}>`,
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
      'Auto-Submitted': 'auto-generated',
      'X-Auto-Response-Suppress': 'OOF, AutoReply',
    });
    // Sent from noreply@ (MAIL_FROM), but the text invites questions: a reply reaches staff.
    expect(m.from).toBe('Curavani <noreply@curavani.com>');
    expect(m.replyTo).toEqual(['fragen@curavani.example']);
    expect(m.text).toContain('E-Mail: fragen@curavani.example');
    expect(m.text).toContain('3 neue Anfragen an Praxen gesendet'); // 3, 2 and 1 days ago; not the paused search
    expect(m.text).toContain('Insgesamt haben wir bisher 5 Anfragen an Praxen gesendet');
    expect(m.text).toContain('Wir haben 2 Antworten erhalten, 1 davon seit unserer letzten Nachricht');
    expect(m.text).toContain('030 1234567');
    expect(m.html).toContain('<a href="tel:0301234567">030 1234567</a>');
    expect(m.text!.split('\n')).toContain('-- ');
    for (const body of [m.html!, m.text!, m.subject]) {
      expect(body).not.toMatch(/Geheimname|Gustav/);
    }
    expect(m.html).not.toContain('<script>');
    expect(m.html).toContain('Max &lt;script&gt;alert(1)&lt;/script&gt; Müller &amp; Söhne');
  });

  it('through the outbox folder driver the .eml carries Reply-To: WEEKLY_CONTACT_EMAIL next to the one-click and auto-reply suppression headers', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'weekly-outbox-'));
    try {
      const p = await patient();
      await start(weeklyWorkers(), ...emailComponents(ctx, { stillWanted: { 'weekly-status': weeklyStillWanted(ctx) }, mail: createOutboxFolderDriver({ dir }) }));
      await runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false });
      await until(async () => (await deliveryStatuses()).sent === 1 && (await queuesIdle()), 'one email written');
      const files = (await readdir(dir)).filter((f) => f.endsWith('.eml'));
      expect(files).toHaveLength(1);
      const parsed = await PostalMime.parse(await readFile(path.join(dir, files[0]!)));
      expect(parsed.to?.map((a) => 'address' in a && a.address)).toEqual([p.email]);
      expect(parsed.from).toMatchObject({ address: 'noreply@curavani.com' });
      expect(parsed.replyTo?.map((a) => 'address' in a && a.address)).toEqual(['fragen@curavani.example']);
      const headers = Object.fromEntries(parsed.headers.map((x) => [x.key, x.value]));
      expect(headers['reply-to']).toBe('fragen@curavani.example');
      expect(headers['list-unsubscribe-post']).toBe('List-Unsubscribe=One-Click');
      // out-of-office replies are asked not to answer (RFC 3834, Exchange)
      expect(headers['auto-submitted']).toBe('auto-generated');
      expect(headers['x-auto-response-suppress']).toBe('OOF, AutoReply');
      // the signature separator keeps its trailing space through the MIME encoding (RFC 3676)
      expect(parsed.text?.split(/\r?\n/)).toContain('-- ');
      expect(resend.messages).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a fan-out run twice in one week (scheduled, by hand, and a tick) sends each eligible patient exactly once', async () => {
    const ps = [];
    for (let i = 0; i < 40; i++) ps.push(await patient());
    await start(weeklyWorkers(), ...emailWorkers());
    await Promise.all([
      runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false }),
      runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false }),
      ctx.queues.enqueue('weekly-fanout', { isoWeek: WEEK }),
      ctx.queues.enqueue('weekly-tick', {}),
    ]);
    await until(async () => (await deliveryStatuses()).sent === 40 && (await queuesIdle()), '40 emails sent');
    // Later the same week: the fleet restarts (catch-up) and an operator runs it again.
    clock.set('2026-11-26T10:00:00Z');
    const again = await runWeeklyFanout(ctx, { isoWeek: WEEK, dryRun: false });
    expect(again).toMatchObject({ eligible: 0, queued: 0, skippedAlreadySent: 40 });
    const manual = await ctx.queues.enqueue('weekly-fanout', { isoWeek: WEEK }, { jobId: 'weekly-fanout.manual-again' });
    const tick = await ctx.queues.enqueue('weekly-tick', {});
    // Both have run (and queued anything they would), then everything they queued has.
    await until(async () => (await ran(manual)) && (await ran(tick)), 'the fan-out and the tick run');
    await until(() => queuesIdle(), 'queues idle');
    expect(resend.messages).toHaveLength(40);
    expect(resend.stats().duplicates).toBe(0);
    expect(new Set(recipients())).toEqual(new Set(ps.map((p) => p.email)));
    expect(await deliveryStatuses()).toEqual({ sent: 40 });
  });

  it('opting out after the fan-out but before sending drops the queued email', async () => {
    await optOutBetweenFanoutAndSend(async (leave) => {
      const http = httpComponent(ctx) as HttpComponent;
      await start(http);
      const base = `http://127.0.0.1:${http.address()!.port}`;
      const token = signUnsubscribeToken(SECRET, leave.id);
      const res = await fetch(`${base}/unsubscribe/${token}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'List-Unsubscribe=One-Click',
      });
      expect(res.status).toBe(200);
    });
  });

  it('staff opt a patient out with fleet weekly opt-out after the fan-out: the queued email is dropped, the change audited with who and why, source staff; opt-in undoes it', async () => {
    const env = { DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: queuePrefix, LOG_LEVEL: 'silent', FLEET_OPERATOR: undefined };
    const leave = await optOutBetweenFanoutAndSend(async (leave) => {
      const noReason = await runCli(['weekly', 'opt-out', String(leave.id)], env);
      expect(noReason.code).toBe(2);
      expect(noReason.stderr).toContain('--reason <text> is required');
      const missing = await runCli(['weekly', 'opt-out', String(leave.id + 1000), '--reason', 'x'], env);
      expect(missing.code).toBe(3);
      expect(missing.stderr).toContain(`patient ${leave.id + 1000} not found`);

      const out = await runCli(['weekly', 'opt-out', String(leave.id), '--reason', 'asked on the phone', '--actor', 'anna'], env);
      expect(out.stderr).toBe('');
      expect(out.code).toBe(0);
      expect(out.stdout.split('\n')[0]).toBe(`patient ${leave.id} opted out of the weekly emails (audited, patient.updated event queued)`);
      const again = await runCli(['weekly', 'opt-out', String(leave.id), '--reason', 'asked again', '--actor', 'anna', '--json'], env);
      expect(again.code).toBe(0);
      expect(JSON.parse(again.stdout)).toMatchObject({ patientId: leave.id, optedOut: true, changed: false });
    });

    const back = await runCli(['weekly', 'opt-in', String(leave.id), '--reason', 'wants them back', '--actor', 'ben'], env);
    expect(back.code).toBe(0);
    expect(back.stdout).toContain(`patient ${leave.id} gets the weekly emails again`);
    const audit = (await listAudit(ctx.database.db)).filter((a) => a.target === `patient/${leave.id}`);
    expect(audit.map((a) => [a.action, a.actor, a.reason, a.details]).reverse()).toEqual([
      ['weekly.opt-out', 'anna', 'asked on the phone', { via: 'cli' }],
      ['weekly.opt-in', 'ben', 'wants them back', { via: 'cli' }],
    ]);
    // One event per change (the repeat wrote none), telling the platform that staff made it.
    const staffEvent = { ...optOutEvent(leave.id), payload: { ...optOutEvent(leave.id).payload, source: 'staff' } };
    expect(await optOutEvents()).toEqual([staffEvent, staffEvent]);
  });

  it('unsubscribe: forged or altered tokens are refused; the real one works once and is idempotent after', async () => {
    const p = await patient();
    const other = await patient();
    const http = httpComponent(ctx) as HttpComponent;
    await start(http);
    const base = `http://127.0.0.1:${http.address()!.port}`;
    const post = (token: string) =>
      fetch(`${base}/unsubscribe/${token}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    const real = signUnsubscribeToken(SECRET, p.id);
    const sig = real.split('.')[1]!;
    const forged = [
      `${other.id}.${sig}`, // another patient's id with this signature
      `${p.id}.${sig.slice(0, -1)}${sig.endsWith('A') ? 'B' : 'A'}`, // altered signature
      signUnsubscribeToken('another-secret-another-secret-0000000', p.id),
      signUnsubscribeToken(SECRET, p.id, 'some-other-purpose'),
      'garbage',
    ];
    for (const t of forged) {
      const res = await post(t);
      expect(res.status).toBe(404);
      // The page says how to reach staff instead (it asks the patient to write to us).
      expect(await res.text()).toContain('href="mailto:fragen@curavani.example"');
    }
    // A link cut off before its token (a wrapped plain-text URL) gets the same German page.
    for (const path of ['/unsubscribe/', '/unsubscribe']) {
      const cut = await fetch(`${base}${path}`);
      expect(cut.status).toBe(404);
      const text = await cut.text();
      expect(text).toContain('lang="de"');
      expect(text).toContain('Dieser Link ist leider ungültig');
      expect(text).toContain('mailto:fragen@curavani.example');
    }
    const optedOut = async () =>
      (await ctx.database.db.select({ id: patienten.id, o: patienten.weeklyUpdateOptOut }).from(patienten)).filter((r) => r.o).map((r) => r.id);
    expect(await optedOut()).toEqual([]);
    expect(await optOutEvents()).toEqual([]);

    // GET shows a page with a button and changes nothing (mail scanners open links).
    const page = await fetch(`${base}/unsubscribe/${real}`);
    expect(page.status).toBe(200);
    const body = await page.text();
    expect(body).toContain('<form method="post">');
    expect(body).toContain('lang="de"');
    expect(page.headers.get('set-cookie')).toBeNull();
    expect(await optedOut()).toEqual([]);
    expect(await optOutEvents()).toEqual([]);

    const first = await post(real);
    expect(first.status).toBe(200);
    const confirmation = await first.text();
    expect(confirmation).toContain('Sie wurden abgemeldet');
    // An email already handed to the provider may still arrive: the page must not promise otherwise.
    expect(confirmation).not.toContain('werden nicht mehr versendet');
    expect(confirmation).toContain('Eine Nachricht, die bereits unterwegs war, kann Sie noch ein letztes Mal erreichen');
    const second = await post(real);
    expect(second.status).toBe(200);
    expect(await optedOut()).toEqual([p.id]);
    const audit = (await listAudit(ctx.database.db)).filter((a) => a.action === 'weekly.opt-out');
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actor: `patient/${p.id}`, target: `patient/${p.id}`, details: { via: 'one-click' } });
    // One patient.updated for the click that changed the patient, none for the repeat.
    expect(await optOutEvents()).toEqual([optOutEvent(p.id)]);
    expect((await fetch(`${base}/unsubscribe/${real}`).then((r) => r.text()))).toContain('bereits abgemeldet');
    expect(await optOutEvents()).toHaveLength(1);
  });

  it('unsubscribe: a patient already opted out gets no event; clicks racing each other write one', async () => {
    const already = await patient({ optOut: true });
    const racing = await patient();
    const http = httpComponent(ctx) as HttpComponent;
    await start(http);
    const base = `http://127.0.0.1:${http.address()!.port}`;
    const post = (id: number) =>
      fetch(`${base}/unsubscribe/${signUnsubscribeToken(SECRET, id)}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    expect((await post(already.id)).status).toBe(200);
    expect(await optOutEvents()).toEqual([]);
    const answers = await Promise.all(Array.from({ length: 6 }, () => post(racing.id)));
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(await optOutEvents()).toEqual([optOutEvent(racing.id)]);
  });

  it('unsubscribe: an opt-out whose transaction fails at commit leaves neither the change nor its event', async () => {
    const p = await patient();
    const http = httpComponent(ctx) as HttpComponent;
    await start(http);
    const base = `http://127.0.0.1:${http.address()!.port}`;
    // Refuses the commit of any transaction that changed a patient row: after the update, its
    // audit row and its event were written.
    await ctx.database.db.execute(sql`create function fleet.refuse_patient_commit() returns trigger language plpgsql as $$
      begin raise exception 'commit refused by test'; end $$`);
    await ctx.database.db.execute(sql`create constraint trigger refuse_patient_commit after update on patient_service.patienten
      deferrable initially deferred for each row execute function fleet.refuse_patient_commit()`);
    try {
      const res = await fetch(`${base}/unsubscribe/${signUnsubscribeToken(SECRET, p.id)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'List-Unsubscribe=One-Click',
      });
      // The patient gets the German "try again later" page, not the app's JSON error.
      expect(res.status).toBe(503);
      expect(await res.text()).toContain('Bitte versuchen Sie es in ein paar Minuten noch einmal.');
    } finally {
      await ctx.database.db.execute(sql`drop trigger refuse_patient_commit on patient_service.patienten`);
      await ctx.database.db.execute(sql`drop function fleet.refuse_patient_commit()`);
    }
    const [row] = await ctx.database.db.select({ o: patienten.weeklyUpdateOptOut }).from(patienten);
    expect(row!.o).toBe(false);
    expect(await optOutEvents()).toEqual([]);
    expect((await listAudit(ctx.database.db)).filter((a) => a.action === 'weekly.opt-out')).toEqual([]);
  });

  it('unsubscribe: a one-click POST as multipart/form-data (RFC 8058\'s own example) is audited as one-click, the page\'s button as the page', async () => {
    const mail = await patient();
    const page = await patient();
    const http = httpComponent(ctx) as HttpComponent;
    await start(http);
    const base = `http://127.0.0.1:${http.address()!.port}`;
    const form = new FormData();
    form.set('List-Unsubscribe', 'One-Click');
    expect((await fetch(`${base}/unsubscribe/${signUnsubscribeToken(SECRET, mail.id)}`, { method: 'POST', body: form })).status).toBe(200);
    const button = await fetch(`${base}/unsubscribe/${signUnsubscribeToken(SECRET, page.id)}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' });
    expect(button.status).toBe(200);
    const audit = (await listAudit(ctx.database.db)).filter((a) => a.action === 'weekly.opt-out');
    expect(audit.find((a) => a.target === `patient/${mail.id}`)?.details).toEqual({ via: 'one-click' });
    expect(audit.find((a) => a.target === `patient/${page.id}`)?.details).toEqual({ via: 'unsubscribe-page' });
    // Both ways (mail client, the confirmation page's button) write the same event.
    expect(await optOutEvents()).toEqual([optOutEvent(mail.id), optOutEvent(page.id)]);
  });
});

describe('unsubscribe undone', () => {
  it('a patient who opted out by mistake opts back in from the page: audited, one event per change, forged tokens refused', async () => {
    const p = await patient();
    const http = httpComponent(ctx) as HttpComponent;
    await start(http);
    const base = `http://127.0.0.1:${http.address()!.port}`;
    const token = signUnsubscribeToken(SECRET, p.id);
    const form = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' };
    const optedOut = async () => (await ctx.database.db.select({ o: patienten.weeklyUpdateOptOut }).from(patienten).where(eq(patienten.id, p.id)))[0]!.o;

    const out = await fetch(`${base}/unsubscribe/${token}`, form);
    const outPage = await out.text();
    expect(outPage).toContain('Sie wurden abgemeldet');
    // The confirmation offers the undo, posting to /unsubscribe/<token>/resubscribe (relative to the page).
    const action = /<form method="post" action="([^"]+)">/.exec(outPage)?.[1];
    expect(action).toBe(`${token}/resubscribe`);
    const undoUrl = new URL(action!, `${base}/unsubscribe/${token}`).href;
    expect(undoUrl).toBe(`${base}/unsubscribe/${token}/resubscribe`);
    expect(await (await fetch(`${base}/unsubscribe/${token}`)).text()).toContain(`action="${token}/resubscribe"`);
    expect(await optedOut()).toBe(true);

    // GET changes nothing: it leads to the token's page.
    const get = await fetch(undoUrl, { redirect: 'manual' });
    expect(get.status).toBe(303);
    expect(new URL(get.headers.get('location')!, undoUrl).href).toBe(`${base}/unsubscribe/${token}`);
    expect(await optedOut()).toBe(true);

    const sig = token.split('.')[1]!;
    for (const forged of [`${p.id}.${sig.slice(0, -1)}${sig.endsWith('A') ? 'B' : 'A'}`, 'garbage']) {
      expect((await fetch(`${base}/unsubscribe/${forged}/resubscribe`, form)).status).toBe(404);
    }
    expect(await optedOut()).toBe(true);

    const back = await fetch(undoUrl, form);
    expect(back.status).toBe(200);
    expect(await back.text()).toContain('Sie erhalten den Zwischenstand wieder');
    expect(await optedOut()).toBe(false);
    expect((await fetch(undoUrl, form)).status).toBe(200); // a repeat changes nothing
    const audit = (await listAudit(ctx.database.db)).filter((a) => a.target === `patient/${p.id}`);
    expect(audit.map((a) => [a.action, a.details])).toEqual(
      expect.arrayContaining([
        ['weekly.opt-out', { via: 'unsubscribe-page' }],
        ['weekly.opt-in', { via: 'unsubscribe-page' }],
      ]),
    );
    expect(audit).toHaveLength(2);
    // The platform learns of both changes; the repeat writes nothing.
    expect(await optOutEvents()).toEqual([optOutEvent(p.id), optOutEvent(p.id)]);
    // Opted in again, the page offers the opt-out again.
    expect(await (await fetch(`${base}/unsubscribe/${token}`)).text()).toContain('Ja, abmelden');
  });
});

describe('weekly schedule', () => {
  it('registers one scheduler however many processes start at once, removes old ones, and fires Monday 09:00 Berlin', async () => {
    // An older deploy registered the same job under another id.
    await ctx.queues.queue('weekly-fanout').upsertJobScheduler('weekly-old-id', { pattern: '0 8 * * 1', tz: 'Europe/Berlin' }, { name: 'weekly-tick', data: {} });
    clock.set('2026-11-23T07:00:00Z'); // Monday 08:00 Berlin: this week is not due yet
    const results = await Promise.all(Array.from({ length: 6 }, () => registerWeeklySchedule(ctx)));
    expect(results.filter((r) => r.action === 'created')).toHaveLength(1);
    expect(results.every((r) => r.catchUp === null)).toBe(true);
    const q = ctx.queues.queue('weekly-fanout');
    const schedulers = await q.getJobSchedulers(0, -1);
    expect(schedulers.map((s) => s.key)).toEqual([WEEKLY_SCHEDULER_ID]);
    expect(schedulers[0]).toMatchObject({ pattern: '0 9 * * 1', tz: 'Europe/Berlin' });
    const delayed = (await q.getDelayed(0, -1)).filter((j) => j.name === 'weekly-tick');
    expect(delayed).toHaveLength(1);
    // BullMQ computes its next run from the real time: a Monday, 09:00 in Berlin.
    const next = new Date(schedulers[0]!.next!);
    expect(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', weekday: 'long', hour: '2-digit', minute: '2-digit' }).format(next)).toBe('Monday 09:00');
    // A restart with the same settings changes nothing.
    expect((await registerWeeklySchedule(ctx)).action).toBe('unchanged');
    expect((await q.getDelayed(0, -1)).filter((j) => j.name === 'weekly-tick')).toHaveLength(1);
    // A deploy whose retry policy differs from the stored one (an older release's) updates it.
    await q.upsertJobScheduler(WEEKLY_SCHEDULER_ID, { pattern: '0 9 * * 1', tz: 'Europe/Berlin' }, { name: 'weekly-tick', data: {}, opts: { attempts: 5, backoff: { type: 'exponential', delay: 30 } } });
    expect((await registerWeeklySchedule(ctx)).action).toBe('updated');
    const [updated] = await q.getJobSchedulers(0, -1);
    expect(updated!.template?.opts).toMatchObject({ attempts: catalog['weekly-tick'].retry.attempts, backoff: { type: 'capped-exponential' } });
    expect((await q.getDelayed(0, -1)).filter((j) => j.name === 'weekly-tick')).toHaveLength(1);
    expect((await registerWeeklySchedule(ctx)).action).toBe('unchanged');
  });

  it("BullMQ's own schedule computation fires Monday 09:00 Berlin in the weeks around both DST changes", () => {
    const berlin = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', weekday: 'long', hour: '2-digit', minute: '2-digit' });
    const opts = { pattern: '0 9 * * 1', tz: 'Europe/Berlin' };
    for (const [from, expected] of [
      ['2026-03-20T00:00:00Z', ['2026-03-23T08:00:00.000Z', '2026-03-30T07:00:00.000Z', '2026-04-06T07:00:00.000Z']],
      ['2026-10-16T00:00:00Z', ['2026-10-19T07:00:00.000Z', '2026-10-26T08:00:00.000Z', '2026-11-02T08:00:00.000Z']],
    ] as const) {
      let at = new Date(from).getTime();
      const fired: string[] = [];
      for (let i = 0; i < 3; i++) {
        at = defaultRepeatStrategy(at, opts)!;
        fired.push(new Date(at).toISOString());
        expect(berlin.format(new Date(at))).toBe('Monday 09:00');
        expect(new Date(at)).toEqual(nextRun({ cron: opts.pattern, timeZone: opts.tz }, new Date(at - 1)));
      }
      expect(fired).toEqual(expected);
    }
  });

  it('catches up within the week after the scheduled time, and never for a past week', async () => {
    const p = await patient();
    await start(weeklyWorkers(), ...emailWorkers());
    clock.set('2026-11-27T15:00:00Z'); // back on Friday of the same week
    const r = await registerWeeklySchedule(ctx);
    expect(r.catchUp).toEqual({ isoWeek: WEEK, jobId: `weekly-fanout.week.${WEEK}` });
    await until(async () => (await deliveryStatuses()).sent === 1 && (await queuesIdle()), 'catch-up email sent');
    expect(recipients()).toEqual([p.email]);

    // A fan-out job of last week that waited in the queue does nothing now.
    await patient();
    const stale = await ctx.queues.enqueue('weekly-fanout', { isoWeek: '2026-W47' });
    await until(() => ran(stale), 'the stale fan-out run');
    await until(() => queuesIdle(), 'queues idle');
    expect(resend.messages).toHaveLength(1);
    const byHand = await runWeeklyFanout(ctx, { isoWeek: '2026-W47', dryRun: false });
    expect(byHand).toMatchObject({ refused: 'past_week', queued: 0 });
  });
});
