/**
 * Looks at the dashboard as an operator would: starts the HTTP app with credentials on a
 * scratch database and queue prefix, makes a failed job and dead letters, logs into Bull
 * Board, the dead-letter page, the therapist import pages and the daily health view with Debian's chromium (playwright-core), and saves
 * screenshots to var/screenshots/. Fails when the browser reports a script error, a console error or
 * warning, a failed request or a request to another host. Not part of `npm test` (CI has no chromium).
 *
 *   apt-get install -y chromium
 *   npx tsx scripts/screenshot-dashboard.ts [--out var/screenshots] [--chromium /usr/bin/chromium]
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { deleteQueueKeys } from '../libs/testing/redis.js';
import { dropDatabase } from '../libs/testing/services.js';
import { chromium } from 'playwright-core';
import { httpComponent } from '../apps/http/component.js';
import { deadLetterHooks } from '../apps/fleet/roles.js';
import { loadConfig } from '../libs/config/index.js';
import { runMigrations } from '../libs/db/migrate.js';
import { PermanentError } from '../libs/errors/index.js';
import { createLogger } from '../libs/log/index.js';
import { listDeadLetters } from '../libs/queues/index.js';
import { openContext, workerComponent } from '../libs/runtime/index.js';
import { everyOutcomeFile } from '../workers/therapist-import/fixtures.js';
import { importTherapistFileNow } from '../workers/therapist-import/index.js';

const { values: args } = parseArgs({
  options: {
    out: { type: 'string', default: 'var/screenshots' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
  },
});

const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const suffix = randomBytes(4).toString('hex');
const dbName = `fleet_screenshot_${suffix}`;
const prefix = `shot_${suffix}`;
const dbUrl = new URL(ADMIN_URL);
dbUrl.pathname = `/${dbName}`;
const USER = 'operator';
const PASSWORD = randomBytes(12).toString('hex');

async function until(fn: () => Promise<boolean>, what: string, timeoutMs = 30_000) {
  const start = Date.now();
  while (!(await fn())) {
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main() {
  await runMigrations(dbUrl.toString(), { platform: true });
  const config = loadConfig({
    DATABASE_URL: dbUrl.toString(),
    REDIS_URL,
    QUEUE_PREFIX: prefix,
    HTTP_HOST: '127.0.0.1',
    HTTP_PORT: '0',
    DASHBOARD_USER: USER,
    DASHBOARD_PASSWORD: PASSWORD,
    RETRY_BACKOFF_SCALE: '0.001',
    LOG_LEVEL: 'fatal',
    LOG_PRETTY: 'false',
  });
  const log = createLogger(config.log);
  const ctx = openContext(config, log);
  const http = httpComponent(ctx, { deadLetterHooks }); // as the fleet's http role: /ops advises from the import records
  const worker = workerComponent(ctx, 'screenshot-workers', {
    'patient-import': async (p) => {
      if (p.ledgerId === 7) throw new PermanentError('validation_failed', 'patient_data.symptome: expected an array of 1 to 6 entries');
      throw new Error('bucket download timed out after 30000 ms');
    },
    'bucket-poll': async () => ({ listed: 12, enqueued: 3 }),
  });
  const profile = await mkdtemp(path.join(tmpdir(), 'fleet-chromium-'));
  try {
    await http.start();
    await worker.start();
    const base = `http://127.0.0.1:${http.address()!.port}`;

    await ctx.queues.enqueue('patient-import', { ledgerId: 7 }); // permanent error: dead at once
    await ctx.queues.enqueue('patient-import', { ledgerId: 8 }); // transient: dead after 8 attempts
    await ctx.queues.enqueue('bucket-poll', { trigger: 'manual' }); // completes
    for (const patientId of [101, 102, 103, 104]) await ctx.queues.enqueue('weekly-status', { patientId, isoWeek: '2026-W48' }); // no worker: waiting
    await until(async () => (await listDeadLetters(ctx.queues)).length === 2, 'two dead letters');
    // The records of the two dead letters, as the import worker leaves them: /ops advises from them
    // (a file whose content is wrong: "Requeue anyway"; a download that gave up: requeue after the fix).
    await ctx.database.sql`insert into fleet.patient_import_ledger (id, bucket, object_name, generation, source_uri, status, reason, error_code, attempts, failed_at)
      values (7, 'demo', 'registrations/Beispiel_Jonas_2026-11-20_5f3a1c88.json', '1', 'gs://demo/j', 'failed', 'patient_data.symptome: expected an array of 1 to 6 entries', 'validation_failed', 1, now()),
             (8, 'demo', 'registrations/Beispiel_Lea_2026-11-20_9a8b7c6d.json', '1', 'gs://demo/l', 'failed', 'bucket download timed out after 30000 ms', 'download_failed', 8, now())`;
    // Failed import records, as the import workers leave them.
    await ctx.database.sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, reason, error_code, attempts, failed_at)
      values ('demo', 'registrations/Beispiel_Erika_2026-11-20_0b1ab67b.json', '1', 'gs://demo/x', 'failed', 'patient_data.plz: expected 5 digits', 'validation_failed', 1, now())`;
    // One whose corrected re-upload under the same name was imported since: only the discard is left.
    await ctx.database.sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, reason, error_code, attempts, failed_at)
      values ('demo', 'registrations/Muster_Max_2026-11-20_1c2d3e4f.json', '1', 'gs://demo/y', 'failed', 'patient_data.email: not an email address', 'validation_failed', 1, now() - interval '1 hour')`;
    await ctx.database.sql`insert into fleet.patient_import_ledger (bucket, object_name, generation, source_uri, status, patient_id, finished_at)
      values ('demo', 'registrations/Muster_Max_2026-11-20_1c2d3e4f.json', '2', 'gs://demo/y', 'done', 4711, now())`;
    await ctx.database.sql`insert into fleet.therapist_import_files (path, status, reason, finished_at) values ('20261120/52074.json', 'failed', 'not JSON: Unexpected end of JSON input', now())`;
    // Searching patients the weekly email cannot reach: no address, and one that is not an address.
    for (const [ref, email] of [['SHOT1', null], ['SHOT2', 'kein-gueltiger-eintrag']] as const) {
      const [p] = await ctx.database.sql<{ id: number }[]>`insert into patient_service.patienten (anrede, geschlecht, vorname, nachname, email, zahlungsreferenz, status)
        values ('Frau', 'weiblich', 'Erika', 'Beispiel', ${email}, ${ref}, 'auf_der_Suche') returning id`;
      await ctx.database.sql`insert into matching_service.platzsuche (patient_id, status) values (${p!.id}, 'aktiv')`;
    }
    await worker.stop(5_000);
    // A therapist scraper file with every kind of outcome, imported through the real pipeline.
    const dropped = path.join(profile, '52066.json');
    await writeFile(dropped, everyOutcomeFile());
    const therapistReport = await importTherapistFileNow(ctx, dropped);

    await mkdir(args.out!, { recursive: true });
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: args.chromium!,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
      httpCredentials: { username: USER, password: PASSWORD },
      viewport: { width: 1400, height: 1000 },
    });
    try {
      const page = browser.pages()[0] ?? (await browser.newPage());
      // What an operator's browser would complain about: script errors, console errors, requests
      // that fail or leave this machine (the pages load nothing from elsewhere).
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(`${page.url()}: script error: ${err.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`${page.url()}: console ${m.type()}: ${m.text()}`);
      });
      page.on('requestfailed', (r) => problems.push(`${page.url()}: request failed: ${r.url()} (${r.failure()?.errorText})`));
      page.on('request', (r) => {
        if (!r.url().startsWith(base) && !r.url().startsWith('data:')) problems.push(`${page.url()}: request to another host: ${r.url()}`);
      });
      // Bull Board's sidebar is fixed to the viewport: whole-page shots only for /ops.
      const shots: Array<[string, string, string, boolean]> = [
        ['dashboard-overview.png', '/dashboard', 'text=4 Jobs', false],
        ['dashboard-dead-letters.png', '/dashboard/queue/patient-import-dlq', 'text=bucket download timed out', false],
        ['dashboard-failed.png', '/dashboard/queue/patient-import?status=failed', 'text=patient-import.ledger.8', false],
        ['ops-dead-letters.png', '/ops', 'text=Recent operator actions', true],
        ['imports-failed.png', '/imports', 'text=Therapist scraper files', true],
        ['therapist-imports.png', '/therapist-imports', 'text=Runs: the scraper files', true],
        ['therapist-import-run.png', `/therapist-imports/runs/${therapistReport.runId}`, 'text=Files', true],
        ['therapist-import-file.png', `/therapist-imports/files/${therapistReport.fileId}`, 'text=Failed therapists', true],
        ['daily-health.png', '/daily', 'text=Needs attention', true],
        ['daily-weekly-unreachable.png', '/daily/weekly-unreachable', 'text=no valid email address', true],
      ];
      for (const [file, url, waitFor, fullPage] of shots) {
        const res = await page.goto(`${base}${url}`, { waitUntil: 'networkidle' });
        if (!res || res.status() !== 200) throw new Error(`${url} answered ${res?.status()}`);
        await page.locator(waitFor).first().waitFor({ timeout: 15_000 });
        const out = path.join(args.out!, file);
        await page.screenshot({ path: out, fullPage });
        console.log(`saved ${out}`);
      }
      // The operator pages at a laptop's width and a phone's: the page itself never scrolls
      // sideways (wide tables scroll in their own box), and at 1200 px no table is cut off.
      const operatorPages = ['/ops', '/imports', '/therapist-imports', `/therapist-imports/runs/${therapistReport.runId}`, `/therapist-imports/files/${therapistReport.fileId}`, '/daily', '/daily/weekly-unreachable'];
      for (const [width, height] of [[1200, 900], [390, 844]] as const) {
        await page.setViewportSize({ width, height });
        for (const url of operatorPages) {
          await page.goto(`${base}${url}`, { waitUntil: 'networkidle' });
          // A string: this project compiles without the DOM's types.
          const m = (await page.evaluate(
            `({ page: document.documentElement.scrollWidth, view: window.innerWidth, cut: [...document.querySelectorAll('.scroll')].filter((e) => e.scrollWidth > e.clientWidth + 1).length })`,
          )) as { page: number; view: number; cut: number };
          if (m.page > m.view) problems.push(`${url} at ${width} px: the page scrolls sideways (${m.page} px wide)`);
          if (width >= 1200 && m.cut > 0) problems.push(`${url} at ${width} px: ${m.cut} table(s) wider than the page (columns cut off)`);
        }
        const narrow = path.join(args.out!, `daily-health-${width}.png`);
        await page.goto(`${base}/daily`, { waitUntil: 'networkidle' });
        await page.screenshot({ path: narrow, fullPage: true });
        console.log(`saved ${narrow}`);
      }
      await page.setViewportSize({ width: 1400, height: 1000 });

      // Discard one dead letter through the page's form, as an operator would.
      await page.goto(`${base}/ops`, { waitUntil: 'networkidle' });
      const row = page.locator('tr', { hasText: 'patient-import.ledger.7' });
      await row.locator('form[action$="/discard"] input[name=reason]').fill('registration file is malformed; staff will call the patient');
      await row.locator('form[action$="/discard"] button').click();
      await page.locator('.notice', { hasText: 'Discarded patient-import.ledger.7' }).waitFor({ timeout: 5_000 });
      const afterShot = path.join(args.out!, 'ops-after-discard.png');
      await page.screenshot({ path: afterShot, fullPage: true });
      console.log(`saved ${afterShot}`);

      // The link from Bull Board to the dead-letter page sits in the user menu (top right).
      await page.goto(`${base}/dashboard`, { waitUntil: 'networkidle' });
      await page.locator('header button').last().click();
      const link = page.getByText('Dead letters (requeue / discard)');
      await link.waitFor({ timeout: 5_000 });
      await page.getByText('Daily health').waitFor({ timeout: 5_000 });
      const menuShot = path.join(args.out!, 'dashboard-menu.png');
      await page.screenshot({ path: menuShot });
      console.log(`saved ${menuShot}`);
      if (problems.length > 0) throw new Error(`the browser reported ${problems.length} problem(s):\n${problems.join('\n')}`);
      console.log('the browser reported no script error, console error or warning, failed request or request to another host');
    } finally {
      await browser.close();
    }
  } finally {
    await http.stop(5_000);
    await ctx.close();
    await rm(profile, { recursive: true, force: true });
    await dropDatabase(dbName, ADMIN_URL);
    await deleteQueueKeys(prefix, REDIS_URL);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
