/**
 * Crash drill of the therapist import (docs/therapist-import.md, "Crash drill"): `--processes`
 * fleet processes (`fleet start --only scraper-watcher,therapist-import,email,http`, short locks as
 * in crash-steps.ts) share one scraper drop folder and one mail outbox folder, while this script
 * drops rounds of postcode files into the folder (in bursts of 5-15) and SIGKILLs (1 in 5: SIGTERMs)
 * a process every few seconds, starting it again each time: half the kills are aimed at a process
 * with a transaction open, a quarter at a moment a file is being imported (any process), the rest
 * at any moment. At the end it checks, as code, what the import
 * promises, and prints PASS/FAIL per check with its numbers (exit 1 on any FAIL):
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:55481/fleet_tdrill REDIS_URL=redis://127.0.0.1:6398 \
 *   QUEUE_PREFIX=tdrill npx tsx scripts/drill/therapist-crash.ts --dir /tmp/tdrill-run --seed 1 \
 *     [--processes 3] [--postcodes 80] [--per-file 60] [--rounds 6] [--feed-s 60] [--kill-every-ms 2500-5000]
 *
 * Rounds (each file written atomically, spread over `--feed-s` seconds, flat `<plz>.json`,
 * `YYYYMMDD/<plz>.json` with a new date folder per round, or `urgent/<plz>.json`):
 *   1  every therapist `new`; a few misnamed files; one file that is not JSON; some files with
 *      failing therapists (no last name, a bad email) and some with wrong metadata
 *   2  the same therapists `unchanged` with fresh scrape dates; staff edit protected fields before
 *   3  ~7% modified (phone, email, street, languages or last name: without a scraper id, matched by
 *      the secondary rule), ~3% deleted, ~3% with email and/or phone
 *      left empty, ~2% new
 *   4  the deleted ones listed again as `unchanged`; more staff edits and empty contact fields
 *   5+ more changes, ~2% new, half the deleted ones listed again; a tenth of the postcodes dropped
 *      again with identical bytes (rewritten in place, or copied into the new date folder): not
 *      imported again
 * After each round it waits until nothing is queued or importing, every run is closed and every
 * email sent; files that failed their job (`worker_died`, `gave_up`: killed twice while held) are
 * requeued with `fleet dlq requeue --all` as an operator would, and counted.
 *
 * Use a database, Redis and folders of the drill's own: the checks count every row. Names, emails
 * and phone numbers are made up (feed-names.ts) and searched for in the logs and emails.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { IMPORT_LOCK_PREFIX } from '../../libs/db/repositories/therapist-import-session.js';
import { ADULT_TP, ADULT_VT, CHILD_VT, scraperFile, therapistLine, type TherapistLine } from '../../workers/therapist-import/fixtures.js';
import { atomicWrite, namePart } from './feed-names.js';
import { fleetCli, startReadyFleet, stopProcess } from './fleet-process.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: '/tmp/tdrill-run' },
    seed: { type: 'string', default: '1' },
    processes: { type: 'string', default: '3' },
    postcodes: { type: 'string', default: '80' },
    'per-file': { type: 'string', default: '60' },
    rounds: { type: 'string', default: '6' },
    'feed-s': { type: 'string', default: '60' },
    'kill-every-ms': { type: 'string', default: '2500-5000' },
    'http-port': { type: 'string', default: '3480' },
  },
});

const dir = values.dir;
const dropDir = path.join(dir, 'scraper');
const outboxDir = path.join(dir, 'outbox');
const logDir = path.join(dir, 'logs');
const PROCESSES = Number(values.processes);
const POSTCODES = Number(values.postcodes);
const PER_FILE = Number(values['per-file']);
const ROUNDS = Number(values.rounds);
const FEED_MS = Number(values['feed-s']) * 1000;
const [KILL_MIN, KILL_MAX] = values['kill-every-ms'].split('-').map(Number) as [number, number];
const basePort = Number(values['http-port']);
const sql = postgres(process.env.DATABASE_URL!, { max: 4, onnotice: () => {} });
const redis = new Redis(process.env.REDIS_URL!);
const prefix = `{${process.env.QUEUE_PREFIX ?? 'fleet'}}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
const at = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
const say = (s: string) => console.log(`[${at()}] ${s}`);

// Deterministic randomness per seed (mulberry32).
let rngState = Number(values.seed) * 0x9e3779b9;
function rnd(): number {
  rngState = (rngState + 0x6d2b79f5) | 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
const between = (a: number, b: number) => a + Math.floor(rnd() * (b - a + 1));

// ---- fleet processes ---------------------------------------------------------------------------

function envFor(n: number): NodeJS.ProcessEnv {
  return {
    ...process.env,
    LOG_PRETTY: 'false',
    LOG_LEVEL: 'info',
    MAIL_DRIVER: 'outbox',
    MAIL_OUTBOX_DIR: outboxDir,
    SCRAPER_DROP_DIR: dropDir,
    SCRAPER_STABILITY_MS: '300',
    SCRAPER_RUN_QUIET_MS: '3000',
    SCRAPER_LEASE_CHECK_MS: '1000',
    BACKUP_DIR: path.join(dir, 'backup'),
    FAILED_DIR: path.join(dir, 'failed'),
    LOCAL_BUCKET_DIR: path.join(dir, 'bucket'),
    HTTP_PORT: String(basePort + n),
    RETRY_BACKOFF_SCALE: '0.05',
    WORKER_LOCK_DURATION_MS: '5000',
    WORKER_STALLED_INTERVAL_MS: '2000',
    SHUTDOWN_TIMEOUT_MS: '10000',
    DB_POOL_MAX: '6',
    MAIL_SWEEP_INTERVAL_MS: '5000',
    MAIL_SWEEP_PENDING_AFTER_MS: '10000',
    MAIL_SENDING_STALE_MS: '60000',
    FLEET_INSTANCE: `tdrill-p${n}`,
    FLEET_OPERATOR: 'tdrill',
  };
}

const fleets = new Map<number, ChildProcess>();
const logFile = (n: number) => path.join(logDir, `p${n}.log`);

async function startFleet(n: number): Promise<void> {
  fleets.set(n, await startReadyFleet({ only: 'scraper-watcher,therapist-import,email,http', env: envFor(n), logFile: logFile(n), port: basePort + n, name: `p${n}`, readyTries: 240 }));
}

function stopFleet(n: number, signal: NodeJS.Signals): Promise<number> {
  return stopProcess(fleets.get(n), signal);
}

function cli(args: string[]): Promise<{ code: number; out: string }> {
  return fleetCli(args, { ...envFor(0), LOG_LEVEL: 'warn' });
}

// ---- kills -------------------------------------------------------------------------------------

interface Kill {
  at: string;
  n: number;
  signal: NodeJS.Signals;
  goneMs: number;
  /** Files being imported when the signal went out. */
  open: number;
  /** Jobs the process held (BullMQ's lock owner is not known here: the queue's active jobs). */
  active: number;
  /** How the moment was chosen. */
  aim: string;
}
const kills: Kill[] = [];
let killing = false;

