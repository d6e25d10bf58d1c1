/**
 * Crash drill of one patient import, step by step: the fleet (`fleet start --only
 * patient-import,bucket-poller,email,http`, STORAGE_DRIVER=gcs with the real client, MAIL_DRIVER=resend)
 * runs as a child process against a GCS stand-in and a Resend stand-in in this process, and is
 * SIGKILLed at a chosen point of one registration's import; then started again, and the
 * registration's outcome is checked (one patient, one consent, one ledger row in its final state,
 * one staff email, one `patient.created` event, the object deleted once with ifGenerationMatch,
 * the durable copy present, no dead letter).
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:55441/fleet_crash REDIS_URL=redis://127.0.0.1:6394 \
 *   QUEUE_PREFIX=crash npx tsx scripts/drill/crash-steps.ts --dir /tmp/crash-run [--steps a1,a2,b1,...] \
 *     [--multi 2000] [--processes 3]
 *
 * Steps (how the kill is placed):
 *   a1  download request held unanswered by the stand-in ('hang'), SIGKILL when it arrives
 *   a2  download body half sent ('stall'), SIGKILL while the rest is awaited
 *   b1  durable copy written, the import transaction waiting on `lock table patient_service.patienten`
 *       (held by this script): SIGKILL, then the lock released
 *   b2  as b1 with `fleet.outbox` locked: the write and the commit are already sent and wait
 *       behind the lock (the orphaned backend may still commit once the lock goes)
 *   b3  as b1 with `fleet.deliveries` locked
 *   c1  committed, the bucket delete held unanswered ('hang'): SIGKILL when it arrives
 *   c2  as c1, and a new generation of the same name uploaded while the delete is held
 *   c3  as c1 twice in a row (the job's second stall: BullMQ fails it, see the report)
 *   d1  the delete carried out by the stand-in but the fleet SIGKILLed just before (answer lost with the process)
 *   d2  the delete's answer lost ('lost-answer'), SIGKILL while the driver's retry is held
 *   e1  the staff email request held unanswered by the Resend stand-in, SIGKILL when it arrives
 *   e2  the staff email accepted but its answer lost, SIGKILL while the retry is held
 *   b4  as b1 but SIGTERM (a graceful stop while the transaction waits on the lock)
 *
 * `--multi N`: then N registrations (1 in 40 invalid) uploaded in waves while `--processes`
 * fleet processes poll the same bucket (scheduled every 10 s, plus `fleet poll` twice at once),
 * with SIGKILLs and SIGTERMs of single processes, each started again; checked as a whole.
 *
 * Use a database, Redis and folders of the drill's own: the checks count every patient.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { startGcsStandIn, type RecordedRequest } from '../../libs/testing/gcs-stand-in.js';
import { startResendStandIn } from '../../libs/testing/resend-stand-in.js';
import { fileBytes, objectNameFor, plainRegistration, registrationToken } from '../../workers/patient-import/fixtures.js';
import { namePart as madeUpName } from './feed-names.js';
import { fleetCli, startReadyFleet, stopProcess } from './fleet-process.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: '/tmp/crash-steps' },
    port: { type: 'string', default: '4495' },
    'http-port': { type: 'string', default: '3395' },
    steps: { type: 'string', default: 'a1,a2,b1,b2,b3,b4,c1,c2,d1,d2,e1,e2,c3' },
    multi: { type: 'string', default: '0' },
    processes: { type: 'string', default: '3' },
  },
});

const BUCKET = 'crash-bucket';
const PREFIX = 'registrations/';
const dir = values.dir;
const basePort = Number(values['http-port']);
const sql = postgres(process.env.DATABASE_URL!, { max: 4, onnotice: () => {} });
const redis = new Redis(process.env.REDIS_URL!);
const prefix = `{${process.env.QUEUE_PREFIX ?? 'fleet'}}`;
const problems: string[] = [];
const report: Record<string, unknown> = {};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every request the stand-in got, with its arrival time (delete after commit is checked with it). */
const arrivals = new Map<RecordedRequest, number>();
const gcs = await startGcsStandIn({ port: Number(values.port), buckets: [BUCKET], onRequest: (r) => arrivals.set(r, Date.now()) });
const resend = await startResendStandIn({ port: 0, keepBodies: true, apiKey: 're_drill' });

