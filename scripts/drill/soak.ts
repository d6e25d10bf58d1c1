/**
 * Soak drill: one fleet process with all roles under a steady trickle for about an hour, sampled
 * every 30 s into a CSV, to find slow leaks (memory, handles, connections, Redis keys, table rows,
 * files). Starts the fleet itself (`apps/cli/main.ts start`, logs in <dir>/logs/fleet.log) and a
 * Kafka mock broker (libs/testing/kafka-mock.ts; `--kafka off`: none, events stay in the outbox),
 * then for `--minutes`:
 *   - a registration file into the bucket folder every 1-3 s (every 20th invalid: a 4-digit plz;
 *     every 4th valid one a voucher booking, status auf_der_Suche),
 *   - every minute a changed scraper file for 2 of 5 postcodes (60 therapists each, 3 new phone
 *     numbers per file; the first minute all 5 new),
 *   - GET /metrics every 15 s and /ready every 10 s (as Prometheus and a readiness probe would),
 *     /ops, /imports, /therapist-imports, /daily, /dashboard and its queue API every 2 minutes,
 *   - at `--weekly-at` minutes: an active search for every imported voucher patient without one,
 *     then `fleet weekly run`,
 *   - at `--redis-restart-at` / `--pg-restart-at` minutes: the shell command given with
 *     `--redis-restart` / `--pg-restart` (it should stop the service, wait, and start it again).
 * With `--heap-snapshots-at 15,55,END` the fleet runs with `--heapsnapshot-signal=SIGUSR2
 * --trace-gc`: at those minutes (END: after the drain) it writes <dir>/heap/heap-<at>.heapsnapshot
 * (each one after a full GC; compare two with scripts/drill/heap-diff.ts), its GC lines go to
 * <dir>/heap/gc.log instead of the fleet log, and every sample has the heap after the smallest
 * full GC (Mark-Compact) since the one before (`heap_after_full_gc_mb`, empty if none ran).
 * Then it waits for the fleet to finish what it has (up to 5 minutes), checks the totals
 * (scripts/drill/multi-check.ts, the Kafka messages against the outbox), counts the log's warn and
 * error lines, stops the fleet (SIGTERM) and prints start, end and slope per hour of every column
 * after the warm-up (also written to <dir>/summary.txt).
 *
 *   DATABASE_URL=... REDIS_URL=... QUEUE_PREFIX=... HTTP_PORT=... npx tsx scripts/drill/soak.ts \
 *     [--dir /tmp/fleet-soak] [--minutes 55] [--warmup 10] [--weekly-at 12,45] \
 *     [--redis-restart-at 22 --redis-restart 'redis-cli -p 6395 shutdown; sleep 15; redis-server ...'] \
 *     [--pg-restart-at 38 --pg-restart 'pg_ctl -D ... stop -m fast; sleep 15; pg_ctl -D ... start'] \
 *     [--heap-snapshots-at 15,55,END]
 *   npx tsx scripts/drill/soak.ts --summarize <dir>/samples.csv [--warmup 10]   # slopes of a CSV again
 *
 * DATABASE_URL, REDIS_URL and QUEUE_PREFIX must be your own and fresh (the totals count every
 * row and job), and <dir> empty or from an earlier soak (its folders are emptied): the drill drops
 * files into folders the fleet deletes from.
 * The fleet runs with POLL_CRON every 20 s unless set; every other setting is the default or
 * taken from the environment.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, openSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs, promisify } from 'node:util';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { queueNames } from '../../libs/queues/catalog.js';
import { collectMessages, startKafkaMock, type KafkaMock } from '../../libs/testing/kafka-mock.js';
import { fileBytes, objectNameFor, plainRegistration, registrationToken } from '../../workers/patient-import/fixtures.js';
import { scraperFile } from '../../workers/therapist-import/fixtures.js';
import { atomicWrite, drillTherapist, namePart } from './feed-names.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: '/tmp/fleet-soak' },
    minutes: { type: 'string', default: '55' },
    warmup: { type: 'string', default: '10' },
    'sample-s': { type: 'string', default: '30' },
    'invalid-every': { type: 'string', default: '20' },
    postcodes: { type: 'string', default: '5' },
    'per-file': { type: 'string', default: '60' },
    'weekly-at': { type: 'string', default: '12,45' },
    'redis-restart-at': { type: 'string' },
    'redis-restart': { type: 'string' },
    'pg-restart-at': { type: 'string' },
    'pg-restart': { type: 'string' },
    kafka: { type: 'string', default: 'mock' },
    'heap-snapshots-at': { type: 'string' },
    summarize: { type: 'string' },
  },
});

const warmupMin = Number(values.warmup);

// ---------------------------------------------------------------------------------------------
// Slopes of a CSV: start and end (medians of the first and last 5 samples after the warm-up),
// least-squares slope per hour after the warm-up, and over its second half (still growing?).

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}

function slopePerHour(points: Array<[number, number]>): number {
  if (points.length < 3) return NaN;
  const n = points.length;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den ? (num / den) * 60 : NaN; // x in minutes
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return '-';
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 1 ? x.toFixed(1) : x.toFixed(3);
}

function summarize(csv: string): string {
  const [head, ...rows] = csv.trim().split('\n');
  const cols = head!.split(',');
  const data = rows.map((r) => r.split(','));
  const tCol = cols.indexOf('t_min');
  const after = data.filter((r) => Number(r[tCol]) >= warmupMin);
  const lastT = Number(data.at(-1)?.[tCol] ?? 0);
  const half = warmupMin + (lastT - warmupMin) / 2;
  const out = [`after the warm-up (${warmupMin} min to ${fmt(lastT)} min, ${after.length} samples): start and end are medians of the first and last 5 samples`];
  out.push(['column', 'start', 'end', 'slope/h', 'slope/h 2nd half', 'min', 'max'].join('\t'));
  for (const [i, c] of cols.entries()) {
    if (c === 't_min' || c === 'time' || c === 'note') continue;
    const pts = after.map((r) => [Number(r[tCol]), r[i] === '' ? NaN : Number(r[i])] as [number, number]).filter(([, y]) => Number.isFinite(y));
    if (!pts.length) continue;
    const ys = pts.map(([, y]) => y);
    out.push(
      [
        c,
        fmt(median(ys.slice(0, 5))),
        fmt(median(ys.slice(-5))),
        fmt(slopePerHour(pts)),
        fmt(slopePerHour(pts.filter(([x]) => x >= half))),
        fmt(Math.min(...ys)),
        fmt(Math.max(...ys)),
      ].join('\t'),
    );
  }
  return out.join('\n');
}

if (values.summarize) {
  console.log(summarize(await readFile(values.summarize, 'utf8')));
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// Setup.

for (const v of ['DATABASE_URL', 'REDIS_URL', 'QUEUE_PREFIX', 'HTTP_PORT']) {
  if (!process.env[v]) {
    console.error(`soak: set ${v} (your own: the drill drops files into folders the fleet deletes from)`);
    process.exit(2);
  }
}
const root = path.resolve(import.meta.dirname, '../..');
const dir = path.resolve(values.dir!);
const d = {
  logs: path.join(dir, 'logs'),
  bucket: path.join(dir, 'bucket'),
  scraper: path.join(dir, 'scraper'),
  backup: path.join(dir, 'backup'),
  failed: path.join(dir, 'failed'),
  outbox: path.join(dir, 'outbox'),
  heap: path.join(dir, 'heap'),
};
for (const sub of Object.values(d)) await rm(sub, { recursive: true, force: true });
for (const sub of Object.values(d)) await mkdir(sub, { recursive: true });
const csvFile = path.join(dir, 'samples.csv');
const port = Number(process.env.HTTP_PORT);
const base = `http://127.0.0.1:${port}`;
const prefix = `{${process.env.QUEUE_PREFIX}}`;
const minutes = Number(values.minutes);
const t0 = Date.now();
const tMin = () => (Date.now() - t0) / 60_000;
const say = (msg: string) => console.log(`[soak ${tMin().toFixed(1).padStart(5)} min] ${msg}`);
const notes: string[] = [];

const sql = postgres(process.env.DATABASE_URL!, {
  max: 1,
  onnotice: () => {},
  connect_timeout: 5,
  connection: { application_name: 'soak-sampler' },
});
const redis = new Redis(process.env.REDIS_URL!, { maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: () => 1000, lazyConnect: true });
redis.on('error', () => {});
await redis.connect().catch(() => {});

let kafka: KafkaMock | null = null;
if (values.kafka === 'mock') {
  kafka = await startKafkaMock({});
  say(`kafka mock at ${kafka.brokers.join(',')}`);
}

const fleetEnv: NodeJS.ProcessEnv = {
  ...process.env,
  LOG_PRETTY: 'false',
  FLEET_INSTANCE: process.env.FLEET_INSTANCE ?? 'soak',
  POLL_CRON: process.env.POLL_CRON ?? '*/20 * * * * *',
  LOCAL_BUCKET_DIR: d.bucket,
  SCRAPER_DROP_DIR: d.scraper,
  BACKUP_DIR: d.backup,
  FAILED_DIR: d.failed,
  MAIL_OUTBOX_DIR: d.outbox,
  KAFKA_BROKERS: kafka ? kafka.brokers.join(',') : '',
};
const logFile = path.join(d.logs, 'fleet.log');
const snapshotsAt = (values['heap-snapshots-at'] ?? '').split(',').filter(Boolean);
const heapWatch = snapshotsAt.length > 0;
const fleet: ChildProcess = spawn(
  process.execPath,
  [...(heapWatch ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${d.heap}`, '--trace-gc'] : []), '--import', 'tsx', 'apps/cli/main.ts', 'start'],
  { cwd: root, env: fleetEnv, stdio: ['ignore', heapWatch ? 'pipe' : openSync(logFile, 'a'), openSync(logFile, 'a')] },
);
/**
 * Heap after each full GC of the main thread (V8's `--trace-gc` Mark-Compact lines, MiB) since the
 * last sample. tsx's loader runs in a thread of its own with a small heap: the main thread is the
 * isolate with the largest heap seen.
 */
const fullGcs: number[] = [];
if (heapWatch) {
  const log = createWriteStream(logFile, { flags: 'a' });
  const gcLog = createWriteStream(path.join(d.heap, 'gc.log'), { flags: 'a' });
  const largest = new Map<string, number>();
  createInterface({ input: fleet.stdout! }).on('line', (line) => {
    if (!line.startsWith('[')) return void log.write(line + '\n');
    const m = line.match(/^\[\d+:(\w+)\].* Mark-Compact (?:\(reduce\) )?([\d.]+) \([\d.]+\) -> ([\d.]+) \(/);
    if (!m) return; // scavenges: too many, and they say nothing of the old space
    gcLog.write(`${new Date().toISOString()} ${line}\n`);
    largest.set(m[1]!, Math.max(largest.get(m[1]!) ?? 0, Number(m[2])));
    if (Math.max(...largest.values()) === largest.get(m[1]!)) fullGcs.push(Number(m[3]));
  });
}
let fleetExit: number | null = null;
fleet.on('exit', (code, signal) => {
  fleetExit = code ?? 128;
  say(`fleet exited (${code ?? signal})`);
});
const pid = fleet.pid!;
say(`fleet pid ${pid}, log ${logFile}`);

async function get(p: string, timeoutMs = 10_000): Promise<{ status: number; text: string }> {
  try {
    const r = await fetch(base + p, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: r.status, text: await r.text() };
  } catch {
    return { status: 0, text: '' };
  }
}
while ((await get('/ready')).status !== 200) {
  if (fleetExit !== null) throw new Error(`the fleet exited at start (${fleetExit}): see ${logFile}`);
  await new Promise((r) => setTimeout(r, 500));
}
say('fleet ready');
const tReady = tMin();

// ---------------------------------------------------------------------------------------------
// Feeders.

const invalidEvery = Number(values['invalid-every']);
const totals = { registrations: 0, invalid: 0, vouchers: 0, scraperFiles: 0, changedLines: 0, weekly: [] as string[] };
let feeding = true;
const timers: NodeJS.Timeout[] = [];

async function dropRegistration(): Promise<void> {
  const i = totals.registrations;
  const token = registrationToken();
  const bad = invalidEvery > 0 && i % invalidEvery === invalidEvery - 1;
  const voucher = !bad && i % 4 === 1;
  const reg = plainRegistration({
    vorname: `Vor${namePart(i)}`,
    nachname: `Nach${namePart(i * 7 + 3)}`,
    email: `drill.${token}@example.org`,
    token,
    voucher,
    ...(bad ? { patch: (r) => ((r.patient_data as Record<string, unknown>).plz = '5206') } : {}),
  });
  await atomicWrite(path.join(d.bucket, objectNameFor(reg)), fileBytes(reg));
  totals.registrations++;
  if (bad) totals.invalid++;
  if (voucher) totals.vouchers++;
}
function registrationLoop(): void {
  if (!feeding) return;
  timers.push(
    setTimeout(
      () => void dropRegistration().then(registrationLoop, (e: unknown) => { say(`registration drop failed: ${String(e)}`); registrationLoop(); }),
      1000 + Math.random() * 2000,
    ),
  );
}

const postcodes = Array.from({ length: Number(values.postcodes) }, (_, f) => String(10000 + f * 223).padStart(5, '0'));
const perFile = Number(values['per-file']);
/** Phone version of each therapist line per postcode: a changed file bumps 3 of them. */
const phoneVersion = new Map(postcodes.map((p) => [p, new Array<number>(perFile).fill(0)]));
let round = 0;
async function dropScraperRound(): Promise<void> {
  const r = round++;
  const chosen = r === 0 ? postcodes : [postcodes[(2 * r) % postcodes.length]!, postcodes[(2 * r + 1) % postcodes.length]!];
  for (const plz of chosen) {
    const f = postcodes.indexOf(plz);
    const versions = phoneVersion.get(plz)!;
    const bumped = new Set<number>();
    if (r > 0) for (let k = 0; k < 3; k++) bumped.add((r * 7 + k * 20) % perFile);
    for (const j of bumped) versions[j]!++;
    const lines = Array.from({ length: perFile }, (_, j) =>
      drillTherapist(f, j, plz, { status: r === 0 ? 'new' : bumped.has(j) ? 'modified' : 'unchanged', phone: `0${plz} ${j}${versions[j] ? `-${versions[j]}` : ''}` }),
    );
    const day = new Date(Date.UTC(2025, 6, 2) + r * 60_000).toISOString().replace('Z', '');
    await atomicWrite(path.join(d.scraper, `${plz}.json`), scraperFile(lines, { scrape_date: day, postcode_area: `${plz.slice(0, 2)}XXX` }));
    totals.scraperFiles++;
    totals.changedLines += [...bumped].filter((j) => j % 33 !== 5).length;
  }
}

// HTTP: as Prometheus, a readiness probe and an operator now and then.
const httpCounts = new Map<string, number>();
let lastMetrics = '';
function count(p: string, status: number): void {
  const k = `${p} ${status}`;
  httpCounts.set(k, (httpCounts.get(k) ?? 0) + 1);
}
const scrape = async (p: string) => {
  const r = await get(p);
  count(p, r.status);
  if (p === '/metrics' && r.status === 200) lastMetrics = r.text;
};
const operatorPages = ['/ops', '/imports', '/therapist-imports', '/daily', '/dashboard', '/dashboard/api/queues'];

// ---------------------------------------------------------------------------------------------
// Sampling.

function metric(text: string, name: string): number {
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}
async function procStats(): Promise<{ rss: number; threads: number; fds: number; cpuTicks: number }> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
    return {
      rss: Number(status.match(/VmRSS:\s+(\d+)/)![1]) / 1024,
      threads: Number(status.match(/Threads:\s+(\d+)/)![1]),
      fds: (await readdir(`/proc/${pid}/fd`)).length,
      cpuTicks: Number(stat[11]) + Number(stat[12]),
    };
  } catch {
    return { rss: NaN, threads: NaN, fds: NaN, cpuTicks: NaN };
  }
}
async function countFiles(folder: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(folder, { withFileTypes: true, recursive: true }).catch(() => [])) if (e.isFile()) n++;
  return n;
}
async function withTimeout<T>(p: Promise<T>, fallback: T, ms = 5000): Promise<T> {
  return Promise.race([p.catch(() => fallback), new Promise<T>((r) => setTimeout(() => r(fallback), ms))]);
}

const queues = queueNames();
const tables = ['outbox', 'deliveries', 'patient_import_ledger', 'patient_consents', 'therapist_import_files', 'therapist_import_runs', 'therapist_scraped', 'therapist_external_ids', 'audit_log'];
const tableShort: Record<string, string> = {
  outbox: 'outbox', deliveries: 'deliveries', patient_import_ledger: 'ledger', patient_consents: 'consents',
  therapist_import_files: 'tfiles', therapist_import_runs: 'truns', therapist_scraped: 'tscraped', therapist_external_ids: 'textids', audit_log: 'audit',
};
let lastCpu: { ticks: number; at: number } | null = null;
let header: string[] | null = null;

async function sample(): Promise<void> {
  const row: Record<string, string | number> = { time: new Date().toISOString(), t_min: tMin().toFixed(2) };
  const ps = await procStats();
  row.rss_mb = ps.rss;
  row.threads = ps.threads;
  row.fds = ps.fds;
  const now = Date.now();
  row.cpu_pct = lastCpu && Number.isFinite(ps.cpuTicks) ? ((ps.cpuTicks - lastCpu.ticks) / 100 / ((now - lastCpu.at) / 1000)) * 100 : NaN;
  if (Number.isFinite(ps.cpuTicks)) lastCpu = { ticks: ps.cpuTicks, at: now };
  const m = lastMetrics;
  row.heap_used_mb = metric(m, 'nodejs_heap_size_used_bytes') / 2 ** 20;
  row.heap_total_mb = metric(m, 'nodejs_heap_size_total_bytes') / 2 ** 20;
  row.external_mb = metric(m, 'nodejs_external_memory_bytes') / 2 ** 20;
  row.lag_p99_ms = metric(m, 'nodejs_eventloop_lag_p99_seconds') * 1000;
  row.lag_mean_ms = metric(m, 'nodejs_eventloop_lag_mean_seconds') * 1000;
  row.handles = metric(m, 'nodejs_active_handles_total');
  row.resources = metric(m, 'nodejs_active_resources_total');
  if (heapWatch) {
    const gcs = fullGcs.splice(0);
    row.full_gcs = gcs.length;
    row.heap_after_full_gc_mb = gcs.length ? Math.min(...gcs) : NaN;
  }

  const info = await withTimeout(redis.info('memory'), '');
  row.redis_used_mb = Number(info.match(/used_memory:(\d+)/)?.[1] ?? NaN) / 2 ** 20;
  row.redis_keys = await withTimeout(redis.dbsize(), NaN);
  let events = NaN;
  let dlq = NaN;
  for (const q of queues) {
    const [c, f] = await withTimeout<[number, number]>(Promise.all([redis.zcard(`${prefix}:${q}:completed`), redis.zcard(`${prefix}:${q}:failed`)]), [NaN, NaN]);
    row[`${q}_done`] = c;
    row[`${q}_failed`] = f;
    const [e, l] = await withTimeout<[number, number]>(Promise.all([redis.xlen(`${prefix}:${q}:events`), redis.zcard(`${prefix}:${q}-dlq:failed`)]), [NaN, NaN]);
    events = (Number.isNaN(events) ? 0 : events) + e;
    const w = await withTimeout<[number, number]>(Promise.all([redis.llen(`${prefix}:${q}-dlq:wait`), redis.zcard(`${prefix}:${q}-dlq:prioritized`)]), [NaN, NaN]);
    dlq = (Number.isNaN(dlq) ? 0 : dlq) + l + w[0] + w[1];
  }
  row.redis_event_entries = events;
  row.dlq_jobs = dlq;

  const pg = await withTimeout(
    (async () => {
      const [conns] = await sql`select count(*)::int n from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`;
      const sizes = await sql`select c.relname, pg_total_relation_size(c.oid)::bigint bytes from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'fleet' and c.relkind = 'r'`;
      const counts: Record<string, number> = {};
      for (const t of tables) counts[t] = (await sql`select count(*)::int n from ${sql('fleet')}.${sql(t)}`)[0]!.n as number;
      const [led] = await sql`select count(*) filter (where status = 'deleted')::int imported, count(*) filter (where status = 'failed')::int failed from fleet.patient_import_ledger`;
      const [del] = await sql`select count(*) filter (where status = 'sent')::int sent, count(*) filter (where status in ('pending','sending'))::int open from fleet.deliveries`;
      const [ob] = await sql`select count(*) filter (where published_at is null and parked_at is null)::int unpublished from fleet.outbox`;
      return { conns: conns!.n as number, sizes, counts, led: led!, del: del!, ob: ob! };
    })(),
    null,
    10_000,
  );
  row.pg_conns = pg?.conns ?? NaN;
  for (const t of tables) row[`rows_${tableShort[t]}`] = pg?.counts[t] ?? NaN;
  row.fleet_tables_mb = pg ? pg.sizes.reduce((a, r) => a + Number(r.bytes), 0) / 2 ** 20 : NaN;
  row.imported = pg?.led.imported ?? NaN;
  row.failed_imports = pg?.led.failed ?? NaN;
  row.emails_sent = pg?.del.sent ?? NaN;
  row.emails_open = pg?.del.open ?? NaN;
  row.events_unpublished = pg?.ob.unpublished ?? NaN;
  row.dropped = totals.registrations;
  row.files_bucket = await countFiles(path.join(d.bucket, 'registrations'));
  row.files_bucket_meta = await countFiles(path.join(d.bucket, '.bucket'));
  row.files_backup = await countFiles(d.backup);
  row.files_failed = await countFiles(d.failed);
  row.files_outbox = await countFiles(d.outbox);
  row.note = notes.splice(0).join(' ');

  const cols = Object.keys(row);
  if (!header) {
    header = cols;
    await writeFile(csvFile, header.join(',') + '\n');
  }
  const cell = (v: string | number | undefined) => (typeof v === 'number' ? (Number.isFinite(v) ? String(Math.round(v * 100) / 100) : '') : (v ?? ''));
  await appendFile(csvFile, header.map((c) => cell(row[c])).join(',') + '\n');
}

// ---------------------------------------------------------------------------------------------
// Weekly runs and restarts.

const run = promisify(execFile);
async function weeklyRun(): Promise<void> {
  const seeded = await sql`insert into matching_service.platzsuche (patient_id, status)
    select p.id, 'aktiv' from patient_service.patienten p
    where p.status = 'auf_der_Suche' and not exists (select 1 from matching_service.platzsuche s where s.patient_id = p.id)
    returning id`;
  const r = await run(process.execPath, ['--import', 'tsx', 'apps/cli/main.ts', 'weekly', 'run'], { cwd: root, env: fleetEnv }).catch(
    (e: { stdout?: string; stderr?: string; code?: number }) => ({ stdout: `exit ${e.code}: ${e.stdout ?? ''}${e.stderr ?? ''}`, stderr: '' }),
  );
  const line = `searches added ${seeded.length}; fleet weekly run: ${r.stdout.trim().replace(/\n/g, ' | ')}`;
  totals.weekly.push(line);
  notes.push('weekly-run');
  say(line);
}
async function restart(what: string, cmd: string): Promise<void> {
  notes.push(`${what}-restart`);
  const started = Date.now();
  say(`${what} restart: ${cmd}`);
  await run('bash', ['-c', cmd]).catch((e: Error) => say(`${what} restart command failed: ${e.message}`));
  let readyAfter = NaN;
  for (const until = Date.now() + 120_000; Date.now() < until; ) {
    if ((await get('/ready', 3000)).status === 200) {
      readyAfter = (Date.now() - started) / 1000;
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const line = `${what} restart done; /ready 200 ${fmt(readyAfter)} s after the command started`;
  totals.weekly.push(line);
  say(line);
}

/**
 * A heap snapshot (SIGUSR2; V8 runs a full GC first). The fleet's main thread writes it and
 * answers nothing meanwhile, so it is complete once the fleet answers /metrics again and the
 * file no longer grows.
 */
async function heapSnapshot(label: string): Promise<void> {
  const before = new Set(await readdir(d.heap));
  const started = Date.now();
  notes.push(`heap-snapshot-${label}`);
  fleet.kill('SIGUSR2');
  let file: string | undefined;
  for (let size = -1; Date.now() - started < 300_000; ) {
    await new Promise((r) => setTimeout(r, 1000));
    file ??= (await readdir(d.heap)).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (!file) continue;
    const answered = (await get('/metrics', 60_000)).status === 200;
    const now = (await stat(path.join(d.heap, file))).size;
    if (answered && now === size) break;
    size = now;
  }
  if (!file) return say(`heap snapshot ${label}: no file after 5 minutes`);
  const target = path.join(d.heap, `heap-${label}.heapsnapshot`);
  await rename(path.join(d.heap, file), target);
  await scrape('/metrics');
  const line = `heap snapshot ${label} at ${fmt(tMin())} min: ${target} (${fmt((await stat(target)).size / 2 ** 20)} MiB file, ${fmt((Date.now() - started) / 1000)} s), heap used just after ${fmt(metric(lastMetrics, 'nodejs_heap_size_used_bytes') / 2 ** 20)} MiB`;
  totals.weekly.push(line);
  say(line);
}

const at = (min: number, fn: () => Promise<void>) => {
  const ms = Math.max(0, t0 + min * 60_000 - Date.now());
  timers.push(setTimeout(() => void fn().catch((e: unknown) => say(`failed: ${String(e)}`)), ms));
};
for (const w of (values['weekly-at'] ?? '').split(',').filter(Boolean)) at(Number(w), weeklyRun);
if (values['redis-restart-at'] && values['redis-restart']) at(Number(values['redis-restart-at']), () => restart('redis', values['redis-restart']!));
if (values['pg-restart-at'] && values['pg-restart']) at(Number(values['pg-restart-at']), () => restart('postgres', values['pg-restart']!));
for (const h of snapshotsAt.filter((h) => h !== 'END')) at(Number(h), () => heapSnapshot(h));

// ---------------------------------------------------------------------------------------------
// Run.

const sampleMs = Number(values['sample-s']) * 1000;
const intervals = [
  setInterval(() => void scrape('/metrics'), 15_000),
  setInterval(() => void scrape('/ready'), 10_000),
  setInterval(() => void Promise.all(operatorPages.map(scrape)), 120_000),
  setInterval(() => void dropScraperRound().catch((e: unknown) => say(`scraper drop failed: ${String(e)}`)), 60_000),
  setInterval(() => void sample().catch((e: unknown) => say(`sample failed: ${String(e)}`)), sampleMs),
];
await scrape('/metrics');
await sample();
registrationLoop();
await dropScraperRound();
say(`feeding for ${minutes} min (registrations every 1-3 s, scraper files every minute)`);

while (tMin() < minutes && fleetExit === null) await new Promise((r) => setTimeout(r, 1000));
feeding = false;
clearInterval(intervals[3]);
for (const t of timers) clearTimeout(t);
say(`feeding stopped: ${totals.registrations} registrations (${totals.invalid} invalid, ${totals.vouchers} vouchers), ${totals.scraperFiles} scraper files; waiting for the fleet to finish`);

// Drain: every ledger row final or failed, no email open, every event published, every file and run done.
const drainStart = Date.now();
for (;;) {
  const [s] = await sql`select
    (select count(*)::int from fleet.patient_import_ledger where status in ('received','downloaded','backed_up','imported','duplicate')) ledger_open,
    (select count(*)::int from fleet.deliveries where status in ('pending','sending')) emails_open,
    (select count(*)::int from fleet.outbox where published_at is null and parked_at is null) events_open,
    (select count(*)::int from fleet.therapist_import_files where status in ('queued','importing')) files_open,
    (select count(*)::int from fleet.therapist_import_runs where state <> 'closed') runs_open,
    (select count(*)::int from fleet.patient_import_ledger) ledger_rows`.catch(() => [null]);
  // Every file dropped has its ledger row (the last ones wait for the next poll).
  const unlisted = totals.registrations - (s ? Number(s.ledger_rows) : 0);
  if (s && !s.ledger_open && !s.emails_open && !(kafka && s.events_open) && !s.files_open && !s.runs_open && unlisted <= 0) break;
  if (Date.now() - drainStart > 300_000) {
    say(`not drained after 5 minutes: ${JSON.stringify(s)}`);
    break;
  }
  await new Promise((r) => setTimeout(r, 2000));
}
say(`drained in ${((Date.now() - drainStart) / 1000).toFixed(1)} s`);
await scrape('/metrics');
await sample();
for (const i of intervals) clearInterval(i);
if (snapshotsAt.includes('END')) await heapSnapshot('END');

// ---------------------------------------------------------------------------------------------
// Totals and checks.

const report: string[] = [];
const add = (s: string) => {
  report.push(s);
  console.log(s);
};
add(`\n== totals (fleet ready at ${fmt(tReady)} min, fed for ${minutes} min)`);
add(`dropped: ${totals.registrations} registrations (${totals.invalid} invalid, ${totals.vouchers} vouchers), ${totals.scraperFiles} scraper files (${totals.changedLines} changed adult lines)`);
for (const w of totals.weekly) add(w);
const ledger = await sql`select status, count(*)::int n from fleet.patient_import_ledger group by 1 order by 1`;
add(`ledger: ${ledger.map((r) => `${r.status} ${r.n}`).join(', ')}`);
const [pat] = await sql`select count(*)::int n, count(*) filter (where status = 'auf_der_Suche')::int searching from patient_service.patienten`;
add(`patients: ${pat!.n} (${pat!.searching} auf_der_Suche)`);
const dels = await sql`select kind, status, count(*)::int n from fleet.deliveries group by 1, 2 order by 1, 2`;
add(`emails: ${dels.map((r) => `${r.kind} ${r.status} ${r.n}`).join(', ')}; .eml files ${await countFiles(d.outbox)}`);
const tf = await sql`select status, count(*)::int n from fleet.therapist_import_files group by 1 order by 1`;
const [th] = await sql`select count(*)::int n from therapist_service.therapeuten`;
add(`therapist files: ${tf.map((r) => `${r.status} ${r.n}`).join(', ')}; therapists ${th!.n}`);
const ev = await sql`select event_type, count(*)::int n, count(published_at)::int published, count(parked_at)::int parked from fleet.outbox group by 1 order by 1`;
add(`events: ${ev.map((r) => `${r.event_type} ${r.n} (published ${r.published}${r.parked ? `, parked ${r.parked}` : ''})`).join(', ')}`);
const problems: string[] = [];
if (kafka) {
  const published = ev.reduce((a, r) => a + Number(r.published), 0);
  const collector = await collectMessages(kafka.brokers);
  await collector.waitFor((ms) => ms.length >= published, 60_000).catch(() => {});
  await new Promise((r) => setTimeout(r, 2000));
  const ids = collector.messages.map((msg) => (JSON.parse(msg.value ?? '{}') as { eventId?: string }).eventId);
  const distinct = new Set(ids).size;
  add(`kafka: ${collector.messages.length} messages, ${distinct} distinct event ids; outbox published ${published}`);
  if (distinct !== published) problems.push(`kafka holds ${distinct} distinct events, the outbox says ${published} published`);
  if (ids.length !== distinct) add(`kafka: ${ids.length - distinct} events published twice (at least once, see docs/events.md)`);
  await collector.close();
}
const httpLine = [...httpCounts].sort().map(([k, n]) => `${k}: ${n}`).join(', ');
add(`http: ${httpLine}`);

const check = await run(process.execPath, ['--import', 'tsx', 'scripts/drill/multi-check.ts', '--outbox', d.outbox, '--bucket', d.bucket, '--logs', d.logs, '--ports', String(port), '--registrations', String(totals.registrations), '--invalid', String(totals.invalid)], { cwd: root, env: process.env, maxBuffer: 64 * 2 ** 20 }).catch(
  (e: { stdout?: string }) => ({ stdout: e.stdout ?? '{}' }),
);
const checked = JSON.parse(check.stdout || '{}') as { problems?: string[]; logLines?: number; logErrorLines?: number };
add(`multi-check: ${checked.problems?.length ? checked.problems.join('; ') : 'no problems'} (${checked.logLines} log lines)`);
problems.push(...(checked.problems ?? []));

// Warn and error lines of the log, by message.
const byMsg = new Map<string, number>();
for (const line of (await readFile(logFile, 'utf8')).split('\n')) {
  if (!line.startsWith('{')) continue;
  const j = JSON.parse(line) as { level?: number; msg?: string; t?: string };
  if ((j.level ?? 0) >= 40) {
    const k = `${j.level === 40 ? 'warn' : 'error'} ${j.msg}`;
    byMsg.set(k, (byMsg.get(k) ?? 0) + 1);
  }
}
add(`log warn/error lines by message:${byMsg.size ? '' : ' none'}`);
for (const [k, n] of [...byMsg].sort((a, b) => b[1] - a[1])) add(`  ${n}\t${k}`);

const stopAt = Date.now();
fleet.kill('SIGTERM');
while (fleetExit === null && Date.now() - stopAt < 60_000) await new Promise((r) => setTimeout(r, 100));
add(`fleet stopped (SIGTERM) in ${((Date.now() - stopAt) / 1000).toFixed(1)} s, exit ${fleetExit}`);

add(`\n== slopes (${csvFile})`);
add(summarize(await readFile(csvFile, 'utf8')));
if (problems.length) add(`\nPROBLEMS:\n- ${problems.join('\n- ')}`);
await writeFile(path.join(dir, 'summary.txt'), report.join('\n') + '\n');
await sql.end();
redis.disconnect();
await kafka?.close();
process.exit(problems.length ? 1 : 0);