async function openFiles(): Promise<number> {
  const [r] = await sql`select count(*)::int n from fleet.therapist_import_files where status in ('queued','importing')`;
  return r!.n;
}

async function importing(): Promise<number> {
  const [r] = await sql`select count(*)::int n from fleet.therapist_import_files where status = 'importing'`;
  return r!.n;
}

/** A fleet process with a transaction open right now (its instance is in the backend's application_name). */
async function inTransaction(): Promise<{ n: number; query: string } | null> {
  const rows = await sql`select application_name a, left(regexp_replace(query, '[[:space:]]+', ' ', 'g'), 60) q from pg_stat_activity
    where datname = current_database() and application_name like 'curavani-fleet:tdrill-p%' and xact_start is not null and state <> 'idle'`;
  const ns = rows.map((r) => ({ n: Number(/tdrill-p(\d+)/.exec(r.a as string)?.[1]), query: r.q as string })).filter((x) => x.n >= 1 && x.n <= PROCESSES);
  return ns.length ? pick(ns) : null;
}

/**
 * Holds every postcode's import lock (as therapist-kill.int.test.ts holds one): imports that
 * claimed their file wait on it inside their transaction. Once one waits (and 300 ms more for
 * others to pile up), the process with the most waiting is the victim; `release` lets the rest go.
 */
async function holdImports(limitMs: number): Promise<{ n: number; waiting: number; release: () => Promise<void> } | null> {
  const c = await sql.reserve();
  const keys = postcodes.map((p) => `scope:${p.plz}`);
  await c`select count(pg_advisory_lock(hashtext(${IMPORT_LOCK_PREFIX} || k))) from unnest(${keys}::text[]) k`;
  const release = async () => {
    await c`select pg_advisory_unlock_all()`;
    c.release();
  };
  const waiters = async () =>
    (
      await sql`select application_name a from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'
        and wait_event = 'advisory' and application_name like 'curavani-fleet:tdrill-p%'`
    ).map((r) => Number(/tdrill-p(\d+)/.exec(r.a as string)?.[1]));
  const until = Date.now() + limitMs;
  while (Date.now() < until && !(await waiters()).length) await sleep(20);
  await sleep(300);
  const w = await waiters();
  if (!w.length) {
    await release();
    return null;
  }
  const per = new Map<number, number>();
  for (const n of w) per.set(n, (per.get(n) ?? 0) + 1);
  const [n, waiting] = [...per].sort((a, b) => b[1] - a[1])[0]!;
  return { n, waiting, release };
}

/**
 * Every KILL_MIN-KILL_MAX ms a process is stopped (1 in 5 with SIGTERM) and started again:
 * - a third of the kills hold every postcode's import lock and stop the process with the most
 *   imports waiting on it (claimed, inside their transaction), then let the others go;
 * - a quarter wait (up to 4 s) for a process with a transaction open (an import, a claim, a run
 *   closing, an email batch; other than the mail sweep's when there is one) and stop that one;
 * - a fifth wait for a file being imported and stop a random process;
 * - the rest land wherever (registering, sealing, catching up, idle).
 */
async function killLoop(): Promise<void> {
  while (killing) {
    await sleep(between(KILL_MIN, KILL_MAX));
    if (!killing) break;
    const mode = rnd();
    let n = between(1, PROCESSES);
    let aim = 'any moment';
    let release: (() => Promise<void>) | null = null;
    const until = Date.now() + 4000;
    if (mode < 0.35) {
      const held = await holdImports(6000);
      if (held) {
        n = held.n;
        aim = `imports held at the postcode lock: ${held.waiting}`;
        release = held.release;
      } else aim = 'any moment (no import to hold)';
    } else if (mode < 0.6) {
      while (Date.now() < until) {
        const busy = await inTransaction();
        if (busy !== null && (!busy.query.includes('deliveries') || Date.now() > until - 1000)) {
          n = busy.n;
          aim = `in a transaction: ${busy.query}`;
          break;
        }
        await sleep(10);
      }
    } else if (mode < 0.8) {
      while (Date.now() < until && (await importing()) === 0) await sleep(20);
      aim = 'a file importing';
    }
    const signal: NodeJS.Signals = rnd() < 0.2 ? 'SIGTERM' : 'SIGKILL';
    const [open, active] = await Promise.all([importing(), redis.llen(`${prefix}:therapist-import:active`)]);
    const stopping = stopFleet(n, signal);
    if (release) {
      // SIGKILL: the lock goes once the process is gone (its orphaned backends then get it). A
      // SIGTERM'd process waits for its jobs (up to SHUTDOWN_TIMEOUT_MS): they go on after 500 ms.
      await (signal === 'SIGTERM' ? sleep(500) : stopping);
      await release();
    }
    const goneMs = await stopping;
    kills.push({ at: at(), n, signal, goneMs, open, active, aim });
    await sleep(between(200, 1000));
    await startFleet(n);
  }
}

// ---- the drill's therapists --------------------------------------------------------------------

