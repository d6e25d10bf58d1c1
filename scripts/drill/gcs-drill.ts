/**
 * Fault drill of the patient import against the GCS stand-in: the stand-in runs in this process
 * (so faults and hooks can be set between the fleet's requests), the fleet runs as a child process
 * (`fleet start --only patient-import,bucket-poller,email,http`) with STORAGE_DRIVER=gcs pointed
 * at it, `fleet poll` is run as the operator would. After each round the checks read the
 * database, the bucket, the stand-in's request log, Redis, the fleet's log and /metrics, and
 * print one JSON report; exit 1 when something is wrong (`problems`).
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:55434/fleet_gcs_drill REDIS_URL=redis://127.0.0.1:6394 \
 *   QUEUE_PREFIX=gcs-drill npx tsx scripts/drill/gcs-drill.ts --dir /tmp/gd/run --port 4494 --http-port 3394 \
 *     [--rounds generations,faults,large] [--large 5000] [--page-size 500]
 *
 * Use a database, Redis and folders of the drill's own: the checks count every patient and
 * every ledger row there.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { startGcsStandIn, type GcsStandIn } from '../../libs/testing/gcs-stand-in.js';
import { fileBytes, objectNameFor, plainRegistration, registrationToken } from '../../workers/patient-import/fixtures.js';
import { namePart as madeUpName } from './feed-names.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: '/tmp/gcs-drill' },
    port: { type: 'string', default: '4494' },
    'http-port': { type: 'string', default: '3394' },
    rounds: { type: 'string', default: 'generations,faults,large' },
    large: { type: 'string', default: '5000' },
    'page-size': { type: 'string', default: '500' },
  },
});

const BUCKET = 'drill-bucket';
const PREFIX = 'registrations/';
const dir = values.dir;
const httpPort = Number(values['http-port']);
const env: NodeJS.ProcessEnv = {
  ...process.env,
  STORAGE_DRIVER: 'gcs',
  GCS_BUCKET: BUCKET,
  GCS_API_ENDPOINT: `http://127.0.0.1:${values.port}`,
  GCS_TIMEOUT_MS: '2000',
  GCS_MAX_RETRIES: '3',
  GCS_TOTAL_TIMEOUT_MS: '10000',
  POLL_PAGE_SIZE: values['page-size'],
  BACKUP_DIR: path.join(dir, 'backup'),
  FAILED_DIR: path.join(dir, 'failed'),
  MAIL_OUTBOX_DIR: path.join(dir, 'outbox'),
  MAIL_RATE_PER_SECOND: '50',
  HTTP_PORT: String(httpPort),
  RETRY_BACKOFF_SCALE: '0.05',
  WORKER_CONCURRENCY: '8',
  LOG_PRETTY: 'false',
  FLEET_INSTANCE: 'gcs-drill',
};

const sql = postgres(process.env.DATABASE_URL!, { max: 2, onnotice: () => {} });
const redis = new Redis(process.env.REDIS_URL!);
const problems: string[] = [];
const report: Record<string, unknown> = {};
/** Every registration made: token -> whether it is valid, and its name parts (to find them in logs). */
const made = new Map<string, { valid: boolean; names: string[]; email: string }>();
const invalidObjects = new Set<string>();

const namePart = (n: number) => madeUpName(n, 5);
let serial = 0;
/** A registration file; `invalid` gives a 4-digit plz. */
function registration(opts: { invalid?: boolean; nachname?: string; vorname?: string; token?: string } = {}) {
  const i = serial++;
  const token = opts.token ?? registrationToken();
  const vorname = opts.vorname ?? `Vdr${namePart(i)}`;
  const nachname = opts.nachname ?? `Ndr${namePart(i * 7 + 3)}`;
  const email = `gcsdrill.${token}@example.org`;
  const reg = plainRegistration({
    vorname,
    nachname,
    email,
    token,
    ...(opts.invalid ? { patch: (r) => ((r.patient_data as Record<string, unknown>).plz = '5206') } : {}),
  });
  made.set(token, { valid: !opts.invalid, names: [vorname, nachname], email });
  return { token, name: objectNameFor(reg, PREFIX), bytes: fileBytes(reg), reg };
}

