import type { ChildProcess } from 'node:child_process';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { patienten, platzsuche, type PatientStatus } from '../../libs/db/schema/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { ResendStandIn } from '../../libs/testing/resend-stand-in.js';
import { killTestEnv, spawnFleetProcess, type FleetProcess } from './fixtures/spawn-fleet.js';

/**
 * Issue 5, acceptance: "killing the worker mid-way and restarting sends each eligible
 * patient exactly one email", with a real kill. A real fleet process (fixtures/fleet-process.ts:
 * roles `weekly` and `email` through startFleet, as `fleet start --only weekly,email`) catches
 * up this week's fan-out at start, records one delivery per patient and sends them in batches
 * to the Resend stand-in (real `resend` SDK). A small proxy in front of the stand-in lets a
 * batch request through to the provider and then SIGKILLs the process before the answer
 * reaches it: the worst moment (the provider sent the emails, the database does not know).
 * A second process is started at once; BullMQ puts the dead process's jobs back (short
 * WORKER_LOCK_DURATION_MS / WORKER_STALLED_INTERVAL_MS) and everything finishes.
 */
const WEEK = '2026-W48';
/** Monday 23 November 2026, 09:00:05 Berlin: the schedule (Monday 09:00) is due for 2026-W48. */
const MONDAY_0900 = Date.parse('2026-11-23T08:00:05Z');
const ELIGIBLE = 300;
/** The process is killed on the first provider request after this many emails went out. */
const KILL_AFTER_MESSAGES = 60;

let db: TestDatabase;
let ctx: FleetContext;
let cleanupRedis: () => Promise<void>;
let standIn: ResendStandIn;
let proxy: Server;
let proxyUrl = '';
let env: Record<string, string>;
const children: ChildProcess[] = [];

/** Decides, after the provider answered a request, whether the process dies before it hears the answer. */
let onProviderAnswer: () => Promise<boolean> = async () => false;