type Kind = 'ok' | 'child' | 'no-last-name' | 'bad-email';
interface Therapist {
  plz: string;
  j: number;
  /** Scraper id (null: matched by name and postcode). */
  id: string | null;
  kind: Kind;
  first: string;
  last: string;
  street: string;
  house: string;
  phone: string | null;
  email: string | null;
  languages: string[];
  methods: string[];
  /** Last non-empty values the scraper gave (what the platform must hold). */
  lastPhone: string | null;
  lastEmail: string | null;
  deletedInRound: number | null;
  /** Rounds the therapist is listed from (new ones come later). */
  fromRound: number;
  staff: Record<string, unknown> | null;
}

let serial = 0;
const phoneOf = () => `+49 30 77${String(between(0, 999_999)).padStart(6, '0')}`;
const emailOf = (s: number) => `p${s}.${between(1000, 9999)}.tdrill@example.org`;

function newTherapist(plz: string, j: number, round: number, kind: Kind = 'ok'): Therapist {
  const s = serial++;
  const phone = rnd() < 0.85 ? phoneOf() : null;
  const email = rnd() < 0.7 ? emailOf(s) : null;
  return {
    plz,
    j,
    id: j % 30 === 11 ? null : `dr${j}`,
    kind,
    first: `Vtd${namePart(s, 5)}`,
    last: `Ntd${namePart(s * 7 + 3, 5)}`,
    street: `${pick(['Markt', 'Linden', 'Berg', 'Garten', 'Kirch'])}${pick(['straße', 'weg', 'allee'])}`,
    house: String(between(1, 120)),
    phone,
    email,
    languages: rnd() < 0.5 ? ['Englisch'] : [],
    methods: kind === 'child' ? [CHILD_VT] : pick([[ADULT_TP], [ADULT_VT], [ADULT_TP, ADULT_VT], [ADULT_VT, CHILD_VT]]),
    lastPhone: phone,
    lastEmail: email,
    deletedInRound: null,
    fromRound: round,
    staff: null,
  };
}

type Layout = 'flat' | 'dated' | 'urgent';
interface Postcode {
  plz: string;
  layout: Layout;
  therapists: Therapist[];
  /** Bad metadata in every file of this postcode. */
  wrongMeta: 'total' | 'area' | null;
  lastBytes: string | null;
  lastPath: string | null;
}

const postcodes: Postcode[] = [];
for (let i = 0; i < POSTCODES; i++) {
  const plz = String(10000 + i * 1097);
  const layout: Layout = i % 5 === 4 ? 'urgent' : i % 5 < 2 ? 'flat' : 'dated';
  const therapists: Therapist[] = [];
  for (let j = 0; j < PER_FILE; j++) therapists.push(newTherapist(plz, j, 1, j % 25 === 7 ? 'child' : 'ok'));
  if (i % 7 === 3) {
    therapists.push(newTherapist(plz, PER_FILE, 1, 'no-last-name'));
    therapists.push(newTherapist(plz, PER_FILE + 1, 1, 'bad-email'));
  }
  postcodes.push({ plz, layout, therapists, wrongMeta: i % 9 === 5 ? 'total' : i % 9 === 6 ? 'area' : null, lastBytes: null, lastPath: null });
}
const allTherapists = () => postcodes.flatMap((p) => p.therapists);

function lineOf(t: Therapist, status: string): TherapistLine {
  const line = therapistLine({
    id: t.id,
    status,
    first: t.first,
    last: t.kind === 'no-last-name' ? null : t.last,
    street: t.street,
    house: t.house,
    plz: t.plz,
    city: 'Drillstadt',
    phone: t.phone,
    email: t.kind === 'bad-email' ? 'not-an-address' : t.email,
    languages: t.languages,
    methods: t.methods,
    lastModified: new Date(Date.now() - between(0, 86_400_000)).toISOString().replace('Z', ''),
  });
  return line;
}

/** Expected therapists per content hash written (a file's therapists as the drill wrote them). */
const written = new Map<string, { path: string; therapists: number; round: number }>();
const misnamed: string[] = [];
const dateOf = (round: number) => `202612${String(round).padStart(2, '0')}`;

function fileFor(p: Postcode, round: number, statusOf: (t: Therapist) => string | null): { rel: string; bytes: string } {
  const lines = p.therapists
    .filter((t) => t.fromRound <= round)
    .map((t) => [t, statusOf(t)] as const)
    .filter(([, s]) => s !== null)
    .map(([t, s]) => lineOf(t, s!));
  const total = p.wrongMeta === 'total' ? lines.length + 3 : lines.length;
  const bytes = scraperFile(lines, {
    scrape_id: `${p.plz}_${dateOf(round)}`,
    scrape_date: new Date().toISOString().replace('Z', ''),
    postcode_area: p.wrongMeta === 'area' ? '99XXX' : `${p.plz.slice(0, 2)}XXX`,
    total_therapists: total,
  });
  const rel = p.layout === 'flat' ? `${p.plz}.json` : p.layout === 'urgent' ? `urgent/${p.plz}.json` : `${dateOf(round)}/${p.plz}.json`;
  return { rel, bytes };
}

const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

async function drop(rel: string, bytes: string, round: number, therapists: number): Promise<void> {
  await atomicWrite(path.join(dropDir, rel), bytes);
  if (therapists >= 0) written.set(sha256(bytes), { path: rel, therapists, round });
}

/** Writes the files in bursts of 5-15 (so that imports run at once), spread over FEED_MS. */
async function feed(files: Array<() => Promise<void>>): Promise<void> {
  const shuffled = files.sort(() => rnd() - 0.5);
  const bursts: Array<Array<() => Promise<void>>> = [];
  for (let i = 0; i < shuffled.length; ) {
    const size = between(5, 15);
    bursts.push(shuffled.slice(i, i + size));
    i += size;
  }
  const gap = FEED_MS / Math.max(bursts.length, 1);
  for (const b of bursts) {
    for (const f of b) await f();
    await sleep(gap * (0.5 + rnd()));
  }
}

// ---- staff edits (protected fields) --------------------------------------------------------------

