/**
 * Latency of the HTTP app's probe endpoints on this machine: /health, /ready (PostgreSQL
 * select 1 + Redis PING) and /metrics (queue depth read from Redis for every queue and
 * dead-letter queue) with jobs waiting. Prints figures; asserts nothing.
 *
 *   npx tsx scripts/bench/http-endpoints.ts [--jobs 10000] [--requests 300]
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { deleteQueueKeys } from '../../libs/testing/redis.js';
import { dropDatabase } from '../../libs/testing/services.js';
import { httpComponent } from '../../apps/http/component.js';
import { loadConfig } from '../../libs/config/index.js';
import { runMigrations } from '../../libs/db/migrate.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext } from '../../libs/runtime/index.js';

const { values: args } = parseArgs({ options: { jobs: { type: 'string', default: '10000' }, requests: { type: 'string', default: '300' } } });
const JOBS = Number(args.jobs);
const REQUESTS = Number(args.requests);
const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const suffix = randomBytes(4).toString('hex');
const dbName = `fleet_bench_http_${suffix}`;
const prefix = `bench_${suffix}`;
const dbUrl = new URL(ADMIN_URL);
dbUrl.pathname = `/${dbName}`;

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function measure(url: string, n: number) {
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const res = await fetch(url);
    const body = await res.text();
    times.push(performance.now() - t0);
    bytes = body.length;
    if (res.status !== 200) throw new Error(`${url} answered ${res.status}: ${body.slice(0, 200)}`);
  }
  times.sort((a, b) => a - b);
  return { p50: pct(times, 50), p95: pct(times, 95), p99: pct(times, 99), bytes };
}

async function main() {
  await runMigrations(dbUrl.toString(), { platform: true });
  const config = loadConfig({ DATABASE_URL: dbUrl.toString(), REDIS_URL, QUEUE_PREFIX: prefix, HTTP_PORT: '0', LOG_LEVEL: 'silent' });
  const ctx = openContext(config, silentLogger());
  const http = httpComponent(ctx);
  try {
    await http.start();
    const base = `http://127.0.0.1:${http.address()!.port}`;
    const queue = ctx.queues.queue('weekly-status');
    for (let i = 0; i < JOBS; i += 1000) {
      await queue.addBulk(Array.from({ length: Math.min(1000, JOBS - i) }, (_, k) => ({ name: 'weekly-status', data: { patientId: i + k + 1, isoWeek: '2026-W48' } })));
    }
    console.log(`node ${process.version}, ${JOBS} jobs waiting in weekly-status, ${REQUESTS} sequential requests per endpoint`);
    for (const path of ['/health', '/ready', '/metrics']) {
      await measure(`${base}${path}`, 20); // warm up
      const r = await measure(`${base}${path}`, REQUESTS);
      console.log(`${path.padEnd(9)} p50 ${r.p50.toFixed(2)} ms  p95 ${r.p95.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  body ${r.bytes} bytes`);
    }
  } finally {
    await http.stop(5_000);
    await ctx.close();
    await dropDatabase(dbName, ADMIN_URL);
    await deleteQueueKeys(prefix, REDIS_URL);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