function envFor(n: number): NodeJS.ProcessEnv {
  const own = path.join(dir, `p${n}`);
  return {
    ...process.env,
    STORAGE_DRIVER: 'gcs',
    GCS_BUCKET: BUCKET,
    GCS_API_ENDPOINT: gcs.url,
    GCS_TIMEOUT_MS: '3000',
    GCS_MAX_RETRIES: '3',
    GCS_TOTAL_TIMEOUT_MS: '10000',
    MAIL_DRIVER: 'resend',
    RESEND_BASE_URL: resend.url,
    RESEND_API_KEY: 're_drill',
    UNSUBSCRIBE_SECRET: 'crash-drill-secret-0123456789abcdef0123',
    MAIL_RATE_PER_SECOND: '50',
    MAIL_REQUEST_TIMEOUT_MS: '5000',
    BACKUP_DIR: path.join(own, 'backup'),
    FAILED_DIR: path.join(own, 'failed'),
    MAIL_OUTBOX_DIR: path.join(own, 'outbox'),
    LOCAL_BUCKET_DIR: path.join(own, 'bucket'),
    SCRAPER_DROP_DIR: path.join(own, 'scraper'),
    HTTP_PORT: String(basePort + n),
    RETRY_BACKOFF_SCALE: '0.05',
    WORKER_CONCURRENCY: '8',
    WORKER_LOCK_DURATION_MS: '5000',
    WORKER_STALLED_INTERVAL_MS: '2000',
    POLL_CRON: process.env.POLL_CRON ?? '0 0 1 1 *',
    LOG_PRETTY: 'false',
    FLEET_INSTANCE: `crash-p${n}`,
    // The processes of the multi round (n > 0): a batch left `sending` by a job that stalled twice
    // is handed on by the sweep after 1 min instead of the default hour.
    ...(n > 0 ? { MAIL_SENDING_STALE_MS: '60000', MAIL_SWEEP_INTERVAL_MS: '10000' } : {}),
  };
}

// ---- fleet processes -------------------------------------------------------------------------

const fleets = new Map<number, ChildProcess>();
const logFile = (n: number) => path.join(dir, `p${n}.log`);

async function startFleet(n = 0): Promise<void> {
  await mkdir(path.join(dir, `p${n}`), { recursive: true });
  fleets.set(n, await startReadyFleet({ only: 'patient-import,bucket-poller,email,http', env: envFor(n), logFile: logFile(n), port: basePort + n, name: `p${n}` }));
}

/** Stops process n with `signal` and waits for it to be gone; ms it took. */
function stopFleet(n = 0, signal: NodeJS.Signals = 'SIGKILL'): Promise<number> {
  return stopProcess(fleets.get(n), signal);
}

function cli(args: string[], n = 0): Promise<{ code: number; out: string }> {
  return fleetCli(args, envFor(n));
}

async function poll(n = 0): Promise<void> {
  const r = await cli(['poll'], n);
  if (r.code !== 0) problems.push(`fleet poll exit ${r.code}: ${r.out.slice(0, 300)}`);
}

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, limitMs = 60_000): Promise<T> {
  const t0 = Date.now();
  while (Date.now() - t0 < limitMs) {
    const v = await fn();
    if (v) return v;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** No ledger row open, no email pending or sending. */
async function settle(limitMs = 180_000): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < limitMs) {
    const [r] = await sql`select
      (select count(*)::int from fleet.patient_import_ledger where status in ('received','downloaded','backed_up','imported','duplicate')) open,
      (select count(*)::int from fleet.deliveries where status in ('pending','sending')) mail`;
    if (r!.open === 0 && r!.mail === 0) return true;
    await sleep(500);
  }
  return false;
}

// ---- registrations ---------------------------------------------------------------------------

const namePart = (n: number) => madeUpName(n, 5);
interface Made {
  token: string;
  name: string;
  bytes: Buffer;
  email: string;
  valid: boolean;
}
let serial = 0;
function registration(opts: { invalid?: boolean } = {}): Made {
  const i = serial++;
  const token = registrationToken();
  const email = `crash.${token}@example.org`;
  const reg = plainRegistration({
    vorname: `Vcr${namePart(i)}`,
    nachname: `Ncr${namePart(i * 7 + 3)}`,
    email,
    token,
    ...(opts.invalid ? { patch: (r) => ((r.patient_data as Record<string, unknown>).plz = '5206') } : {}),
  });
  return { token, name: objectNameFor(reg, PREFIX), bytes: fileBytes(reg), email, valid: !opts.invalid };
}