/** Platform therapist ids of the drill's therapists, by scope and external id, or name and postcode. */
async function platformIds(): Promise<Map<Therapist, number[]>> {
  const ext = await sql`select scope, external_id, therapist_id from fleet.therapist_external_ids where therapist_id is not null`;
  const byExt = new Map(ext.map((r) => [`${r.scope}/${r.external_id}`, Number(r.therapist_id)]));
  const rows = await sql`select id, vorname, nachname, plz from therapist_service.therapeuten`;
  const byName = new Map<string, number[]>();
  for (const r of rows) byName.set(`${r.vorname}/${r.nachname}/${r.plz}`, [...(byName.get(`${r.vorname}/${r.nachname}/${r.plz}`) ?? []), Number(r.id)]);
  const out = new Map<Therapist, number[]>();
  for (const t of allTherapists()) {
    const named = byName.get(`${t.first}/${t.last}/${t.plz}`) ?? [];
    if (t.id === null) out.set(t, named);
    else {
      const e = byExt.get(`${t.plz}/${t.id}`);
      out.set(t, e === undefined ? named : [e, ...named.filter((x) => x !== e)]);
    }
  }
  return out;
}

async function staffEdits(share: number): Promise<number> {
  const ids = await platformIds();
  let n = 0;
  for (const t of allTherapists()) {
    if (t.kind !== 'ok' || t.deletedInRound !== null || t.staff || rnd() >= share) continue;
    const [id] = ids.get(t) ?? [];
    if (id === undefined) continue;
    const blocked = rnd() < 0.25;
    const staff: Record<string, unknown> = {
      kassensitz: false,
      potenziell_verfuegbar: true,
      potenziell_verfuegbar_notizen: `drill note ${n}`,
      ueber_curavani_informiert: true,
      naechster_kontakt_moeglich: '2027-01-15',
      bevorzugte_diagnosen: ['F32'],
      alter_min: 25,
      alter_max: 60,
      geschlechtspraeferenz: 'egal',
      arbeitszeiten: { mo: ['09:00-12:00'] },
      bevorzugt_gruppentherapie: true,
      letzter_kontakt_email: '2026-11-30',
      letzter_kontakt_telefon: '2026-12-01',
      ...(blocked ? { status: 'gesperrt', sperrgrund: 'drill', sperrdatum: '2026-12-02' } : {}),
    };
    await sql`update therapist_service.therapeuten set kassensitz = false, potenziell_verfuegbar = true,
      potenziell_verfuegbar_notizen = ${staff.potenziell_verfuegbar_notizen as string}, ueber_curavani_informiert = true,
      naechster_kontakt_moeglich = '2027-01-15', bevorzugte_diagnosen = '["F32"]'::jsonb, alter_min = 25, alter_max = 60,
      geschlechtspraeferenz = 'egal', arbeitszeiten = '{"mo":["09:00-12:00"]}'::jsonb, bevorzugt_gruppentherapie = true,
      letzter_kontakt_email = '2026-11-30', letzter_kontakt_telefon = '2026-12-01',
      status = case when ${blocked} then 'gesperrt' else status end,
      sperrgrund = case when ${blocked} then 'drill' else sperrgrund end,
      sperrdatum = case when ${blocked} then date '2026-12-02' else sperrdatum end
      where id = ${id}`;
    t.staff = staff;
    n++;
  }
  return n;
}

// ---- settling ------------------------------------------------------------------------------------

async function importJobsLeft(): Promise<number> {
  const base = `${prefix}:therapist-import`;
  const [a, w, d, p] = await Promise.all([redis.llen(`${base}:active`), redis.llen(`${base}:wait`), redis.zcard(`${base}:delayed`), redis.zcard(`${base}:prioritized`)]);
  return a + w + d + p;
}

async function settled(): Promise<string | null> {
  const [r] = await sql`select
    (select count(*)::int from fleet.therapist_import_files where status in ('queued','importing')) open,
    (select count(*)::int from fleet.therapist_import_runs where state <> 'closed') runs,
    (select count(*)::int from fleet.deliveries where status in ('pending','sending')) mail`;
  const hashes = [...written.keys()];
  const [reg] = await sql`select count(distinct content_hash)::int n from fleet.therapist_import_files where content_hash = any(${hashes})`;
  const jobs = await importJobsLeft();
  if (r!.open || r!.runs || r!.mail || jobs || reg!.n < hashes.length) {
    return `open files ${r!.open}, open runs ${r!.runs}, mail pending ${r!.mail}, import jobs ${jobs}, contents registered ${reg!.n}/${hashes.length}`;
  }
  return null;
}

async function settle(limitMs: number): Promise<void> {
  const start = Date.now();
  let last: string | null = '';
  while (Date.now() - start < limitMs) {
    last = await settled();
    if (last === null) return;
    await sleep(1000);
  }
  throw new Error(`not settled after ${limitMs} ms: ${last}`);
}

const requeues: Array<{ round: number; files: number; codes: string }> = [];
/** Times each file (by id) was requeued after it failed its job. */
const requeuedFiles = new Map<number, number>();

/** Files that failed their job (killed twice while held): requeued as an operator would. */
async function requeueGaveUp(round: number): Promise<void> {
  const failed = await sql`select id from fleet.therapist_import_files where status = 'failed' and error_code in ('gave_up','worker_died')`;
  const rows = await sql`select error_code, count(*)::int n from fleet.therapist_import_files where status = 'failed' and error_code in ('gave_up','worker_died') group by 1`;
  if (!rows.length) return;
  for (const f of failed) requeuedFiles.set(Number(f.id), (requeuedFiles.get(Number(f.id)) ?? 0) + 1);
  const files = rows.reduce((a, r) => a + r.n, 0);
  requeues.push({ round, files, codes: rows.map((r) => `${r.error_code} ${r.n}`).join(', ') });
  const r = await cli(['dlq', 'requeue', '--all', '--queue', 'therapist-import', '--reason', 'crash drill: killed twice while held']);
  say(`round ${round}: ${files} files failed their job (${requeues.at(-1)!.codes}); fleet dlq requeue --all: exit ${r.code}`);
  if (r.code !== 0) throw new Error(`fleet dlq requeue: ${r.out.slice(0, 500)}`);
}

