import { Writable } from 'node:stream';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { patienten } from '../../libs/db/schema/index.js';
import { createLogger, silentLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { randomSuffix, TEST_ADMIN_DB_URL, TEST_REDIS_URL, withDatabase } from '../../libs/testing/services.js';
import { signUnsubscribeToken } from '../../libs/weekly/unsubscribe-token.js';
import { runCli } from '../cli/run-cli.js';
import { httpComponent, type HttpComponent } from './component.js';

/**
 * The public unsubscribe pages at their edges (most of their behaviour is tested with the whole
 * fleet in apps/fleet/weekly.int.test.ts). When the database fails (here: a database that does not exist,
 * which fails every query at once, as PostgreSQL away or restarting does after its timeout).
 * Patients get a German page saying to try again later, not the app's English JSON error,
 * and neither the page nor the log line carries the token.
 */
const SECRET = 'u'.repeat(40);
let ctx: FleetContext;
let http: HttpComponent;
let base: string;
let cleanupRedis: () => Promise<void>;
const lines: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  const { prefix, cleanup } = testQueuePrefix();
  cleanupRedis = cleanup;
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const config = loadConfig({
    HTTP_PORT: '0',
    DATABASE_URL: withDatabase(TEST_ADMIN_DB_URL, `rv_wk_missing_${randomSuffix()}`),
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: prefix,
    UNSUBSCRIBE_SECRET: SECRET,
    WEEKLY_CONTACT_EMAIL: 'hilfe@curavani.example',
    LOG_PRETTY: 'false',
  });
  ctx = openContext(config, createLogger({ level: 'info', pretty: 'false' }, stream));
  http = httpComponent(ctx);
  await http.start();
  base = `http://127.0.0.1:${http.address()!.port}`;
});
afterAll(async () => {
  await http?.stop(5_000);
  await ctx?.close();
  await cleanupRedis?.();
});

describe('unsubscribe while the database fails', () => {
  it('answers the link, the one-click POST and the undo with a German page (503, try again), not an English JSON error', async () => {
    const token = signUnsubscribeToken(SECRET, 42);
    const oneClick = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' };
    for (const [path, init] of [
      [`/unsubscribe/${token}`, {}],
      [`/unsubscribe/${token}`, oneClick],
      [`/unsubscribe/${token}/resubscribe`, oneClick],
    ] as const) {
      const res = await fetch(`${base}${path}`, init);
      const body = await res.text();
      expect(res.status, path).toBe(503);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(res.headers.get('retry-after')).toBe('60');
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(body).toContain('Bitte versuchen Sie es in ein paar Minuten noch einmal.');
      expect(body).toContain('mailto:hilfe@curavani.example');
      expect(body).not.toContain('internal_error');
      expect(body).not.toContain(token);
    }
    const failures = lines.filter((l) => l.msg === 'unsubscribe request failed');
    expect(failures.map((l) => l.route)).toEqual(['GET /unsubscribe/:token', 'POST /unsubscribe/:token', 'POST /unsubscribe/:token/resubscribe']);
    expect(JSON.stringify(lines)).not.toContain(token.split('.')[1]!);
  });
});

/**
 * An HTTP app of its own (a database and queue prefix of its own) for one describe block; `env`:
 * config beyond the connections. `stop` closes and drops everything.
 */
async function startApp(env: (urls: { DATABASE_URL: string; REDIS_URL: string; QUEUE_PREFIX: string }) => Record<string, string>) {
  const tdb = await createTestDatabase();
  const q = testQueuePrefix();
  const config = env({ DATABASE_URL: tdb.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix });
  const c = openContext(loadConfig({ ...config, HTTP_PORT: '0' }), silentLogger());
  const h = httpComponent(c);
  await h.start();
  return {
    tdb,
    config,
    ctx: c,
    http: h,
    base: `http://127.0.0.1:${h.address()!.port}`,
    async stop() {
      await h.stop(5_000);
      await c.close();
      await q.cleanup();
      await tdb.drop();
    },
  };
}