function put(si: GcsStandIn, r: { name: string; bytes: Buffer }, invalid = false) {
  if (invalid) invalidObjects.add(r.name);
  return si.putObject(BUCKET, r.name, r.bytes);
}

// ---- the fleet ------------------------------------------------------------------------------

let fleet: ChildProcess | undefined;
const logFile = () => path.join(dir, 'fleet.log');

async function startFleet(): Promise<void> {
  const out = createWriteStream(logFile(), { flags: 'a' });
  fleet = spawn(process.execPath, ['--import', 'tsx', 'apps/cli/main.ts', 'start', '--only', 'patient-import,bucket-poller,email,http'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  fleet.stdout!.pipe(out);
  fleet.stderr!.pipe(out);
  for (let i = 0; i < 120; i++) {
    const ok = await fetch(`http://127.0.0.1:${httpPort}/ready`).then((r) => r.ok).catch(() => false);
    if (ok) return;
    await sleep(500);
  }
  throw new Error('the fleet did not become ready (see fleet.log)');
}

async function stopFleet(): Promise<void> {
  if (!fleet || fleet.exitCode !== null) return;
  fleet.kill('SIGTERM');
  await once(fleet, 'exit');
}

function run(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'apps/cli/main.ts', ...args], { env: { ...env, ...extraEnv } });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', (code) => resolve({ code: code ?? -1, out }));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until no ledger row is open (received..duplicate) and no email is pending. */
async function settle(limitMs = 300_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < limitMs) {
    const [r] = await sql`select
      (select count(*)::int from fleet.patient_import_ledger where status in ('received','downloaded','backed_up','imported','duplicate')) open,
      (select count(*)::int from fleet.deliveries where status in ('pending','sending')) mail`;
    if (r!.open === 0 && r!.mail === 0) return;
    await sleep(1000);
  }
  problems.push(`not settled after ${limitMs} ms`);
}

// ---- checks ---------------------------------------------------------------------------------