// ---- rounds --------------------------------------------------------------------------------------

const roundNotes: Array<Record<string, unknown>> = [];

async function round(r: number): Promise<void> {
  const note: Record<string, unknown> = { round: r };
  const files: Array<() => Promise<void>> = [];
  const live = (t: Therapist) => t.kind === 'ok' && t.deletedInRound === null;
  const statusOf = new Map<Therapist, string | null>();
  let modified = 0;
  let deleted = 0;
  let blanked = 0;
  let added = 0;
  let relisted = 0;
  let renamed = 0;
  // Round 5: a tenth of the postcodes get their last file's bytes again (decided before any change).
  const identicalSet = new Set(r >= 5 ? postcodes.filter(() => rnd() < 0.1) : []);
  if (r === 1) {
    for (const t of allTherapists()) statusOf.set(t, 'new');
  } else {
    if (r === 2 || r === 4) note.staffEdits = await staffEdits(0.05);
    for (const p of postcodes) {
      if (identicalSet.has(p)) continue;
      if (r === 3 || r >= 5) {
        for (let k = 0; k < Math.max(1, Math.round(PER_FILE * 0.02)); k++) {
          const t = newTherapist(p.plz, p.therapists.length, r);
          p.therapists.push(t);
          statusOf.set(t, 'new');
          added++;
        }
      }
      for (const t of p.therapists) {
        if (statusOf.has(t)) continue;
        if (t.deletedInRound !== null) {
          // Listed again as unchanged in round 4 (all) and later ones (half); else gone from the file.
          const again = r === 4 || (r >= 5 && rnd() < 0.5);
          statusOf.set(t, again ? 'unchanged' : null);
          if (again) relisted++;
          continue;
        }
        let status = 'unchanged';
        if (r >= 3 && live(t)) {
          const x = rnd();
          if (x < 0.03 && r === 3) {
            t.deletedInRound = r;
            status = 'deleted';
            deleted++;
          } else if (x < 0.1) {
            const what = pick(['phone', 'email', 'street', 'languages', 'name']);
            // A new last name: matched by its scraper id, or (without one) by the secondary rule
            // (same first name, postcode, city, street, title and email).
            if (what === 'name') {
              t.last = `Ntd${namePart(serial++ * 7 + 3, 5)}`;
              renamed++;
            }
            if (what === 'phone') t.phone = phoneOf();
            if (what === 'email') t.email = emailOf(serial++);
            if (what === 'street') t.house = String(Number(t.house) + 1);
            if (what === 'languages') t.languages = [...t.languages, 'Französisch'];
            status = 'modified';
            modified++;
          } else if (x < 0.13 && (t.phone || t.email)) {
            // The scraper lost the contact details: the platform keeps its values.
            if (rnd() < 0.5 || !t.email) t.phone = null;
            else t.email = null;
            status = 'modified';
            blanked++;
          } else if (x < 0.16 && !t.phone) {
            t.phone = phoneOf(); // a blanked one comes back (maybe changed)
            status = 'modified';
            modified++;
          }
        }
        statusOf.set(t, status);
      }
    }
  }
  for (const t of allTherapists()) {
    if (t.phone) t.lastPhone = t.phone;
    if (t.email) t.lastEmail = t.email;
  }
  Object.assign(note, { modified, deleted, blanked, added, relisted, renamed });
  let identical = 0;
  for (const p of postcodes) {
    if (identicalSet.has(p) && p.lastBytes) {
      // The same content again: rewritten in place, or copied into the new date folder.
      const rel = p.layout === 'dated' ? `${dateOf(r)}/${p.plz}.json` : p.lastPath!;
      const bytes = p.lastBytes;
      files.push(() => drop(rel, bytes, r, -1));
      identical++;
      continue;
    }
    const { rel, bytes } = fileFor(p, r, (t) => statusOf.get(t) ?? null);
    const count = p.therapists.filter((t) => (statusOf.get(t) ?? null) !== null).length;
    p.lastBytes = bytes;
    p.lastPath = rel;
    files.push(() => drop(rel, bytes, r, count));
  }
  note.identical = identical;
  if (r === 1) {
    // Misnamed files (skipped once each) and one file that is not JSON (failed, 0 therapists).
    for (const rel of ['notes.json', '5207.json', `${dateOf(r)}/liste.json`, 'urgent/123456.json', 'export.csv']) {
      misnamed.push(rel);
      files.push(() => drop(rel, scraperFile([lineOf(postcodes[0]!.therapists[0]!, 'new')]), r, -2));
    }
    files.push(() => drop('99991.json', '{"metadata": {"scrape_id": "broken"}, "therapists": [', r, 0));
  }
  note.files = files.length;
  say(`round ${r}: ${files.length} files (${JSON.stringify(note)})`);
  killing = true;
  const killer = killLoop();
  const k0 = kills.length;
  await feed(files);
  // Keep killing while the round's files are imported, then let it settle without kills.
  const stopAt = Date.now() + 60_000;
  while (Date.now() < stopAt && ((await openFiles()) > 0 || (await importJobsLeft()) > 0)) await sleep(500);
  killing = false;
  await killer;
  note.kills = kills.length - k0;
  await settle(180_000).catch(async (err) => {
    await requeueGaveUp(r);
    await settle(180_000).catch(() => {
      throw err;
    });
  });
  await requeueGaveUp(r);
  await settle(180_000);
  note.doneAt = at();
  roundNotes.push(note);
  say(`round ${r} settled: ${note.kills} kills`);
}

// ---- checks --------------------------------------------------------------------------------------