describe('unsubscribe opened with a trailing slash', () => {
  let tdb: TestDatabase;
  let app: Awaited<ReturnType<typeof startApp>>;
  beforeAll(async () => {
    app = await startApp((urls) => ({ ...urls, UNSUBSCRIBE_SECRET: SECRET }));
    tdb = app.tdb;
  });
  afterAll(async () => {
    await app?.stop();
  });

  it("the page's undo button posts to /unsubscribe/<token>/resubscribe, not to <token>/<token>/resubscribe", async () => {
    const [p] = await tdb.db
      .insert(patienten)
      .values({ anrede: 'Frau', geschlecht: 'weiblich', vorname: 'Erika', nachname: 'Slash', email: 'erika@example.org', zahlungsreferenz: 'SLASH001', status: 'auf_der_Suche' })
      .returning({ id: patienten.id });
    const token = signUnsubscribeToken(SECRET, p!.id);
    const optedOut = async () => (await tdb.db.select({ v: patienten.weeklyUpdateOptOut }).from(patienten).where(eq(patienten.id, p!.id)))[0]!.v;
    const actionOf = (page: string) => /<form method="post" action="([^"]+)"/.exec(page)?.[1];
    for (const pageUrl of [`${app.base}/unsubscribe/${token}/`, `${app.base}/unsubscribe/${token}`]) {
      // The button of the page (no action) posts to the page's own address: opted out.
      const out = await fetch(pageUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' });
      expect(out.status).toBe(200);
      expect(await optedOut()).toBe(true);
      // Both the confirmation and the page of a patient already opted out offer the undo.
      for (const page of [await out.text(), await (await fetch(pageUrl)).text()]) {
        const undo = new URL(actionOf(page)!, pageUrl).href;
        expect(undo, pageUrl).toBe(`${app.base}/unsubscribe/${token}/resubscribe`);
      }
      const undone = await fetch(`${app.base}/unsubscribe/${token}/resubscribe`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' });
      expect(undone.status).toBe(200);
      expect(await optedOut()).toBe(false);
    }
  });
});

describe('unsubscribe after UNSUBSCRIBE_SECRET was rotated', () => {
  // A rotation left every link patients already had answering 404 ("Dieser Link ist leider
  // ungültig"): only the current secret was accepted.
  const OLD = 'o'.repeat(40);
  const OLDER = 'p'.repeat(40);
  const NEW = 'n'.repeat(40);
  let tdb: TestDatabase;
  let app: Awaited<ReturnType<typeof startApp>>;
  let env: Record<string, string>;
  beforeAll(async () => {
    app = await startApp((urls) => ({
      ...urls,
      UNSUBSCRIBE_SECRET: NEW,
      UNSUBSCRIBE_SECRET_PREVIOUS: ` ${OLD} ,${OLDER}`,
      PUBLIC_BASE_URL: 'https://fleet.example.org',
    }));
    tdb = app.tdb;
    env = app.config;
  });
  afterAll(async () => {
    await app?.stop();
  });

  it('links signed with an earlier secret (UNSUBSCRIBE_SECRET_PREVIOUS) still work; new links are signed with the current one only', async () => {
    const ids: number[] = [];
    for (const ref of ['ROT001', 'ROT002', 'ROT003', 'ROT004']) {
      const [p] = await tdb.db
        .insert(patienten)
        .values({ anrede: 'Frau', geschlecht: 'weiblich', vorname: 'V', nachname: 'N', email: `${ref.toLowerCase()}@example.org`, zahlungsreferenz: ref, status: 'auf_der_Suche' })
        .returning({ id: patienten.id });
      ids.push(p!.id);
    }
    const [withOld, withOlder, withNew, withUnknown] = ids as [number, number, number, number];
    const optedOut = async (id: number) => (await tdb.db.select({ v: patienten.weeklyUpdateOptOut }).from(patienten).where(eq(patienten.id, id)))[0]!.v;
    const oneClick = (token: string) =>
      fetch(`${app.base}/unsubscribe/${token}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    for (const [id, secret] of [[withOld, OLD], [withOlder, OLDER], [withNew, NEW]] as const) {
      const token = signUnsubscribeToken(secret, id);
      expect((await fetch(`${app.base}/unsubscribe/${token}`)).status).toBe(200);
      const res = await oneClick(token);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('Sie wurden abgemeldet');
      expect(await optedOut(id)).toBe(true);
      // the undo works with the same (old) link
      expect((await fetch(`${app.base}/unsubscribe/${token}/resubscribe`, { method: 'POST' })).status).toBe(200);
      expect(await optedOut(id)).toBe(false);
    }
    // a secret that is neither current nor listed is refused
    const unknown = await oneClick(signUnsubscribeToken('u'.repeat(40), withUnknown));
    expect(unknown.status).toBe(404);
    expect(await optedOut(withUnknown)).toBe(false);

    // The email's links (List-Unsubscribe and the page's link) carry the current secret's token
    // (read through `fleet weekly preview`, which renders what the fan-out records).
    const preview = await runCli(['weekly', 'preview', String(withNew), '--json'], { ...env, LOG_LEVEL: 'silent' });
    expect(preview.code, preview.stderr).toBe(0);
    const email = (JSON.parse(preview.stdout) as { email: { headers: Record<string, string>; html: string } }).email;
    const newToken = signUnsubscribeToken(NEW, withNew);
    expect(email.headers['List-Unsubscribe']).toContain(`https://fleet.example.org/unsubscribe/${newToken}>`);
    expect(email.html).toContain(`/unsubscribe/${newToken}"`);
    for (const old of [OLD, OLDER]) expect(preview.stdout).not.toContain(signUnsubscribeToken(old, withNew).split('.')[1]!);
  });
});