async function check(round: string, si: GcsStandIn): Promise<void> {
  const r: Record<string, unknown> = {};
  const ledger = await sql`select status, coalesce(delete_outcome, '') o, count(*)::int n from fleet.patient_import_ledger group by 1, 2 order by 1, 2`;
  r.ledger = Object.fromEntries(ledger.map((x) => [`${x.status}${x.o ? `/${x.o}` : ''}`, x.n]));
  const valid = [...made.entries()].filter(([, m]) => m.valid);
  const patients = await sql`select lower(email) email, count(*)::int n from patient_service.patienten group by 1`;
  const byEmail = new Map(patients.map((p) => [p.email as string, p.n as number]));
  let missing = 0;
  let twice = 0;
  for (const [, m] of valid) {
    const n = byEmail.get(m.email.toLowerCase()) ?? 0;
    if (n === 0) missing++;
    if (n > 1) twice++;
  }
  const strays = patients.filter((p) => ![...made.values()].some((m) => m.email.toLowerCase() === p.email)).length;
  r.patients = { expected: valid.length, found: patients.reduce((a, p) => a + p.n, 0), missing, twice, strays };
  if (missing || twice || strays) problems.push(`${round}: patients missing ${missing}, twice ${twice}, not made by the drill ${strays}`);

  // One row ending `deleted` per valid registration (by the ledger's patient or duplicate-of).
  const deletedPerPatient = await sql`select p.id, count(l.id)::int n from patient_service.patienten p
    left join fleet.patient_import_ledger l on l.status = 'deleted' and coalesce(l.patient_id, l.duplicate_of_patient_id) = p.id group by p.id having count(l.id) <> 1`;
  if (deletedPerPatient.length) problems.push(`${round}: ${deletedPerPatient.length} patients without exactly one ledger row ending deleted`);

  // Every successful delete was of a generation whose import had committed before it.
  const deletes = si.requests.filter((q) => q.kind === 'delete' && q.object?.startsWith(PREFIX));
  const gens = await sql`select object_name, generation, status, imported_at, delete_requested_at from fleet.patient_import_ledger`;
  const rowOf = new Map(gens.map((g) => [`${g.object_name}#${g.generation}`, g]));
  let badDeletes = 0;
  for (const d of deletes) {
    const gen = d.query.ifGenerationMatch ?? d.query.generation;
    const row = gen ? rowOf.get(`${d.object}#${gen}`) : undefined;
    if (!gen || !row || !row.imported_at) badDeletes++;
  }
  r.deleteRequests = deletes.length;
  if (badDeletes) problems.push(`${round}: ${badDeletes} delete requests without ifGenerationMatch of an imported generation`);

  // Invalid ones kept, with a reason naming the file's field.
  let invalidGone = 0;
  for (const name of invalidObjects) if (!si.getObject(BUCKET, name)) invalidGone++;
  const failed = await sql`select id, reason, error_code from fleet.patient_import_ledger where status = 'failed'`;
  const vague = failed.filter((f) => !/ledger \d+: /.test(f.reason ?? '') || (f.error_code === 'validation_failed' && !/patient_data\.plz/.test(f.reason)));
  r.failed = failed.length;
  r.failedCodes = Object.fromEntries(
    [...new Set(failed.map((f) => f.error_code as string))].map((c) => [c, failed.filter((f) => f.error_code === c).length]),
  );
  if (invalidGone) problems.push(`${round}: ${invalidGone} invalid files gone from the bucket`);
  if (vague.length) problems.push(`${round}: ${vague.length} failed rows without a reason naming ledger and field (${vague.map((v) => v.id).join(',')})`);
  r.bucketLeft = si.listObjects(BUCKET, PREFIX).length;

  // One staff email per registration.
  const mail = await sql`select kind, idempotency_key k, status from fleet.deliveries`;
  const staffPerRow = mail.filter((m) => /^patient-import\.(staff|failed)\.ledger\./.test(m.k)).length;
  const sentFiles = (await readdir(env.MAIL_OUTBOX_DIR!).catch(() => [])).filter((f) => f.endsWith('.eml')).length;
  r.mail = { deliveries: mail.length, staffOrFailure: staffPerRow, emlFiles: sentFiles };
  const dupMail = await sql`select count(*)::int n from (select patient_id from fleet.deliveries where idempotency_key like 'patient-import.staff.%' and patient_id is not null group by 1 having count(*) > 1) x`;
  if (dupMail[0]!.n) problems.push(`${round}: ${dupMail[0]!.n} patients with more than one staff email`);
  if (sentFiles !== mail.filter((m) => m.status === 'sent').length) problems.push(`${round}: ${sentFiles} .eml files for ${mail.filter((m) => m.status === 'sent').length} sent deliveries`);

  // No personal data in logs, Redis job data or /metrics.
  const needles = [...made.values()].flatMap((m) => [...m.names, m.email]);
  const log = await readFile(logFile(), 'utf8');
  const metrics = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((x) => x.text()).catch(() => '');
  const keys = await redis.keys(`{${env.QUEUE_PREFIX ?? 'fleet'}}:*`);
  let jobData = '';
  for (const k of keys) {
    if ((await redis.type(k)) === 'hash') jobData += JSON.stringify(await redis.hgetall(k));
  }
  const leaks: string[] = [];
  const nameLike = /(Ndr|Vdr)[A-Z][a-z]{4}|gcsdrill\.|Müller|Jörg|M%C3%BC/;
  for (const [where, text] of [['log', log], ['metrics', metrics], ['redis', jobData]] as const) {
    if (nameLike.test(text) || needles.some((n) => text.includes(n))) leaks.push(where);
  }
  if (leaks.length) problems.push(`${round}: personal data in ${leaks.join(', ')}`);
  r.logLines = log.split('\n').length;
  report[round] = r;
}

