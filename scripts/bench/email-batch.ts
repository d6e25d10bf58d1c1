/**
 * Email sending through the batch endpoint: N pending deliveries, one `email-send` job each
 * (as the weekly fan-out produces them), sent by the email workers (real BullMQ, PostgreSQL,
 * the real `resend` SDK) to the Resend stand-in limited to 2 requests/s like the real
 * service. Prints emails/s, requests/s, % of the ceiling (rate x 100 emails/s), 429s,
 * duplicates and peak memory. Asserts nothing. Own database and queue prefix, dropped at the end.
 *
 *   npx tsx scripts/bench/email-batch.ts [--deliveries 10000] [--rate 2] [--workers 1]
 *   npx tsx scripts/bench/email-batch.ts --deliveries 100000
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { deleteQueueKeys } from '../../libs/testing/redis.js';
import { dropDatabase } from '../../libs/testing/services.js';
import { loadConfig } from '../../libs/config/index.js';
import { runMigrations } from '../../libs/db/migrate.js';
import { createLogger, silentLogger } from '../../libs/log/index.js';
import { catalog, jobIdFor, jobOptionsFor } from '../../libs/queues/index.js';
import { openContext, type Component } from '../../libs/runtime/index.js';
import { emailComponents } from '../../workers/email/index.js';

const { values: args } = parseArgs({
  options: {
    deliveries: { type: 'string', default: '10000' },
    rate: { type: 'string', default: '2' },
    workers: { type: 'string', default: '1' },
  },
});
const N = Number(args.deliveries);
const RATE = Number(args.rate);
const WORKERS = Number(args.workers);
if (!Number.isInteger(N) || N < 1) throw new Error(`--deliveries: expected a whole number >= 1 (got ${args.deliveries})`);
if (!(RATE > 0)) throw new Error(`--rate: expected requests per second > 0 (got ${args.rate})`);
if (!Number.isInteger(WORKERS) || WORKERS < 1) throw new Error(`--workers: expected a whole number >= 1 (got ${args.workers})`);

const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const suffix = randomBytes(4).toString('hex');
const dbName = `fleet_bench_email_${suffix}`;
const prefix = `bench_email_${suffix}`;
const dbUrl = new URL(ADMIN_URL);
dbUrl.pathname = `/${dbName}`;
const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MB`;

// The stand-in runs in a process of its own (like the real service, it is not in ours), so
// the figures below are the fleet process' own.
const standIn = spawn(process.execPath, ['--import', 'tsx', 'scripts/resend-stand-in.ts', '--port', '0', '--rate', String(RATE)], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
process.on('exit', () => standIn.kill('SIGTERM'));
const standInUrl = await new Promise<string>((resolve, reject) => {
  standIn.once('error', reject);
  standIn.stdout.once('data', (chunk: Buffer) => resolve((JSON.parse(chunk.toString().split('\n')[0]!) as { url: string }).url));
});
interface StandInStats {
  byStatus: Record<string, number>;
  replayed: number;
  messages: number;
  recipients: number;
  duplicates: number;
  acceptedAt: number[];
}
const standInStats = async () => (await (await fetch(`${standInUrl}/_stand-in/stats?timeline=1`)).json()) as StandInStats;
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
  UNSUBSCRIBE_SECRET: 'bench-unsubscribe-secret-0123456789abcdef',
  RESEND_BASE_URL: standInUrl,
  MAIL_RATE_PER_SECOND: String(RATE),
});
const ctx = openContext(config, process.env.BENCH_LOG ? createLogger({ level: 'debug', pretty: 'false' }) : silentLogger());
const sql = ctx.database.sql;
const running: Component[] = [];
let peakRss = 0;
let peakHeap = 0;
const sampler = setInterval(() => {
  const m = process.memoryUsage();
  peakRss = Math.max(peakRss, m.rss);
  peakHeap = Math.max(peakHeap, m.heapUsed);
}, 250);

try {
  let t0 = performance.now();
  await sql`insert into fleet.deliveries (idempotency_key, kind, to_address, from_address, subject, html, text, headers, created_at)
            select 'bench.' || g, 'weekly-status', 'patient' || g || '@example.org', 'Curavani <noreply@curavani.com>',
                   'Ihre Therapieplatzsuche: Wochenübersicht',
                   '<!doctype html><html><body><p>Hallo,</p><p>in dieser Woche haben wir ' || (g % 7) || ' Anfragen an Therapeutinnen und Therapeuten gesendet.</p>' || repeat('<p>Wir bleiben dran.</p>', 20) || '</body></html>',
                   'Hallo, in dieser Woche haben wir ' || (g % 7) || ' Anfragen gesendet. ' || repeat('Wir bleiben dran. ', 20),
                   jsonb_build_object('List-Unsubscribe', '<https://curavani.test/u/' || g || '>', 'List-Unsubscribe-Post', 'List-Unsubscribe=One-Click'),
                   now() + g * interval '1 microsecond'
              from generate_series(1, ${N}) g`;
  const ids = (await sql<{ id: string }[]>`select id from fleet.deliveries order by created_at`).map((r) => r.id);
  const queue = ctx.queues.queue('email');
  const opts = jobOptionsFor('email-send', 1);
  for (let i = 0; i < ids.length; i += 1000) {
    await queue.addBulk(ids.slice(i, i + 1000).map((deliveryId) => ({ name: 'email-send', data: { deliveryId }, opts: { ...opts, jobId: jobIdFor('email-send', { deliveryId })! } })));
  }
  console.log(`prepared ${N} pending deliveries and ${N} email-send jobs in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  global.gc?.();
  const base = process.memoryUsage();
  peakRss = base.rss;
  peakHeap = base.heapUsed;
  t0 = performance.now();
  for (let w = 0; w < WORKERS; w++) {
    for (const c of emailComponents(ctx)) {
      if (c.name === 'email-sweep' && w > 0) continue;
      await c.start();
      running.push(c);
    }
  }
  let last = -1;
  for (;;) {
    const [row] = await sql<{ done: number }[]>`select count(*)::int as done from fleet.deliveries where status in ('sent', 'failed', 'dropped')`;
    const done = row?.done ?? 0;
    if (done >= N) break;
    const s = (performance.now() - t0) / 1000;
    if (Math.floor(s / 10) !== last) {
      last = Math.floor(s / 10);
      process.stdout.write(`  ${s.toFixed(0)} s: ${done} sent, ${(done / s).toFixed(1)} emails/s, rss ${mb(process.memoryUsage().rss)}\n`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const seconds = (performance.now() - t0) / 1000;
  const counts = await queue.getJobCounts('completed', 'failed', 'waiting', 'active', 'delayed');
  await new Promise((r) => setTimeout(r, 500));
  const stats = await standInStats();
  const accepted = stats.acceptedAt.map((at) => ({ at }));
  const window = accepted.length > 1 ? (accepted.at(-1)!.at - accepted[0]!.at) / 1000 : seconds;
  const rows = await sql<{ status: string; n: number }[]>`select status, count(*)::int as n from fleet.deliveries group by status order by status`;
  const ceiling = RATE * 100;
  console.log(`\n${N} deliveries, stand-in limited to ${RATE} requests/s (ceiling ${ceiling} emails/s), ${WORKERS} worker binding(s) x concurrency ${catalog['email-send'].concurrency ?? config.queues.concurrency}`);
  console.log(`  end to end (workers start -> last row sent): ${seconds.toFixed(1)} s = ${(N / seconds).toFixed(1)} emails/s = ${((N / seconds / ceiling) * 100).toFixed(1)} % of the ceiling`);
  console.log(`  provider window (first -> last accepted request): ${window.toFixed(1)} s, ${accepted.length} requests = ${(accepted.length / Math.max(window, 0.001)).toFixed(2)} requests/s, mean ${(stats.messages / Math.max(1, accepted.length)).toFixed(1)} emails/request`);
  const gaps = accepted.slice(1).map((r, i) => r.at - accepted[i]!.at).sort((a, b) => a - b);
  const pct = (p: number) => gaps[Math.min(gaps.length - 1, Math.floor(p * gaps.length))] ?? 0;
  console.log(`  gaps between accepted requests (ms): min ${pct(0)}, median ${pct(0.5)}, p90 ${pct(0.9)}, max ${pct(1)}`);
  console.log(`  requests by status: ${JSON.stringify(stats.byStatus)}; replayed (idempotent) ${stats.replayed}`);
  console.log(`  duplicates at the provider: ${stats.duplicates} (messages ${stats.messages}, distinct recipients ${stats.recipients})`);
  console.log(`  deliveries: ${rows.map((r) => `${r.status} ${r.n}`).join(', ')}; jobs: ${JSON.stringify(counts)}`);
  console.log(`  memory: rss ${mb(base.rss)} -> peak ${mb(peakRss)}; heap ${mb(base.heapUsed)} -> peak ${mb(peakHeap)}`);
} finally {
  clearInterval(sampler);
  for (const c of running.reverse()) await c.stop(5_000).catch(() => {});
  await ctx.close();
  standIn.kill('SIGTERM');
  await dropDatabase(dbName, ADMIN_URL);
  await deleteQueueKeys(prefix, REDIS_URL);
}