// ---- checks of one registration ---------------------------------------------------------------

const dlqKey = (ledgerId: number) => `${prefix}:patient-import-dlq:patient-import.ledger.${ledgerId}`;

interface Expect {
  /** Final ledger states of the registration's rows, in id order (default one row `deleted`). */
  rows?: Array<string | string[]>;
  deleteOutcomes?: Array<string | string[]>;
  deadLetter?: boolean;
}

async function checkOne(step: string, m: Made, expect: Expect = {}): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const bad = (s: string) => problems.push(`${step}: ${s}`);
  const rows = await sql`select id, status, delete_outcome, generation, imported_at, backup_path, sha256, attempts, staff_delivery_id, patient_id,
    duplicate_kind from fleet.patient_import_ledger where object_name = ${m.name} order by id`;
  out.rows = rows.map((r) => `${r.id} ${r.status}/${r.delete_outcome ?? '-'} attempts ${r.attempts}${r.duplicate_kind ? ` ${r.duplicate_kind}` : ''}`);
  const wantRows = expect.rows ?? ['deleted'];
  const rowsOk = rows.length === wantRows.length && rows.every((r, i) => [wantRows[i]!].flat().includes(r.status));
  if (!rowsOk) bad(`ledger rows ${rows.map((r) => r.status).join(',')}, expected ${JSON.stringify(wantRows)}`);
  const wantOutcomes = expect.deleteOutcomes ?? ['deleted'];
  rows.forEach((r, i) => {
    const w = wantOutcomes[i];
    if (w !== undefined && !(Array.isArray(w) ? w : [w]).includes(r.delete_outcome)) bad(`ledger ${r.id} delete_outcome ${r.delete_outcome}, expected ${String(w)}`);
  });
  const [p] = await sql`select count(*)::int n, min(id) id from patient_service.patienten where email = ${m.email}`;
  const [c] = await sql`select count(*)::int n from fleet.patient_consents where registration_token = ${m.token}`;
  out.patients = p!.n;
  out.consents = c!.n;
  if (p!.n !== 1) bad(`${p!.n} patients`);
  if (c!.n !== 1) bad(`${c!.n} consents`);
  const [ev] = await sql`select count(*)::int n, count(distinct event_id)::int ids from fleet.outbox where event_type = 'patient.created' and key = ${String(p!.id)}`;
  out.createdEvents = ev!.n;
  if (ev!.n !== 1 || ev!.ids !== 1) bad(`${ev!.n} patient.created events (${ev!.ids} event ids)`);
  // Staff email: one delivery per imported row, sent, one message at the provider.
  const ids = rows.map((r) => Number(r.id));
  const dl = await sql`select idempotency_key k, status from fleet.deliveries where idempotency_key = any(${ids.map((id) => `patient-import.staff.ledger.${id}`)})`;
  out.staffDeliveries = dl.map((d) => `${d.k.replace(/^patient-import\./, '')} ${d.status}`);
  if (dl.length !== 1 || dl[0]!.status !== 'sent') bad(`staff deliveries ${JSON.stringify(out.staffDeliveries)}`);
  const base = m.name.slice(PREFIX.length);
  const msgs = resend.messages.filter((x) => (x.text ?? '').includes(base) || (x.html ?? '').includes(base));
  out.messages = msgs.length;
  if (msgs.length !== 1) bad(`${msgs.length} staff emails at the provider`);
  // Bucket: every delete with ifGenerationMatch; the imported generation deleted once; after its commit.
  const deletes = gcs.requests.filter((q) => q.kind === 'delete' && q.object === m.name);
  out.deleteRequests = deletes.map((d) => `${d.query.ifGenerationMatch === rows[0]?.generation ? 'gen0' : d.query.ifGenerationMatch ? 'gen1' : 'NONE'}->${d.status ?? 'no answer'}`);
  if (deletes.some((d) => !d.query.ifGenerationMatch)) bad('a delete without ifGenerationMatch');
  for (const r of rows) {
    const done = deletes.filter((d) => d.query.ifGenerationMatch === r.generation && d.status === 204).length;
    const carriedOut = deletes.filter((d) => d.query.ifGenerationMatch === r.generation && (d.status === 204 || d.fault === 'lost-answer' || d.status === undefined)).length;
    if (r.status === 'deleted' && r.delete_outcome !== 'deleted_earlier' && done !== 1) bad(`ledger ${r.id}: ${done} successful deletes`);
    if (carriedOut < 1 && r.status === 'deleted') bad(`ledger ${r.id}: deleted without a delete of its generation`);
    for (const d of deletes.filter((x) => x.query.ifGenerationMatch === r.generation)) {
      if (!r.imported_at || (arrivals.get(d) ?? 0) < new Date(r.imported_at).getTime()) bad(`ledger ${r.id}: a delete before its commit`);
    }
    // The durable copy.
    const copy = r.backup_path ? await readFile(r.backup_path).catch(() => null) : null;
    if (!copy || createHash('sha256').update(copy).digest('hex') !== r.sha256) bad(`ledger ${r.id}: durable copy missing or different`);
    const dead = (await redis.exists(dlqKey(Number(r.id)))) === 1;
    if (dead !== (expect.deadLetter ?? false)) bad(`ledger ${r.id}: dead letter ${dead}`);
    if (dead) out.deadLetter = (await redis.hget(dlqKey(Number(r.id)), 'data'))?.slice(0, 300);
  }
  out.bucketHas = gcs.getObject(BUCKET, m.name) ? `generation ${gcs.getObject(BUCKET, m.name)!.generation === rows[0]?.generation ? 'imported' : 'other'}` : 'nothing';
  return out;
}