// ---- rounds ---------------------------------------------------------------------------------

async function poll(): Promise<string> {
  const res = await run(['poll']);
  if (res.code !== 0) problems.push(`fleet poll exit ${res.code}: ${res.out.slice(0, 300)}`);
  return res.out;
}

/** What `fleet imports show` says of these rows (its status and next-step lines). */
async function showRows(ids: number[]): Promise<void> {
  const shown = (report.shown ??= {}) as Record<string, string[]>;
  for (const id of ids) {
    const res = await run(['imports', 'show', String(id)]);
    shown[id] = res.out.split('\n').filter((l) => /status|outcome|delete|next|replaced|superseded|failed|reason/i.test(l)).map((l) => l.trim()).slice(0, 8);
  }
}

/** Generations replaced or deleted by someone else while listed, downloading, between import and delete. */
async function roundGenerations(si: GcsStandIn): Promise<void> {
  const files = Array.from({ length: 60 }, () => registration());
  const bad = Array.from({ length: 4 }, () => registration({ invalid: true }));
  for (const f of files) put(si, f);
  for (const f of bad) put(si, f, true);
  const pageSize = Number(env.POLL_PAGE_SIZE);
  // Each happens once (a hook that fired at every request would replace every new generation too).
  const once = new Set<string>();
  const first = (what: string) => !once.has(what) && once.add(what) !== undefined;
  // Overwritten while listed: after the first page was served, its first two objects get a new generation.
  si.before('list', (req, s) => {
    if (!req.query.pageToken || pageSize >= 64 || !first('listed')) return;
    for (const f of files.slice(0, 2)) s.putObject(BUCKET, f.name, Buffer.concat([f.bytes, Buffer.from('\n')]));
  }, 1000);
  si.before('download', (req, s) => {
    // Overwritten while downloading (the request for the old generation arrives after the upload).
    if (req.object === files[10]!.name && first('download10')) s.putObject(BUCKET, req.object, Buffer.concat([files[10]!.bytes, Buffer.from(' ')]));
    // Deleted by someone else between list and download.
    if (req.object === files[30]!.name && first('download30')) s.removeObject(BUCKET, req.object);
  }, 1000);
  si.before('delete', (req, s) => {
    // Overwritten between import and delete.
    if (req.object === files[20]!.name && first('delete20')) s.putObject(BUCKET, req.object, Buffer.concat([files[20]!.bytes, Buffer.from('\n\n')]));
    // Deleted by someone else between import and delete.
    if (req.object === files[40]!.name && first('delete40')) s.removeObject(BUCKET, req.object);
  }, 1000);
  // files[30] was deleted before its download: never imported, so it counts as not made.
  made.get(files[30]!.token)!.valid = false;
  await poll();
  await settle();
  await poll(); // the new generations
  await settle();
  si.clearFaults();
  const rows = await sql`select id, object_name, status, delete_outcome, error_code from fleet.patient_import_ledger where object_name = any(${[0, 1, 10, 20, 30, 40].map((i) => files[i]!.name)}) order by id`;
  report.generationRows = rows.map((x) => ({ id: x.id, file: files.findIndex((f) => f.name === x.object_name), status: x.status, outcome: x.delete_outcome, code: x.error_code }));
  await showRows(rows.filter((x) => x.status !== 'deleted' || x.delete_outcome !== 'deleted').map((x) => Number(x.id)));
}

