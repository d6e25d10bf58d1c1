/**
 * Patient import end to end: N registration files in the GCS stand-in (the real
 * @google-cloud/storage client talks to it), one poll, the import workers with real
 * PostgreSQL and Redis, until every object is deleted. Prints files/s, p50/p95 latency from
 * enqueue to deletion, peak memory (RSS of this one process: stand-in, poller and workers),
 * and raw BullMQ no-op job throughput measured in the same run on the same Redis.
 *
 *   npx tsx scripts/bench/patient-import.ts [--files 1000] [--concurrency 16] [--noop 5000] [--processes 0]
 *
 * --processes N: the import workers run in N child processes (the stand-in and the poller stay
 * in this one), as `fleet start --only patient-import` would on N cores.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { runMigrations } from '../../libs/db/migrate.js';
import { postgresCpu, procCpuSeconds, redisCpu } from './cpu.js';
import { GcsStandIn } from '../../libs/testing/gcs-stand-in.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { randomSuffix } from '../../libs/testing/services.js';
import { fileBytes, objectNameFor, plainRegistration } from '../../workers/patient-import/fixtures.js';
import { BUCKET, PREFIX, startImportHarness } from '../../workers/patient-import/int-harness.js';

const { values } = parseArgs({
  options: {
    files: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '16' },
    noop: { type: 'string', default: '5000' },
    processes: { type: 'string', default: '0' },
  },
});
const FILES = Number(values.files);
const CONCURRENCY = Number(values.concurrency);
const NOOP = Number(values.noop);
const PROCESSES = Number(values.processes);
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

let peakRss = 0;
let stopChildren = () => {};
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50);
const mib = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MiB`;
const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

async function noopThroughput(prefix: string): Promise<number> {
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue('bench-noop', { connection, prefix: `{${prefix}}` });
  const t0 = performance.now();
  for (let i = 0; i < NOOP; i += 500) {
    await queue.addBulk(Array.from({ length: Math.min(500, NOOP - i) }, (_, k) => ({ name: 'noop', data: { i: i + k }, opts: { removeOnComplete: true } })));
  }
  const enqueued = performance.now();
  let done = 0;
  const finished = new Promise<void>((resolve) => {
    const worker = new Worker('bench-noop', async () => {}, { connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }), prefix: `{${prefix}}`, concurrency: CONCURRENCY });
    worker.on('completed', () => {
      if (++done === NOOP) void worker.close().then(() => resolve());
    });
  });
  await finished;
  const s = (performance.now() - enqueued) / 1000;
  console.log(`raw BullMQ no-op jobs: ${NOOP} enqueued (addBulk) in ${((enqueued - t0) / 1000).toFixed(2)} s, processed in ${s.toFixed(2)} s = ${(NOOP / s).toFixed(0)} jobs/s (concurrency ${CONCURRENCY})`);
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
  return NOOP / s;
}

async function main() {
  const dbName = `bench_patient_import_${randomSuffix()}`;
  const u = new URL(ADMIN_URL);
  u.pathname = `/${dbName}`;
  const databaseUrl = u.toString();
  await runMigrations(databaseUrl, { platform: true });
  const q = testQueuePrefix();
  const standIn = await new GcsStandIn({ recordRequests: false }).start();
  const h = await startImportHarness({
    databaseUrl,
    queuePrefix: q.prefix,
    standIn,
    env: { WORKER_CONCURRENCY: String(CONCURRENCY), DB_POOL_MAX: String(Math.max(10, CONCURRENCY + 4)) },
  });
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    console.log(`patient import benchmark: ${FILES} files, worker concurrency ${CONCURRENCY}, node ${process.version}`);
    const noop = await noopThroughput(`${q.prefix}_noop`);

    for (let i = 0; i < FILES; i++) {
      const reg = plainRegistration({ token: `${i.toString(16).padStart(8, '0')}${'b'.repeat(8)}`, vorname: 'Bench', nachname: `Person${i}`.replace(/\d/g, (d) => 'abcdefghij'[Number(d)]!) });
      standIn.putObject(BUCKET, objectNameFor(reg, PREFIX), fileBytes(reg));
    }
    const children: ChildProcess[] = [];
    if (PROCESSES > 0) {
      await Promise.all(
        Array.from({ length: PROCESSES }, () => {
          const child = spawn(process.execPath, ['--import', 'tsx', 'workers/patient-import/test-child-worker.ts', JSON.stringify(h.env), 'bench'], { stdio: ['ignore', 'pipe', 'inherit'] });
          children.push(child);
          return new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve()));
        }),
      );
    } else await h.startWorkers();
    stopChildren = () => children.forEach((c) => c.kill('SIGTERM'));
    const redisInfo = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    const childCpu = () => children.reduce((sum, c) => sum + procCpuSeconds(c.pid!), 0);
    const pg0 = postgresCpu(dbName);
    const redis0 = await redisCpu(redisInfo);
    const children0 = childCpu();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const poll = await h.poll();
    const polled = performance.now();
    const sql = h.ctx.database.sql;
    for (;;) {
      // One query per look (its CPU counts in the PostgreSQL figure below).
      const [r] = await sql`select count(*) filter (where status = 'deleted')::int as n, count(*) filter (where status = 'failed')::int as failed from fleet.patient_import_ledger`;
      if (r!.n >= FILES) break;
      if (r!.failed > 0) throw new Error(`${r!.failed} file(s) failed`);
      await new Promise((res) => setTimeout(res, 20));
    }
    const t1 = performance.now();
    const cpu = process.cpuUsage(cpu0);
    const pg1 = postgresCpu(dbName);
    const redis1 = await redisCpu(redisInfo);
    const children1 = childCpu();
    redisInfo.disconnect();
    let pgBackends = 0;
    for (const [pid, s1] of pg1.backends) pgBackends += s1 - (pg0.backends.get(pid) ?? 0);
    const perFile = (seconds: number) => `${((seconds * 1000) / FILES).toFixed(1)} ms`;
    const seconds = (t1 - t0) / 1000;
    const jobs = await h.ctx.queues.queue('patient-import').getJobs(['completed'], 0, FILES + 10);
    const enqueuedAt = new Map(jobs.map((j) => [(j.data as { ledgerId: number }).ledgerId, j.timestamp]));
    const rows = await sql`select id, (extract(epoch from deleted_at) * 1000)::float8 as deleted_ms from fleet.patient_import_ledger`;
    const latencies = rows.map((r) => Number(r.deleted_ms) - enqueuedAt.get(Number(r.id))!).filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
    const [p] = await sql`select count(*)::int as n from patient_service.patienten`;
    console.log(`poll: listed ${poll.listed} objects in ${poll.pages} page(s), recorded and enqueued ${poll.recorded} in ${((polled - t0) / 1000).toFixed(2)} s`);
    console.log(`imported ${p!.n} patients, ${FILES} objects deleted in ${seconds.toFixed(2)} s = ${(FILES / seconds).toFixed(1)} files/s`);
    console.log(`latency enqueue -> deletion: p50 ${pct(latencies, 50).toFixed(0)} ms, p95 ${pct(latencies, 95).toFixed(0)} ms, max ${latencies.at(-1)!.toFixed(0)} ms (${latencies.length} files)`);
    console.log(`worker processes: ${PROCESSES || 'none (workers in this process)'}`);
    console.log(`CPU of this process (stand-in + poller${PROCESSES ? '' : ' + workers'}): ${((cpu.user + cpu.system) / 1000 / FILES).toFixed(1)} ms per file; machine load average ${(await import('node:os')).loadavg()[0]!.toFixed(1)} on ${(await import('node:os')).cpus().length} cores`);
    if (PROCESSES) console.log(`CPU of the ${PROCESSES} worker processes: ${perFile(children1 - children0)} per file`);
    console.log(`CPU of PostgreSQL: ${perFile(pgBackends)} per file in the ${pg1.backends.size} backends of the benchmark database, ${perFile(pg1.background - pg0.background)} per file in its background processes (WAL writer, checkpointer, ...: shared with anything else running)`);
    console.log(`CPU of Redis: ${perFile(redis1 - redis0)} per file (the whole server: shared with anything else running)`);
    console.log(`CPU of everything measured: ${perFile((cpu.user + cpu.system) / 1e6 + (children1 - children0) + pgBackends + (pg1.background - pg0.background) + (redis1 - redis0))} per file (${cpus().length} cores: 100 files/s leaves at most ${(cpus().length * 10).toFixed(0)} ms per file)`);
    console.log(`peak memory (RSS of this process${PROCESSES ? `; the ${PROCESSES} worker processes are not included` : ''}): ${mib(peakRss)}`);
    console.log(`import vs raw no-op throughput: ${((FILES / seconds / noop) * 100).toFixed(1)} %`);
    if (standIn.listObjects(BUCKET, PREFIX).length) throw new Error('objects left in the bucket');
  } finally {
    clearInterval(sampler);
    stopChildren();
    await h.close({ keepStandIn: true });
    await standIn.close();
    await q.cleanup();
    await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
    await admin.end({ timeout: 1 });
  }
}

await main();
process.exit(0);
