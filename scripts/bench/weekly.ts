/**
 * Weekly status emails at scale: 100,000 eligible patients (each with an active search and
 * two requests). Measures
 *  1. the fan-out: time and memory while it selects the patients page by page and enqueues
 *     one `weekly-status` job each;
 *  2. sending: the weekly-status workers record the deliveries and the email worker (H1's
 *     sender, Resend batch endpoint, shared 2 requests/s limit) sends them to the Resend
 *     stand-in limited to 2 requests/s; throughput over the measuring window and duplicates.
 * Prints figures; asserts nothing. Uses its own database and queue prefix, dropped at the end.
 *
 *   npx tsx scripts/bench/weekly.ts [--patients 100000] [--send-seconds 120] [--send-all]
 *                                   [--fanout-only] [--record-only] [--send-backlog 20000]
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { loadConfig } from '../../libs/config/index.js';
import { runMigrations } from '../../libs/db/migrate.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, workerComponent, type Component } from '../../libs/runtime/index.js';
import { startResendStandIn } from '../../libs/testing/resend-stand-in.js';
import { isoWeekOf } from '../../libs/weekly/iso-week.js';
import { emailComponents } from '../../workers/email/index.js';
import { composeWeeklyEmail, runWeeklyFanout, weeklyHandlers, weeklyStillWanted } from '../../workers/weekly-status/index.js';
import { deliveries } from '../../libs/db/schema/index.js';
import { jobIdFor, jobOptionsFor } from '../../libs/queues/index.js';

const { values: args } = parseArgs({
  options: {
    patients: { type: 'string', default: '100000' },
    'send-seconds': { type: 'string', default: '120' },
    'send-all': { type: 'boolean', default: false },
    'record-only': { type: 'boolean', default: false },
    'fanout-only': { type: 'boolean', default: false },
    'send-backlog': { type: 'string' },
  },
});
const N = Number(args.patients);
const SEND_SECONDS = Number(args['send-seconds']);
const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const suffix = randomBytes(4).toString('hex');
const dbName = `fleet_bench_weekly_${suffix}`;
const prefix = `bench_weekly_${suffix}`;
const dbUrl = new URL(ADMIN_URL);
dbUrl.pathname = `/${dbName}`;
class Done extends Error {}
const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MB`;

const resend = await startResendStandIn({ ratePerSecond: 2, keepBodies: false });
await runMigrations(dbUrl.toString(), { platform: true });
const config = loadConfig({
  ...process.env,
  NODE_ENV: 'development',
  LOG_LEVEL: 'silent',
  DATABASE_URL: dbUrl.toString(),
  REDIS_URL,
  QUEUE_PREFIX: prefix,
  MAIL_DRIVER: 'resend',
  RESEND_API_KEY: 're_bench',
  RESEND_BASE_URL: resend.url,
  MAIL_RATE_PER_SECOND: '2',
  UNSUBSCRIBE_SECRET: 'bench-unsubscribe-secret-0123456789abcdef',
});
const ctx = openContext(config, silentLogger());
const sql = ctx.database.sql;
const running: Component[] = [];

try {
  // --- data: N eligible patients, one active search each, two requests each ---
  let t0 = performance.now();
  await sql`insert into patient_service.patienten (anrede, geschlecht, vorname, nachname, email, zahlungsreferenz, status)
            select 'Frau', 'weiblich', 'Bench', 'P' || g, 'bench' || g || '@example.org', 'B' || g, 'auf_der_Suche' from generate_series(1, ${N}) g`;
  await sql`insert into matching_service.platzsuche (patient_id, status) select id, 'aktiv' from patient_service.patienten order by id`;
  await sql`insert into matching_service.therapeutenanfrage (therapist_id, gesendet_datum)
            select 1, now() - (g % 20) * interval '1 day' from generate_series(1, ${2 * N}) g`;
  await sql`insert into matching_service.therapeut_anfrage_patient (therapeutenanfrage_id, platzsuche_id, status)
            select ta.id, ps.id, 'anstehend' from matching_service.platzsuche ps
            join matching_service.therapeutenanfrage ta on ta.id in (2 * ps.id - 1, 2 * ps.id)`;
  await sql`analyze`;
  console.log(`seeded ${N} eligible patients in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  // --- 1. fan-out ---
  const isoWeek = isoWeekOf(new Date(), config.weekly.timeZone);
  global.gc?.();
  const base = process.memoryUsage();
  let peakRss = base.rss;
  let peakHeap = base.heapUsed;
  const samples: number[] = [];
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
    samples.push(m.heapUsed);
  }, 100);
  t0 = performance.now();
  const fan = await runWeeklyFanout(ctx, { isoWeek, dryRun: false });
  const fanSeconds = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  const tenth = (i: number) => samples[Math.min(samples.length - 1, Math.floor((i / 10) * samples.length))]!;
  console.log(`\nfan-out ${isoWeek}: eligible ${fan.eligible}, queued ${fan.queued} in ${fanSeconds.toFixed(1)} s (${Math.round(fan.queued / fanSeconds)} patients/s, page size ${config.weekly.pageSize})`);
  console.log(`  memory: heap before ${mb(base.heapUsed)}, peak ${mb(peakHeap)} (+${mb(peakHeap - base.heapUsed)}); rss before ${mb(base.rss)}, peak ${mb(peakRss)}`);
  console.log(`  heap over the run (10 % steps): ${Array.from({ length: 11 }, (_, i) => mb(tenth(i)).replace(' MB', '')).join(' ')} MB`);
  const waiting = await ctx.queues.queue('weekly-status').getJobCounts('waiting', 'prioritized', 'delayed');
  console.log(`  weekly-status jobs waiting: ${(waiting.waiting ?? 0) + (waiting.prioritized ?? 0) + (waiting.delayed ?? 0)}`);

  // --- 2. record and send ---
  // Default: the weekly-status workers record while the email worker sends (end to end).
  // --send-backlog N: N deliveries are recorded up front in bulk (rendered by the real
  // template, same size), so the window measures the sender alone at the provider's limit.
  const backlog = args['send-backlog'] ? Number(args['send-backlog']) : 0;
  if (backlog > 0) {
    await ctx.queues.queue('weekly-status').obliterate({ force: true });
    t0 = performance.now();
    const ids = (await sql<{ id: number }[]>`select id from patient_service.patienten order by id limit ${backlog}`).map((r) => r.id);
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const rows = chunk.map((id) => {
        const e = composeWeeklyEmail(ctx, { patientId: id, vorname: 'Bench', nachname: `P${id}`, email: `bench${id}@example.org`, status: 'auf_der_Suche', optedOut: false, lastSent: null, activeSearches: 1, requestsTotal: 2, requestsSince: 2, answersTotal: 0, answersSince: 0, acceptances: 0, acceptancesSince: 0 });
        return { idempotencyKey: `weekly.${id}.${isoWeek}`, kind: 'weekly-status', toAddress: `bench${id}@example.org`, fromAddress: e.fromAddress, replyToAddress: e.replyToAddress, subject: e.subject, html: e.html, text: e.text, headers: e.headers, patientId: id };
      });
      const inserted = await ctx.database.db.insert(deliveries).values(rows).returning({ id: deliveries.id });
      const options = jobOptionsFor('email-send', ctx.queues.backoffScale);
      await ctx.queues.queue('email').addBulk(inserted.map((r) => ({ name: 'email-send', data: { deliveryId: r.id }, opts: { ...options, jobId: jobIdFor('email-send', { deliveryId: r.id })! } })));
    }
    console.log(`
backlog: ${ids.length} deliveries recorded in bulk and their email-send jobs queued in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const weekly = workerComponent(ctx, 'weekly', weeklyHandlers(ctx));
  const email = args['record-only'] ? [] : emailComponents(ctx, { stillWanted: { 'weekly-status': weeklyStillWanted(ctx) } });
  for (const c of args['fanout-only'] ? [] : backlog > 0 ? email : [weekly, ...email]) {
    await c.start();
    running.push(c);
  }
  const sendStart = performance.now();
  let firstSentAt: number | null = null;
  let lastLine = 0;
  const progress: Array<[seconds: number, sent: number]> = [];
  const target = args['send-all'] ? N : backlog > 0 ? backlog : Infinity;
  for (; !args['fanout-only']; ) {
    await new Promise((r) => setTimeout(r, 1000));
    const s = resend.stats() as { messages: number; duplicates: number };
    const elapsed = (performance.now() - sendStart) / 1000;
    if (firstSentAt === null && s.messages > 0) firstSentAt = performance.now();
    progress.push([elapsed, s.messages]);
    if (elapsed - lastLine >= 15) {
      lastLine = elapsed;
      const n = (await sql<{ n: number }[]>`select count(*)::int as n from fleet.deliveries`)[0]?.n ?? 0;
      console.log(`  t=${elapsed.toFixed(0)} s: recorded ${n}, sent ${s.messages}`);
    }
    if (s.messages >= target || (!args['send-all'] && elapsed >= SEND_SECONDS)) break;
  }
  if (args['fanout-only']) throw new Done();
  const stats = resend.stats() as Record<string, unknown> & { messages: number; duplicates: number };
  const sendSeconds = (performance.now() - (firstSentAt ?? sendStart)) / 1000;
  const batchRequests = resend.requests.filter((r) => r.path === '/emails/batch' && r.status === 200 && !r.replayed);
  const limited = resend.requests.filter((r) => r.status === 429).length;
  const rows = await sql<{ status: string; n: number }[]>`select status, count(*)::int as n from fleet.deliveries group by status order by status`;
  const rate = stats.messages / sendSeconds;
  console.log(`\nsending: ${stats.messages} emails in ${sendSeconds.toFixed(1)} s since the first = ${rate.toFixed(1)} emails/s (${((rate / 200) * 100).toFixed(1)} % of the 200/s ceiling)`);
  // Steady state: the best and the last 60 s window (the start includes the workers warming up).
  const windows = progress.flatMap(([t1, n1]) => {
    const start = progress.find(([t0]) => t0 >= t1 - 60);
    return start && t1 - start[0] >= 55 ? [(n1 - start[1]) / (t1 - start[0])] : [];
  });
  if (windows.length) {
    const best = Math.max(...windows);
    const last = windows.at(-1)!;
    console.log(`  60 s windows: best ${best.toFixed(1)} emails/s (${((best / 200) * 100).toFixed(1)} %), last ${last.toFixed(1)} emails/s (${((last / 200) * 100).toFixed(1)} %)`);
  }
  console.log(`  batch requests accepted ${batchRequests.length}, mean ${(stats.messages / Math.max(1, batchRequests.length)).toFixed(1)} emails each; 429 answers ${limited}`);
  console.log(`  duplicates at the provider: ${stats.duplicates}; deliveries by status: ${rows.map((r) => `${r.status} ${r.n}`).join(', ')}`);
} catch (err) {
  if (!(err instanceof Done)) throw err;
} finally {
  for (const c of running.reverse()) await c.stop(10_000).catch(() => {});
  await ctx.close();
  await resend.stop();
  const r = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `{${prefix}}*`, 'COUNT', 5000);
    cursor = next;
    if (keys.length) await r.del(...keys);
  } while (cursor !== '0');
  r.disconnect();
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
  await admin.end();
}