/** The fleet's log must not hold names, emails or object names. */
async function checkLogs(made: Made[]): Promise<void> {
  const names = /(Vcr|Ncr)[A-Z][a-z]{4}|crash\.[0-9a-f]{8}/;
  for (const f of (await readdir(dir)).filter((x) => x.endsWith('.log'))) {
    const text = await readFile(path.join(dir, f), 'utf8');
    if (names.test(text) || made.some((m) => text.includes(m.token))) problems.push(`${f}: personal data in the log`);
  }
}

// ---- the steps ---------------------------------------------------------------------------------

const stepReports: Record<string, unknown> = {};

/** Where the kill goes: `due` resolves when the import is at that point; `afterKill` undoes the obstruction. */
interface Trap {
  due: Promise<unknown>;
  afterKill?: () => Promise<void>;
}

/** Runs `place` (which sets the trap and returns a promise that resolves when the kill is due), kills, restarts, checks. */
async function step(
  name: string,
  opts: {
    place: (m: Made) => Trap | Promise<Trap>;
    signal?: NodeJS.Signals;
    expect?: Expect;
    killTwice?: boolean;
    /** The job is expected to end as a dead letter with the row still open: record that, then requeue it as an operator would. */
    requeue?: boolean;
  },
): Promise<void> {
  const t0 = Date.now();
  const m = registration();
  gcs.putObject(BUCKET, m.name, m.bytes);
  const atKill: string[] = [];
  const afterKillStatus: string[] = [];
  const r: Record<string, unknown> = { atKill, afterKill: afterKillStatus };
  try {
    const placed = await opts.place(m);
    const { due, afterKill } = placed;
    const rounds = opts.killTwice ? 2 : 1;
    for (let k = 0; k < rounds; k++) {
      if (k === 0) void poll();
      await Promise.race([due, sleep(60_000).then(() => Promise.reject(new Error('the kill point was not reached in 60 s')))]);
      const [row] = await sql`select status from fleet.patient_import_ledger where object_name = ${m.name} order by id limit 1`;
      const stopMs = await stopFleet(0, opts.signal ?? 'SIGKILL');
      atKill.push(`${row?.status ?? 'no row'} (stop ${stopMs} ms)`);
      await afterKill?.();
      const [after] = await sql`select status, backup_path from fleet.patient_import_ledger where object_name = ${m.name} order by id limit 1`;
      afterKillStatus.push(`${after?.status}${after?.backup_path ? ', copy recorded' : ''}`);
      if (k === 0 && opts.killTwice) {
        // The same trap again for the run after the restart.
        const again = await opts.place(m);
        await startFleet(0);
        await again.due;
        continue;
      }
      gcs.clearFaults();
      await startFleet(0);
    }
    if (opts.requeue) {
      const [row] = await sql`select id from fleet.patient_import_ledger where object_name = ${m.name} order by id limit 1`;
      await until('the dead letter', async () => (await redis.exists(dlqKey(Number(row!.id)))) === 1, 60_000);
      await poll(); // the poll offers open rows again: does it run this one?
      await sleep(3000);
      const [before] = await sql`select status from fleet.patient_import_ledger where id = ${row!.id}`;
      r.beforeRequeue = `${before!.status}, dead letter ${(await redis.hget(dlqKey(Number(row!.id)), 'data'))?.match(/"reason":"[^"]*"/)?.[0]}`;
      const q = await cli(['dlq', 'requeue', `patient-import.ledger.${row!.id}`, '--reason', 'crash drill']);
      r.requeue = q.out.trim().split('\n').slice(-2);
    }
    const settled = await settle(120_000);
    if (!settled) problems.push(`${name}: not settled in 120 s`);
    await poll(); // a newer generation (c2) is picked up by the next poll
    await settle(60_000);
    Object.assign(r, await checkOne(name, m, opts.expect));
  } catch (err) {
    problems.push(`${name}: ${(err as Error).message}`);
    gcs.clearFaults();
    if (!fleets.get(0) || fleets.get(0)!.exitCode !== null || fleets.get(0)!.signalCode !== null) await startFleet(0).catch(() => {});
  }
  r.ms = Date.now() - t0;
  stepReports[name] = r;
  made.push(m);
}
const made: Made[] = [];