const hopByHop = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length']);
function startProxy(target: string): Promise<string> {
  proxy = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const up = request(`${target}${req.url ?? '/'}`, { method: req.method, headers: { ...req.headers, host: new URL(target).host } }, (upRes) => {
        const parts: Buffer[] = [];
        upRes.on('data', (c: Buffer) => parts.push(c));
        upRes.on('end', () => {
          void onProviderAnswer().then((cut) => {
            if (cut) return void res.destroy();
            const body = Buffer.concat(parts);
            const headers: IncomingHttpHeaders = Object.fromEntries(Object.entries(upRes.headers).filter(([k]) => !hopByHop.has(k)));
            res.writeHead(upRes.statusCode ?? 502, { ...headers, 'content-length': String(body.length) });
            res.end(body);
          });
        });
      });
      up.on('error', (err) => res.destroy(err));
      up.end(Buffer.concat(chunks));
    });
  });
  return new Promise((resolve) => proxy.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`)));
}

function startFleetProcess(): FleetProcess {
  const p = spawnFleetProcess(env);
  children.push(p.child);
  return p;
}

async function deliveryStatuses(): Promise<Record<string, number>> {
  const rows = await ctx.database.db.execute<{ status: string; n: number }>(sql`select status, count(*)::int as n from fleet.deliveries group by status`);
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}
async function queueCounts() {
  const out: Record<string, Record<string, number>> = {};
  for (const q of ['weekly-fanout', 'weekly-status', 'email', 'weekly-fanout-dlq', 'weekly-status-dlq', 'email-dlq']) {
    out[q] = await ctx.queues.queue(q).getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed');
  }
  return out;
}
async function state() {
  return { deliveries: await deliveryStatuses(), queues: await queueCounts(), provider: standIn.stats() };
}
async function until(what: string, fn: () => Promise<boolean>, timeoutMs: number, p?: FleetProcess) {
  const start = Date.now();
  while (!(await fn())) {
    if (Date.now() - start > timeoutMs) {
      throw new Error(`${what}: not within ${timeoutMs} ms; state ${JSON.stringify(await state())}${p ? `; process output (end): ${p.output().slice(-3000)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Seeded {
  eligible: Map<string, number>;
  ineligible: string[];
}
async function seed(): Promise<Seeded> {
  type Spec = { email: string | null; status: PatientStatus; optOut: boolean; lastSent: Date | null; search: 'aktiv' | 'pausiert' };
  const specs: Spec[] = [];
  const base: Spec = { email: null, status: 'auf_der_Suche', optOut: false, lastSent: null, search: 'aktiv' };
  for (let i = 0; i < ELIGIBLE; i++) specs.push({ ...base, email: `eligible${i}@example.org` });
  // Every rule of eligibility once more, ten patients each, with an address a leak would show.
  for (let i = 0; i < 10; i++) {
    specs.push({ ...base, email: `opted-out${i}@example.org`, optOut: true });
    specs.push({ ...base, email: `not-searching${i}@example.org`, status: 'offen' });
    specs.push({ ...base, email: `no-active-search${i}@example.org`, search: 'pausiert' });
    specs.push({ ...base, email: `sent-this-week${i}@example.org`, lastSent: new Date(MONDAY_0900 - 30 * 60_000) });
    specs.push({ ...base, email: i % 2 ? null : '  ' });
  }
  const rows = await ctx.database.db
    .insert(patienten)
    .values(
      specs.map((s, i) => ({
        anrede: 'Frau',
        geschlecht: 'weiblich',
        vorname: 'Vorname',
        nachname: `Nachname${i}`,
        email: s.email,
        zahlungsreferenz: `K${i}`,
        status: s.status,
        weeklyUpdateOptOut: s.optOut,
        weeklyUpdateLastSent: s.lastSent,
      })),
    )
    .returning({ id: patienten.id, email: patienten.email });
  await ctx.database.db.insert(platzsuche).values(rows.map((r, i) => ({ patientId: r.id, status: specs[i]!.search })));
  const eligible = new Map<string, number>();
  const ineligible: string[] = [];
  rows.forEach((r, i) => {
    if (i < ELIGIBLE) eligible.set(r.email!, r.id);
    else if (r.email?.trim()) ineligible.push(r.email);
  });
  return { eligible, ineligible };
}

beforeAll(async () => {
  db = await createTestDatabase();
  const { prefix, cleanup } = testQueuePrefix();
  cleanupRedis = cleanup;
  standIn = new ResendStandIn({ apiKey: 're_test_key', keepBodies: false });
  await standIn.start();
  proxyUrl = await startProxy(standIn.url);
  env = {
    ...killTestEnv({ databaseUrl: db.url, queuePrefix: prefix }),
    RETRY_BACKOFF_SCALE: '0.1',
    MAIL_DRIVER: 'resend',
    RESEND_API_KEY: 're_test_key',
    RESEND_BASE_URL: proxyUrl,
    // Small batches at a modest rate: the kill lands while most emails are still to go.
    MAIL_BATCH_SIZE: '10',
    MAIL_RATE_PER_SECOND: '10',
    MAIL_REQUEST_TIMEOUT_MS: '1000',
    MAIL_SWEEP_INTERVAL_MS: '60000',
    WEEKLY_PAGE_SIZE: '40',
    UNSUBSCRIBE_SECRET: 'kill-test-unsubscribe-secret-0123456789',
    PUBLIC_BASE_URL: 'https://app.curavani.example',
    // Both processes live in the same moment of 2026-W48, whatever day the test runs.
    FIXTURE_CLOCK_OFFSET_MS: String(MONDAY_0900 - Date.now()),
    FIXTURE_ROLES: 'weekly,email',
  };
  ctx = openContext(loadConfig(env), silentLogger());
});

afterAll(async () => {
  // a failed assertion must not leave a fleet process behind
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await ctx?.close();
  await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
  proxy?.closeAllConnections();
  await standIn?.stop();
  await cleanupRedis?.();
  await db?.drop();
});

describe('weekly status emails: SIGKILL of the fleet process mid-way', () => {
  it('after a kill while a batch request is in flight and a restart, each eligible patient gets exactly one email', async () => {
    const { eligible, ineligible } = await seed();

    const first = startFleetProcess();
    type State = Awaited<ReturnType<typeof state>>;
    let markKilled: (s: State) => void = () => {};
    const killed = new Promise<State>((resolve) => (markKilled = resolve));
    onProviderAnswer = async () => {
      if (standIn.stats().messages < KILL_AFTER_MESSAGES) return false;
      onProviderAnswer = async () => false;
      first.child.kill('SIGKILL');
      markKilled(await first.exited.then(() => state()));
      return true; // the provider sent this batch; the dead process never hears of it
    };
    await first.started;
    const k = await Promise.race([killed, new Promise<null>((r) => setTimeout(() => r(null), 30_000))]);
    if (k === null) throw new Error(`the kill never happened: ${JSON.stringify(await state())}; ${first.output().slice(-3000)}`);
    expect((await first.exited).signal).toBe('SIGKILL');
    // Killed mid-way: some emails went out, most did not.
    expect(k.provider.messages).toBeGreaterThanOrEqual(KILL_AFTER_MESSAGES);
    expect(k.provider.messages).toBeLessThan(ELIGIBLE);
    expect(k.deliveries.sent ?? 0).toBeLessThan(k.provider.messages); // the last batch was sent but never recorded
    expect(k.deliveries.sending ?? 0).toBeGreaterThan(0);
    console.info(`weekly kill test: state at SIGKILL ${JSON.stringify({ deliveries: k.deliveries, providerMessages: k.provider.messages, weeklyStatus: k.queues['weekly-status'] })}`);

    const second = startFleetProcess();
    await second.started;
    await until(
      'every delivery sent and the queues idle',
      async () => {
        const s = await deliveryStatuses();
        if ((s.sent ?? 0) !== ELIGIBLE || Object.keys(s).length !== 1) return false;
        const q = await queueCounts();
        return ['weekly-status', 'email'].every((n) => q[n]!.waiting! + q[n]!.active! + q[n]!.delayed! + q[n]!.prioritized! === 0);
      },
      40_000,
      second,
    );
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);

    // At the provider: exactly one email per eligible patient, none for anyone else.
    const got = standIn.perRecipient;
    expect([...got.keys()].sort()).toEqual([...eligible.keys()].sort());
    expect([...got.entries()].filter(([, n]) => n !== 1)).toEqual([]);
    for (const address of ineligible) expect(got.get(address)).toBeUndefined();
    expect(standIn.stats().duplicates).toBe(0);
    // The batch cut off by the kill was sent again under its idempotency key and replayed, not sent twice.
    expect(standIn.stats().replayed).toBeGreaterThanOrEqual(1);

    // In the database: one row per patient and week, all sent.
    const rows = await ctx.database.db.execute<{ patient_id: number; idempotency_key: string; status: string; to_address: string }>(
      sql`select patient_id, idempotency_key, status, to_address from fleet.deliveries order by patient_id`,
    );
    expect(rows.length).toBe(ELIGIBLE);
    expect(rows.map((r) => r.patient_id)).toEqual([...eligible.values()].sort((a, b) => a - b));
    expect(rows.every((r) => r.status === 'sent')).toBe(true);
    expect(rows.every((r) => r.idempotency_key === `weekly.${r.patient_id}.${WEEK}`)).toBe(true);
    expect(rows.every((r) => eligible.get(r.to_address) === r.patient_id)).toBe(true);

    // Nothing gave up on the way.
    const q = await queueCounts();
    for (const dlq of ['weekly-fanout-dlq', 'weekly-status-dlq', 'email-dlq']) expect(Object.values(q[dlq]!).reduce((a, b) => a + b, 0)).toBe(0);
    for (const n of ['weekly-fanout', 'weekly-status', 'email']) expect(q[n]!.failed).toBe(0);
  });
});