/** 429/500/503, slow, hanging, dropped connections on list, download and delete. */
async function roundFaults(si: GcsStandIn): Promise<void> {
  const files = Array.from({ length: 40 }, () => registration());
  const bad = Array.from({ length: 2 }, () => registration({ invalid: true }));
  for (const f of files) put(si, f);
  for (const f of bad) put(si, f, true);
  si.fail({ kind: 'list', mode: { status: 503 }, times: 2 });
  si.fail({ kind: 'list', mode: { status: 429 }, times: 1 });
  si.fail({ kind: 'list', mode: 'slow', delayMs: 1500, times: 1 });
  si.fail({ kind: 'download', mode: { status: 500 }, object: files[0]!.name, times: 6 });
  si.fail({ kind: 'download', mode: { status: 429 }, object: files[1]!.name, times: 2 });
  si.fail({ kind: 'download', mode: 'reset', object: files[2]!.name, times: 3 });
  si.fail({ kind: 'download', mode: 'hang', object: files[3]!.name, times: 2 });
  si.fail({ kind: 'download', mode: 'stall', object: files[4]!.name, times: 2 });
  si.fail({ kind: 'download', mode: 'truncate', object: files[5]!.name, times: 2 });
  si.fail({ kind: 'download', mode: 'slow', delayMs: 1500, object: files[6]!.name });
  si.fail({ kind: 'delete', mode: { status: 503 }, object: files[7]!.name, times: 5 });
  si.fail({ kind: 'delete', mode: 'lost-answer', object: files[8]!.name, times: 1 });
  si.fail({ kind: 'delete', mode: 'hang', object: files[9]!.name, times: 5 });
  si.fail({ kind: 'delete', mode: 'reset', object: files[10]!.name, times: 5 });
  si.fail({ kind: 'delete', mode: { status: 429 }, object: files[11]!.name, times: 3 });
  si.fail({ kind: 'delete', mode: 'slow', delayMs: 2500, object: files[12]!.name, times: 1 });
  const out = await poll();
  report.faultPollOutput = out.trim().split('\n').slice(-3);
  await settle();
  report.faultsLeft = si.pendingFaults();
  si.clearFaults();
  const rows = await sql`select id, object_name, status, attempts, delete_outcome from fleet.patient_import_ledger where object_name = any(${files.slice(0, 13).map((f) => f.name)}) order by id`;
  await showRows(rows.filter((x) => x.delete_outcome !== 'deleted').map((x) => Number(x.id)));
  report.faultRows = rows.map((x) => ({ id: x.id, file: files.findIndex((f) => f.name === x.object_name), status: x.status, attempts: x.attempts, outcome: x.delete_outcome }));
}