/** Resolves when a request of `kind` for the object arrives (the hook runs before the stand-in acts on it). */
function arrives(kind: RecordedRequest['kind'], m: Made, act?: () => void): Promise<void> {
  return nth(kind, m, 1, act);
}

/** Resolves when the `n`th request of `kind` for the object arrives (hooks stay until clearFaults; a hook must not add hooks: the stand-in runs those too). */
function nth(kind: RecordedRequest['kind'], m: Made, n: number, act?: () => void): Promise<void> {
  let seen = 0;
  return new Promise((resolve) => {
    gcs.before(
      kind,
      (req) => {
        if (req.object !== m.name || ++seen !== n) return;
        act?.();
        resolve();
      },
      Infinity,
    );
  });
}

/** Another connection holds `table` locked (access exclusive) until released; resolves `due` when a fleet backend waits on it and the copy is written. */
async function lockTable(table: string, m: Made, waiting: string) {
  const c = await sql.reserve();
  await c`begin`;
  await c.unsafe(`lock table ${table} in access exclusive mode`);
  const due = until(`an import waiting on ${table}`, async () => {
    const [w] = await sql`select count(*)::int n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and application_name like 'curavani-fleet%' and query like ${waiting}`;
    if (!w!.n) return false;
    const [row] = await sql`select backup_path from fleet.patient_import_ledger where object_name = ${m.name}`;
    const files = await readdir(path.join(dir, 'p0', 'backup')).catch(() => [] as string[]);
    return row !== undefined && files.some((f) => f.endsWith(m.name.slice(PREFIX.length)));
  }).then(() => undefined);
  const afterKill = async () => {
    await sleep(1500); // the orphaned backend still waits on the lock
    const [orphans] = await sql`select count(*)::int n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`;
    await c`commit`;
    c.release();
    await sleep(1000);
    const [row] = await sql`select status from fleet.patient_import_ledger where object_name = ${m.name}`;
    stepNotes[table] = `backends waiting on the lock after the kill: ${orphans!.n}; row after the lock was released: ${row?.status}`;
  };
  return { due, afterKill };
}
const stepNotes: Record<string, string> = {};