const results: Array<{ check: string; ok: boolean; detail: string }> = [];
function check(name: string, ok: boolean, detail: string): void {
  results.push({ check: name, ok, detail });
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}: ${detail}`);
}
const PARTS = ['created', 'updated', 'unchanged', 'deactivated', 'skipped', 'failed'] as const;
type Counts = Record<string, number>;

async function checks(): Promise<void> {
  const files = await sql`select id, run_id, path, content_hash, status, counts, error_code, reason, attempts, failures, status_mismatches from fleet.therapist_import_files order by id`;
  const live = files.filter((f) => f.status !== 'skipped');

  // 1. Every content written reached a final status exactly once.
  const perHash = new Map<string, typeof files>();
  for (const f of files) if (f.content_hash) perHash.set(f.content_hash, [...(perHash.get(f.content_hash) ?? []), f] as typeof files);
  let missing = 0;
  let twice = 0;
  let notFinal = 0;
  for (const [hash] of written) {
    const rows = (perHash.get(hash) ?? []).filter((f) => f.status !== 'skipped');
    if (rows.length === 0) missing++;
    if (rows.length > 1) twice++;
    if (rows.some((f) => !['imported', 'partial', 'failed'].includes(f.status))) notFinal++;
  }
  const statuses: Record<string, number> = {};
  for (const f of files) statuses[f.status] = (statuses[f.status] ?? 0) + 1;
  check('each content imported exactly once', !missing && !twice && !notFinal, `${written.size} contents written, rows by status ${JSON.stringify(statuses)}; no live row ${missing}, more than one ${twice}, not final ${notFinal}`);
  const misnamedRows = files.filter((f) => misnamed.includes(f.path));
  check('misnamed files skipped once each', misnamedRows.length === misnamed.length && misnamedRows.every((f) => f.status === 'skipped'), `${misnamed.length} misnamed, ${misnamedRows.length} rows (${misnamedRows.map((f) => f.status).join(',')})`);
  const failedJob = live.filter((f) => f.status === 'failed' && f.error_code !== 'file_unreadable');
  check('no file left failed by its job', failedJob.length === 0, `${failedJob.length} (${failedJob.map((f) => `${f.path} ${f.error_code}`).join('; ')})`);

  // 2. Per file: the parts add up to the therapists in the file.
  let sumBad = 0;
  let totalBad = 0;
  let therapistsInFiles = 0;
  for (const f of live) {
    const c = (f.counts ?? null) as Counts | null;
    const w = written.get(f.content_hash as string);
    const total = c?.total ?? 0;
    if (c && PARTS.reduce((a, k) => a + (c[k] ?? 0), 0) !== total) sumBad++;
    if (w && w.therapists !== total) totalBad++;
    therapistsInFiles += total;
  }
  check('file counts add up to the therapists in the file', !sumBad && !totalBad, `${live.length} files, ${therapistsInFiles} therapist lines; parts != total ${sumBad}, total != lines written ${totalBad}`);

  // 3. Runs: totals are the sum of their files; every run closed; one summary email each.
  const runs = await sql`select id, state, counts, file_count, summary_delivery_id from fleet.therapist_import_runs order by id`;
  const deliveries = await sql`select idempotency_key, status from fleet.deliveries where idempotency_key like 'therapist-import.run.%'`;
  const emls = new Map<string, number>();
  for (const name of (await readdir(outboxDir)).filter((f) => f.endsWith('.eml'))) {
    // Headers unfolded first: a long key is folded onto the next line.
    const text = (await readFile(path.join(outboxDir, name), 'utf8')).replace(/\r?\n[ \t]+/g, ' ');
    const key = /^X-Fleet-Idempotency-Key: (.+)$/im.exec(text)?.[1]?.trim();
    if (key?.startsWith('therapist-import.run.')) emls.set(key, (emls.get(key) ?? 0) + 1);
  }
  let runSumBad = 0;
  let notClosed = 0;
  let summaryBad = 0;
  let followUps = 0;
  let followUpBad = 0;
  let emptyRuns = 0;
  for (const r of runs) {
    if (r.state !== 'closed') notClosed++;
    const own = live.filter((f) => Number(f.run_id) === Number(r.id));
    const c = (r.counts ?? {}) as Counts;
    for (const k of [...PARTS, 'total']) {
      const s = own.reduce((a, f) => a + (((f.counts ?? {}) as Counts)[k] ?? 0), 0);
      if ((c[k] ?? 0) !== s) runSumBad++;
    }
    const key = `therapist-import.run.${r.id}`;
    const sent = deliveries.filter((d) => d.idempotency_key === key && d.status === 'sent').length;
    const follow = deliveries.filter((d) => String(d.idempotency_key).startsWith(`${key}.closed.`));
    followUps += follow.length;
    // A follow-up ("Nachtrag") only for a run that a requeue opened again, at most one per requeue.
    const requeuedHere = own.reduce((a, f) => a + (requeuedFiles.get(Number(f.id)) ?? 0), 0);
    if (follow.length > requeuedHere || (requeuedHere > 0 && follow.length === 0)) followUpBad++;
    if (follow.some((d) => d.status !== 'sent' || emls.get(d.idempotency_key as string) !== 1)) followUpBad++;
    // A run left without files (its watcher killed between opening it and registering its first
    // file; the next one sealed it) closes without a summary, by design (process-therapist-file.ts).
    if (own.length === 0 && Number(r.file_count) === 0) {
      emptyRuns++;
      if (sent || emls.has(key) || r.summary_delivery_id) summaryBad++;
    } else if (sent !== 1 || emls.get(key) !== 1 || !r.summary_delivery_id) summaryBad++;
  }
  const strayEml = [...emls.keys()].filter((k) => !deliveries.some((d) => d.idempotency_key === k)).length;
  check('run totals are the sum of their files', runSumBad === 0, `${runs.length} runs, mismatching figures ${runSumBad}`);
  check(
    'every run closed with exactly one staff summary',
    !notClosed && !summaryBad && !strayEml && !followUpBad,
    `${runs.length} runs (${emptyRuns} without files: no summary), not closed ${notClosed}, runs with files without exactly one sent summary and one .eml (or empty ones with one) ${summaryBad}; .eml files ${[...emls.values()].reduce((a, b) => a + b, 0)}; follow-up summaries after requeues ${followUps} (runs where they do not match the requeues ${followUpBad}); .eml without a delivery ${strayEml}`,
  );

  // 4. Each drill therapist is one platform therapist; (scope, external id) -> one therapist.
  const ids = await platformIds();
  const shouldExist = allTherapists().filter((t) => t.kind === 'ok');
  let none = 0;
  let many = 0;
  let unexpected = 0;
  for (const t of allTherapists()) {
    const n = ids.get(t)!.length;
    if (t.kind === 'ok') {
      if (n === 0) none++;
      if (n > 1) many++;
    } else if (n > 0) unexpected++;
  }
  const [platform] = await sql`select count(*)::int n from therapist_service.therapeuten`;
  const [extTwice] = await sql`select count(*)::int n from (select therapist_id from fleet.therapist_external_ids where therapist_id is not null group by 1 having count(*) > 1) x`;
  check(
    'each therapist exactly once on the platform',
    !none && !many && !unexpected && platform!.n === shouldExist.length && !extTwice!.n,
    `${shouldExist.length} expected, platform rows ${platform!.n}; missing ${none}, more than one ${many}, skipped/failed ones present ${unexpected}, therapists with two external ids ${extTwice!.n}`,
  );

  // 5. Events against the reports.
  const sums: Counts = {};
  for (const f of live) for (const k of PARTS) sums[k] = (sums[k] ?? 0) + (((f.counts ?? {}) as Counts)[k] ?? 0);
  const ev = await sql`select event_type, count(*)::int n, count(distinct key)::int keys, count(distinct event_id)::int ids from fleet.outbox group by 1`;
  const e = Object.fromEntries(ev.map((r) => [r.event_type, r]));
  const created = e['therapist.created'] ?? { n: 0, keys: 0, ids: 0 };
  check('therapist.created events = therapists created', created.n === sums.created && created.keys === created.n && created.n === platform!.n, `${created.n} events (${created.keys} therapists), created in reports ${sums.created}, platform rows ${platform!.n}`);
  const updated = e['therapist.updated'] ?? { n: 0 };
  const deactivated = e['therapist.deactivated'] ?? { n: 0, keys: 0 };
  // Deactivated: once per therapist the scraper deleted (one staff blocked keeps `gesperrt`: no event).
  const [deactivatedIds] = await sql`select count(*)::int n from fleet.outbox o where event_type = 'therapist.deactivated'
    and exists (select 1 from therapist_service.therapeuten t where t.id = o.key::int and t.status = 'inaktiv')`;
  const expectDeactivated = allTherapists().filter((t) => t.kind === 'ok' && t.deletedInRound !== null && t.staff?.status !== 'gesperrt').length;
  check(
    'therapist.updated / deactivated events = reports',
    updated.n === sums.updated && deactivated.n === sums.deactivated && deactivated.keys === deactivated.n && deactivated.n === expectDeactivated && deactivatedIds!.n === deactivated.n,
    `updated ${updated.n} events, ${sums.updated} in reports; deactivated ${deactivated.n} events (${deactivated.keys} therapists, ${deactivatedIds!.n} inactive now), ${sums.deactivated} in reports, ${expectDeactivated} deleted by the scraper and not blocked`,
  );
  // One per file outcome: a file that failed its job and was requeued has one for each.
  const completedPerFile = await sql`select (payload->>'fileId')::bigint f, count(*)::int n from fleet.outbox where event_type = 'therapist_import.completed' group by 1`;
  const completedOf = new Map(completedPerFile.map((r) => [Number(r.f), r.n as number]));
  const completedBad = live.filter((f) => (completedOf.get(Number(f.id)) ?? 0) !== 1 + (requeuedFiles.get(Number(f.id)) ?? 0)).length;
  const completedN = completedPerFile.reduce((a, r) => a + r.n, 0);
  check('therapist_import.completed once per file outcome (once more per requeue)', !completedBad, `${completedN} events for ${live.length} files (${requeuedFiles.size} requeued); files with another number ${completedBad}`);
  const [evDup] = await sql`select count(*)::int n from (select event_id from fleet.outbox group by 1 having count(*) > 1) x`;
  check('no event id twice', !evDup!.n, `${ev.reduce((a, r) => a + r.n, 0)} events, ids twice ${evDup!.n}`);

  // 6. Fields: protected ones kept, contact details never blanked, deactivated stay inactive.
  const rows = await sql`select * from therapist_service.therapeuten`;
  const byId = new Map(rows.map((r) => [Number(r.id), r]));
  let staffBad = 0;
  let staffN = 0;
  let contactBad = 0;
  let blankedKept = 0;
  let inactiveBad = 0;
  let deletedN = 0;
  let statusBad = 0;
  let fieldsBad = 0;
  const norm = (v: unknown) => JSON.stringify(v instanceof Date ? v.toISOString().slice(0, 10) : v);
  for (const t of shouldExist) {
    const row = byId.get(ids.get(t)![0]!);
    if (!row) continue;
    if (t.staff) {
      staffN++;
      for (const [k, v] of Object.entries(t.staff)) if (norm(row[k]) !== norm(v)) staffBad++;
    }
    if ((row.telefon ?? null) !== t.lastPhone || (row.email ?? null) !== t.lastEmail) contactBad++;
    else if ((t.lastPhone && !t.phone) || (t.lastEmail && !t.email)) blankedKept++;
    const expectStatus = t.staff?.status === 'gesperrt' ? 'gesperrt' : t.deletedInRound !== null ? 'inaktiv' : 'aktiv';
    if (t.deletedInRound !== null) {
      deletedN++;
      if (row.status !== expectStatus) inactiveBad++;
    } else if (row.status !== expectStatus) statusBad++;
    if (row.vorname !== t.first || row.nachname !== t.last || row.strasse !== `${t.street} ${t.house}` || JSON.stringify(row.fremdsprachen ?? []) !== JSON.stringify(t.languages)) fieldsBad++;
  }
  check('protected fields survived staff edits', staffN > 0 && !staffBad, `${staffN} therapists edited by staff (${shouldExist.filter((t) => t.staff?.status === 'gesperrt').length} blocked), fields changed by the import ${staffBad}`);
  check('phone and email as last given, never blanked', !contactBad && blankedKept > 0, `${shouldExist.length} therapists; differing ${contactBad}; kept although the last file had none ${blankedKept}`);
  check('deactivated therapists stayed inactive', deletedN > 0 && !inactiveBad, `${deletedN} deleted by the scraper (listed again later as unchanged: ${roundNotes.reduce((a, n) => a + Number(n.relisted ?? 0), 0)} lines), not inactive at the end ${inactiveBad}`);
  check('other statuses and fields as the scraper last gave them', !statusBad && !fieldsBad, `status differing ${statusBad}, name/street/languages differing ${fieldsBad}`);

  // 7. No personal data in logs, emails, reports.
  const PII = /tdrill@example\.org|Vtd[A-Z][a-z]{4}|Ntd[A-Z][a-z]{4}|\+49 30 77\d{6}/;
  let lines = 0;
  let pii = 0;
  let errors = 0;
  const otherErrors: string[] = [];
  const dlqFileIds: number[] = [];
  for (const f of await readdir(logDir)) {
    for (const line of (await readFile(path.join(logDir, f), 'utf8')).split('\n')) {
      if (!line) continue;
      lines++;
      if (PII.test(line)) pii++;
      if (/"level":(50|60)/.test(line)) {
        errors++;
        // Expected: a job whose process was killed twice while it held it (BullMQ's maxStalledCount is 1).
        if (!line.includes('"msg":"job failed outside its processor: moved to the dead-letter queue"')) otherErrors.push(line.slice(0, 300));
        else dlqFileIds.push(Number(/\.file\.(\d+)"/.exec(line)?.[1]));
      }
    }
  }
  let piiMail = 0;
  for (const name of (await readdir(outboxDir)).filter((f) => f.endsWith('.eml'))) if (PII.test(await readFile(path.join(outboxDir, name), 'utf8'))) piiMail++;
  const piiReports = files.filter((f) => PII.test(JSON.stringify(f))).length;
  // Each dead letter is of a job that died twice: its file then failed (and was requeued by the
  // drill), or it had been imported already (killed after the commit): nothing to do, its dead
  // letter stays for an operator to discard (a requeue runs the job, which finds the file done).
  const deadLettered = [...requeuedFiles.values()].reduce((a, b) => a + b, 0);
  const doneBefore = dlqFileIds.filter((id) => !requeuedFiles.has(id));
  const doneBeforeOk = doneBefore.every((id) => ['imported', 'partial'].includes(String(files.find((f) => Number(f.id) === id)?.status)));
  const dlqLeft = (await redis.keys(`${prefix}:therapist-import-dlq:*`)).filter((k) => !/:(meta|marker|id|events|wait|paused|completed|failed|active|delayed|prioritized|stalled-check|pc)$/.test(k)).length;
  check(
    'error-level log lines only for jobs that died twice',
    otherErrors.length === 0 && errors === dlqFileIds.length && dlqFileIds.length - doneBefore.length === deadLettered && doneBeforeOk,
    `${errors} error lines: dead letters of files that then failed and were requeued ${dlqFileIds.length - doneBefore.length} (requeued ${deadLettered}), of files already imported ${doneBefore.length} (all imported: ${doneBeforeOk}); dead letters left ${dlqLeft}; others ${otherErrors.length}${otherErrors.length ? `: ${otherErrors.slice(0, 3).join(' | ')}` : ''}`,
  );
  check('no personal data in logs, emails or reports', !pii && !piiMail && !piiReports, `${lines} log lines (${errors} at error level), with personal data ${pii}; emails with it ${piiMail}; file reports with it ${piiReports}`);
}

// ---- main ----------------------------------------------------------------------------------------

await rm(dir, { recursive: true, force: true });
for (const d of [dropDir, outboxDir, logDir]) await mkdir(d, { recursive: true });
let exitCode = 1;
try {
  const m = await cli(['migrate']);
  if (m.code !== 0) throw new Error(`fleet migrate: ${m.out.slice(0, 300)}`);
  say(`seed ${values.seed}: ${PROCESSES} processes, ${POSTCODES} postcodes x ${PER_FILE}, ${ROUNDS} rounds`);
  for (let n = 1; n <= PROCESSES; n++) await startFleet(n);
  for (let r = 1; r <= ROUNDS; r++) await round(r);
  for (let n = 1; n <= PROCESSES; n++) await stopFleet(n, 'SIGTERM');
  const stalled = (await Promise.all([...Array(PROCESSES)].map((_, i) => readFile(logFile(i + 1), 'utf8')))).join('\n').split('\n').filter((l) => l.includes('stalled')).length;
  const bySignal = (s: string) => kills.filter((k) => k.signal === s).length;
  console.log(
    JSON.stringify(
      {
        seed: values.seed,
        durationS: Math.round((Date.now() - t0) / 1000),
        rounds: roundNotes,
        contentsWritten: written.size,
        kills: { total: kills.length, SIGKILL: bySignal('SIGKILL'), SIGTERM: bySignal('SIGTERM'), withAFileImporting: kills.filter((k) => k.open > 0).length, withJobsActive: kills.filter((k) => k.active > 0).length, aimedAtATransaction: kills.filter((k) => k.aim.startsWith('in a transaction')).length, atHeldImports: kills.filter((k) => k.aim.startsWith('imports held')).length },
        sigtermStopMs: kills.filter((k) => k.signal === 'SIGTERM').map((k) => k.goneMs),
        requeues,
        stalledLogLines: stalled,
      },
      null,
      1,
    ),
  );
  await checks();
  exitCode = results.every((r) => r.ok) ? 0 : 1;
  await writeFile(path.join(dir, 'results.json'), JSON.stringify({ results, kills, rounds: roundNotes, requeues }, null, 1));
} catch (err) {
  console.error(err);
} finally {
  for (const n of fleets.keys()) await stopFleet(n, 'SIGKILL');
  await sql.end();
  redis.disconnect();
}
console.log(`${results.filter((r) => r.ok).length}/${results.length} checks passed; ${kills.length} kills; ${Math.round((Date.now() - t0) / 1000)} s`);
process.exit(exitCode);