/** Many objects over several pages, new files during the poll, other prefixes and odd names. */
async function roundLarge(si: GcsStandIn): Promise<void> {
  const n = Number(values.large);
  for (let i = 0; i < n; i++) put(si, registration({ invalid: i % 500 === 499 }), i % 500 === 499);
  // Other prefixes: never listed, never touched.
  for (let i = 0; i < 20; i++) {
    const f = registration();
    made.get(f.token)!.valid = false;
    si.putObject(BUCKET, `other/${f.name.slice(PREFIX.length)}`, f.bytes);
    si.putObject(BUCKET, `registrations-archive/${f.name.slice(PREFIX.length)}`, f.bytes);
  }
  // Odd names: URL-encoded umlauts, '+' as a space, a literal space, a sub-folder, not .json.
  const odd = [
    { nachname: 'Müller', vorname: 'Jörg' },
    { nachname: 'Van der Berg', vorname: 'Anna Lena' },
    { nachname: 'Groß-Öztürk', vorname: 'Zoë' },
  ].map((o) => registration(o));
  for (const f of odd) put(si, { ...f, name: f.name.replaceAll('%20', '+') }); // '+' for a space, as PHP's urlencode writes it
  const literalSpace = registration({ nachname: 'Wei Lan', vorname: 'Ming' });
  made.get(literalSpace.token)!.valid = true;
  si.putObject(BUCKET, `${PREFIX}Wei Lan_Ming_20250705_${literalSpace.token.slice(0, 8)}.json`, literalSpace.bytes);
  const notJson = registration();
  made.get(notJson.token)!.valid = false;
  put(si, { name: `${PREFIX}${notJson.name.slice(PREFIX.length, -5)}.txt`, bytes: notJson.bytes }, true);
  // A sub-folder under the prefix: the file name is the part after the last '/', so it is imported.
  const sub = registration();
  put(si, { name: `${PREFIX}2025/${sub.name.slice(PREFIX.length)}`, bytes: sub.bytes });
  // New files arriving during the poll: 50 after the third page was asked for, some sorting before it.
  let page = 0;
  si.before('list', (req, s) => {
    if (!req.query.pageToken) page = page ? 100 : 0; // the first poll only
    page++;
    if (page === 3) {
      for (let i = 0; i < 50; i++) {
        const f = registration(i % 2 ? {} : { nachname: `Aaa${namePart(i)}` });
        put(s, f);
      }
    }
  }, 1000);
  const t0 = Date.now();
  const out = await poll();
  report.largePollMs = Date.now() - t0;
  report.largePollOutput = out.trim().split('\n').slice(-2);
  await settle(900_000);
  report.largeSettleMs = Date.now() - t0;
  await poll(); // the arrivals the first listing passed
  await settle(300_000);
  report.largeTotalMs = Date.now() - t0;
  si.clearFaults();
  report.lists = si.requests.filter((q) => q.kind === 'list').length;
  const oddRows = await sql`select status, error_code, reason_withheld from fleet.patient_import_ledger where object_name !~ '^registrations/[A-Za-z]' or object_name like '%.txt' or object_name like '%/2025/%' or object_name like '%\\%%' or object_name like '% %'`;
  report.oddRows = oddRows.map((x) => ({ status: x.status, code: x.error_code, reason: x.reason_withheld }));
  report.otherPrefixesKept = si.listObjects(BUCKET, 'other/').length + si.listObjects(BUCKET, 'registrations-archive/').length;
  if (report.otherPrefixesKept !== 40) problems.push('objects under other prefixes touched');
}

/** Credentials refused (401), lacking a permission (403), a wrong bucket, a wrong endpoint: what `fleet poll` and GET /ready say. */
async function roundConfig(si: GcsStandIn): Promise<void> {
  const said: Record<string, string> = {};
  const ready = async () => JSON.stringify((await fetch(`http://127.0.0.1:${httpPort}/ready`).then((r) => r.json()) as { checks: Record<string, unknown> }).checks.bucket);
  si.fail({ kind: 'list', mode: { status: 401 }, times: 100 });
  said.poll401 = (await run(['poll'])).out.trim();
  si.clearFaults();
  si.fail({ kind: 'list', mode: { status: 403 }, times: 100 });
  said.poll403 = (await run(['poll'])).out.trim();
  si.clearFaults();
  said.pollWrongBucket = (await run(['poll'], { GCS_BUCKET: 'no-such-bucket' })).out.trim();
  said.pollWrongEndpoint = (await run(['poll'], { GCS_API_ENDPOINT: 'http://127.0.0.1:1' })).out.trim();
  said.readyNow = await ready();
  for (const [k, v] of Object.entries(said)) if (/registrations\/|Ndr|Vdr/.test(v)) problems.push(`config: ${k} names an object`);
  report.configSaid = said;
}

// ---- main -----------------------------------------------------------------------------------

await mkdir(dir, { recursive: true });
const si = await startGcsStandIn({ port: Number(values.port), buckets: [BUCKET] });
try {
  await run(['migrate']);
  await startFleet();
  await settle(60_000);
  for (const round of values.rounds.split(',')) {
    const t0 = Date.now();
    if (round === 'generations') await roundGenerations(si);
    else if (round === 'faults') await roundFaults(si);
    else if (round === 'large') await roundLarge(si);
    else if (round === 'config') await roundConfig(si);
    else throw new Error(`unknown round ${round}`);
    await check(round, si);
    report[`${round}Ms`] = Date.now() - t0;
  }
} finally {
  await stopFleet();
  await si.close();
  await sql.end();
  redis.disconnect();
}
report.problems = problems;
console.log(JSON.stringify(report, null, 2));
process.exit(problems.length ? 1 : 0);