const steps: Record<string, () => Promise<void>> = {
  a1: () =>
    step('a1 download held', {
      place: (m) => {
        gcs.fail({ kind: 'download', mode: 'hang', object: m.name, times: 1 });
        return { due: arrives('download', m) };
      },
    }),
  a2: () =>
    step('a2 download body half received', {
      place: (m) => {
        gcs.fail({ kind: 'download', mode: 'stall', object: m.name, times: 1 });
        return { due: arrives('download', m).then(() => sleep(200)) };
      },
    }),
  b1: () => step('b1 copy written, transaction waits on patienten', { place: (m) => lockTable('patient_service.patienten', m, '%same_email%') }),
  b2: () => step('b2 copy written, write+commit wait on fleet.outbox', { place: (m) => lockTable('fleet.outbox', m, '%with pat as%') }),
  b3: () => step('b3 copy written, write+commit wait on fleet.deliveries', { place: (m) => lockTable('fleet.deliveries', m, '%with pat as%') }),
  b4: () => step('b4 as b1, SIGTERM', { place: (m) => lockTable('patient_service.patienten', m, '%same_email%'), signal: 'SIGTERM' }),
  c1: () =>
    step('c1 committed, delete held', {
      place: (m) => {
        gcs.fail({ kind: 'delete', mode: 'hang', object: m.name, times: 1 });
        return { due: arrives('delete', m) };
      },
    }),
  c2: () => {
    let reupload: Made | undefined;
    return step('c2 committed, delete held, same name uploaded again', {
      place: (m) => {
        gcs.fail({ kind: 'delete', mode: 'hang', object: m.name, times: 1 });
        // A re-upload of the same registration (same name, a changed phone number): a new generation.
        reupload = { ...m, bytes: Buffer.from(m.bytes.toString('utf8').replace('+49 241 123456', '+49 241 654321')) };
        return { due: arrives('delete', m, () => gcs.putObject(BUCKET, m.name, reupload!.bytes)) };
      },
      // The new generation: its own row, a duplicate of the same token (no patient, no email), its copy
      // kept, deleted. The old one: `superseded` (412) when its retry comes first; when the restart's
      // poll imported and deleted the new one first, the retry finds no object and, having sent a
      // delete before, records `deleted_earlier` (it cannot tell the two apart).
      expect: { rows: [['superseded', 'deleted'], 'deleted'], deleteOutcomes: [['precondition_failed', 'deleted_earlier'], 'deleted'] },
    });
  },
  c3: () =>
    step('c3 committed, delete held, killed twice', {
      place: (m) => {
        gcs.fail({ kind: 'delete', mode: 'hang', object: m.name, times: 1 });
        return { due: arrives('delete', m) };
      },
      killTwice: true,
      requeue: true,
    }),
  d1: () =>
    step('d1 delete carried out, process killed just before', {
      place: (m) => ({ due: arrives('delete', m, () => fleets.get(0)!.kill('SIGKILL')) }),
      expect: { deleteOutcomes: [['deleted_earlier']] },
    }),
  d2: () =>
    step('d2 delete answer lost, killed during the retry', {
      place: (m) => {
        gcs.fail({ kind: 'delete', mode: 'lost-answer', object: m.name, times: 1 });
        gcs.fail({ kind: 'delete', mode: 'hang', object: m.name, times: 1 });
        return { due: nth('delete', m, 2) };
      },
      expect: { deleteOutcomes: [['deleted_earlier']] },
    }),
  e1: () =>
    step('e1 staff email request held', {
      place: () => {
        resend.inject({ kind: 'hang' });
        const before = resend.requests.length;
        return { due: until('the email request', async () => resend.requests.length > before).then(() => undefined) };
      },
    }),
  e2: () =>
    step('e2 staff email accepted, answer lost, killed during the retry', {
      place: () => {
        resend.inject({ kind: 'lose-answer' });
        resend.inject({ kind: 'hang' });
        const before = resend.requests.length;
        return { due: until('the email retry', async () => resend.requests.length > before + 1).then(() => undefined) };
      },
    }),
};

// ---- several processes -------------------------------------------------------------------------

async function multi(total: number, processes: number): Promise<void> {
  const t0 = Date.now();
  const r: Record<string, unknown> = {};
  const regs: Made[] = [];
  const events: string[] = [];
  for (let n = 1; n <= processes; n++) await startFleet(n);
  const waves = 5;
  const per = Math.ceil(total / waves);
  const upload = () => {
    for (let i = 0; i < per && regs.length < total; i++) {
      const m = registration({ invalid: regs.length % 40 === 39 });
      regs.push(m);
      gcs.putObject(BUCKET, m.name, m.bytes);
    }
  };
  const at = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  // Each wave: uploads, then two operator polls at once (besides the scheduled one in each process),
  // and two processes stopped while the wave's imports run (the first as soon as rows are open),
  // each started again a second later.
  const plan: Array<[number, NodeJS.Signals]> = [
    [1, 'SIGKILL'],
    [2, 'SIGTERM'],
    [3, 'SIGKILL'],
    [1, 'SIGKILL'],
    [2, 'SIGKILL'],
    [3, 'SIGTERM'],
    [1, 'SIGKILL'],
    [3, 'SIGKILL'],
    [2, 'SIGKILL'],
    [1, 'SIGTERM'],
  ].map(([n, sig]) => [((Number(n) - 1) % processes) + 1, sig as NodeJS.Signals]);
  let k = 0;
  const stopAndStart = async (n: number, sig: NodeJS.Signals) => {
    const [open] = await sql`select count(*)::int n from fleet.patient_import_ledger where status in ('received','downloaded','backed_up','imported','duplicate')`;
    const [mail] = await sql`select count(*)::int n from fleet.deliveries where status in ('pending','sending')`;
    const ms = await stopFleet(n, sig);
    events.push(`${at()}: p${n} ${sig} (gone after ${ms} ms; ${open!.n} rows open, ${mail!.n} emails pending)`);
    await sleep(1000);
    await startFleet(n);
    events.push(`${at()}: p${n} ready again`);
  };
  for (let w = 0; w < waves; w++) {
    upload();
    const polls = Promise.all([poll(1), poll(processes)]);
    await until('open rows', async () => {
      const [open] = await sql`select count(*)::int n from fleet.patient_import_ledger where status in ('received','downloaded','backed_up','imported','duplicate')`;
      return open!.n > 50;
    }, 60_000).catch(() => events.push(`${at()}: no open rows seen`));
    const [n1, s1] = plan[k++ % plan.length]!;
    const first = stopAndStart(n1, s1);
    await sleep(1500);
    const [n2, s2] = plan[k++ % plan.length]!;
    if (n2 !== n1) await stopAndStart(n2, s2);
    await first;
    await polls;
  }
  r.events = events;
  const settled = await settle(600_000);
  await poll(1);
  await settle(120_000);
  r.settledAfterMs = Date.now() - t0;
  if (!settled) problems.push('multi: not settled in 600 s');

  // Whole-run checks.
  const valid = regs.filter((m) => m.valid);
  const invalid = regs.filter((m) => !m.valid);
  const patients = await sql`select email, count(*)::int n from patient_service.patienten where email like 'crash.%' group by 1`;
  const byEmail = new Map(patients.map((p) => [p.email as string, p.n as number]));
  const missing = valid.filter((m) => !byEmail.get(m.email)).length;
  const twice = valid.filter((m) => (byEmail.get(m.email) ?? 0) > 1).length;
  const invalidImported = invalid.filter((m) => byEmail.get(m.email)).length;
  r.registrations = { total: regs.length, valid: valid.length, invalid: invalid.length, missing, twice, invalidImported };
  if (missing || twice || invalidImported) problems.push(`multi: patients missing ${missing}, twice ${twice}, invalid imported ${invalidImported}`);
  const names = regs.map((m) => m.name);
  const ledger = await sql`select id, object_name, status, delete_outcome, generation, imported_at, failure_delivery_id, staff_delivery_id, attempts
    from fleet.patient_import_ledger where object_name = any(${names})`;
  const rowsOf = new Map<string, typeof ledger>();
  for (const l of ledger) rowsOf.set(l.object_name, [...(rowsOf.get(l.object_name) ?? []), l] as typeof ledger);
  const statusCount: Record<string, number> = {};
  for (const l of ledger) statusCount[`${l.status}/${l.delete_outcome ?? '-'}`] = (statusCount[`${l.status}/${l.delete_outcome ?? '-'}`] ?? 0) + 1;
  r.ledger = statusCount;
  r.attempts = Object.fromEntries([...new Set(ledger.map((l) => l.attempts as number))].sort().map((a) => [a, ledger.filter((l) => l.attempts === a).length]));
  const deletesOf = new Map<string, RecordedRequest[]>();
  for (const q of gcs.requests) if (q.kind === 'delete' && q.object) deletesOf.set(q.object, [...(deletesOf.get(q.object) ?? []), q]);
  const bodies = resend.messages.map((x) => `${x.subject}\n${x.text ?? ''}`);
  const messagesFor = (m: Made) => bodies.filter((b) => b.includes(m.name.slice(PREFIX.length))).length;
  const counts = { rowsNot1: 0, deletedOnceNot: 0, deleteBeforeCommit: 0, noIfGeneration: 0, staffNot1: 0, invalidNotKept: 0, invalidDeadLetterNot1: 0, invalidMailNot1: 0, unexpectedDeadLetters: 0 };
  for (const m of regs) {
    const rows = rowsOf.get(m.name) ?? [];
    if (rows.length !== 1) counts.rowsNot1++;
    const row = rows[0];
    const dels = deletesOf.get(m.name) ?? [];
    if (dels.some((d) => !d.query.ifGenerationMatch)) counts.noIfGeneration++;
    if (m.valid) {
      const ok = dels.filter((d) => d.status === 204 || d.fault === 'lost-answer').length;
      if (row?.status !== 'deleted' || ok !== 1) counts.deletedOnceNot++;
      if (row && dels.some((d) => (arrivals.get(d) ?? 0) < new Date(row.imported_at).getTime())) counts.deleteBeforeCommit++;
      if (messagesFor(m) !== 1) counts.staffNot1++;
      if (row && (await redis.exists(dlqKey(Number(row.id))))) counts.unexpectedDeadLetters++;
    } else {
      if (!gcs.getObject(BUCKET, m.name) || dels.length) counts.invalidNotKept++;
      if (!row || row.status !== 'failed' || (await redis.exists(dlqKey(Number(row.id)))) !== 1) counts.invalidDeadLetterNot1++;
      const failMails = row ? resend.messages.filter((x) => x.subject.includes(`(Import ${row.id})`)).length : 0;
      if (failMails !== 1) counts.invalidMailNot1++;
    }
  }
  r.counts = counts;
  for (const [k, v] of Object.entries(counts)) if (v) problems.push(`multi: ${k} ${v}`);
  const [ev] = await sql`select count(*)::int n, count(distinct event_id)::int ids, count(distinct key)::int keys from fleet.outbox where event_type = 'patient.created'`;
  r.createdEvents = ev;
  const [fe] = await sql`select count(*)::int n, count(distinct key)::int keys from fleet.outbox where event_type = 'import.failed'`;
  r.failedEvents = fe;
  r.provider = resend.stats();
  const deadEmail = await redis.keys(`${prefix}:email-dlq:email-send.*`);
  r.emailDeadLetters = await Promise.all(deadEmail.map(async (key) => (await redis.hget(key, 'data'))?.match(/"reason":"[^"]*"/)?.[0]));
  const deadImports = await redis.keys(`${prefix}:patient-import-dlq:patient-import.*`);
  r.importDeadLetters = deadImports.length;
  const stuck = await sql`select batch_id, count(*)::int n, min(claimed_at) claimed, max(sent_at) - min(claimed_at) took from fleet.deliveries
    where batch_id in (select batch_id from fleet.deliveries group by 1 having max(sent_at) - min(claimed_at) > interval '30 seconds') group by 1`;
  r.slowBatches = stuck.map((b) => `${b.n} emails claimed ${new Date(b.claimed).toISOString()}, sent after ${String(b.took)}`);
  r.deleteRequests = gcs.requests.filter((q) => q.kind === 'delete').length;
  r.listRequests = gcs.requests.filter((q) => q.kind === 'list').length;
  const stalledLines: Record<string, number> = {};
  for (let n = 1; n <= processes; n++) {
    const text = await readFile(logFile(n), 'utf8');
    stalledLines[`p${n}`] = text.split('\n').filter((l) => l.includes('job stalled')).length;
  }
  r.stalledLogLines = stalledLines;
  r.ms = Date.now() - t0;
  report.multi = r;
  made.push(...regs);
  for (let n = 1; n <= processes; n++) await stopFleet(n, 'SIGTERM');
}

// ---- main --------------------------------------------------------------------------------------

await mkdir(dir, { recursive: true });
try {
  const m = await cli(['migrate']);
  if (m.code !== 0) throw new Error(`fleet migrate: ${m.out.slice(0, 300)}`);
  const stepNames = values.steps ? values.steps.split(',').filter(Boolean) : [];
  if (stepNames.length) {
    await startFleet(0);
    for (const s of stepNames) {
      const run = steps[s];
      if (!run) throw new Error(`unknown step ${s}`);
      await run();
    }
    await stopFleet(0, 'SIGTERM');
    report.steps = stepReports;
    report.lockNotes = stepNotes;
  }
  const total = Number(values.multi);
  if (total > 0) await multi(total, Number(values.processes));
  await checkLogs(made);
  const [eventIds] = await sql`select count(*)::int n, count(distinct event_id)::int ids from fleet.outbox`;
  report.outbox = eventIds;
  if (eventIds!.n !== eventIds!.ids) problems.push('outbox: an event id twice');
} finally {
  for (const n of fleets.keys()) await stopFleet(n, 'SIGKILL');
  await gcs.close();
  await resend.stop();
  await sql.end();
  redis.disconnect();
}
report.problems = problems;
console.log(JSON.stringify(report, null, 1));
process.exit(problems.length ? 1 : 0);
