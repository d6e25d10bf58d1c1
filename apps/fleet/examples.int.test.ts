import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listLedger } from '../../libs/db/repositories/patient-import.js';
import { listFiles } from '../../libs/db/repositories/therapist-import.js';
import { patienten, therapeuten } from '../../libs/db/schema/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { until } from '../../libs/testing/until.js';
import { runCli } from '../cli/run-cli.js';

/**
 * The README's "Try it" walkthrough with the files in examples/: the fleet started as
 * `npm start` starts it, the registrations copied into the local bucket and polled, the two
 * weekly scraper files dropped one after the other. Keeps the examples and what the README
 * says about them true.
 */
const repo = fileURLToPath(new URL('../..', import.meta.url));
const examples = path.join(repo, 'examples');

let db: TestDatabase;
let q: ReturnType<typeof testQueuePrefix>;
let dir: string;
let fleet: ChildProcess | undefined;
let env: Record<string, string>;

beforeAll(async () => {
  db = await createTestDatabase();
  q = testQueuePrefix();
  dir = await mkdtemp(path.join(tmpdir(), 'examples-'));
  env = {
    DATABASE_URL: db.url,
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: q.prefix,
    HTTP_PORT: '0',
    SCRAPER_DROP_DIR: path.join(dir, 'scraper'),
    SCRAPER_STABILITY_MS: '300',
    SCRAPER_RUN_QUIET_MS: '300',
    LOCAL_BUCKET_DIR: path.join(dir, 'bucket'),
    MAIL_OUTBOX_DIR: path.join(dir, 'outbox'),
    BACKUP_DIR: path.join(dir, 'backup'),
    FAILED_DIR: path.join(dir, 'failed'),
    LOG_LEVEL: 'info',
    LOG_PRETTY: 'false',
  };
});

afterAll(async () => {
  if (fleet && fleet.exitCode === null && fleet.signalCode === null) {
    const exited = new Promise((r) => fleet!.once('exit', r));
    fleet.kill('SIGTERM');
    await exited;
  }
  await db?.drop();
  await q?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function startFleet(): Promise<() => string> {
  fleet = spawn(process.execPath, ['--import', 'tsx', path.join(repo, 'apps/cli/main.ts'), 'start'], {
    cwd: repo,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  fleet.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  fleet.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await until('fleet started', () => out.includes('"msg":"fleet started"') || (fleet!.exitCode !== null && Promise.reject(new Error(out))), 60_000);
  return () => out;
}

async function outboxSubjects(): Promise<string[]> {
  // Finished messages only: one being written is a dot file renamed into place when complete.
  const files = (await readdir(env.MAIL_OUTBOX_DIR!).catch(() => [] as string[])).filter((f) => f.endsWith('.eml') && !f.startsWith('.'));
  // A long header is folded onto continuation lines (RFC 5322): unfolded here.
  const subjects = await Promise.all(
    files.map(async (f) => (/^Subject: (.*(?:\r?\n[ \t].*)*)/m.exec(await readFile(path.join(env.MAIL_OUTBOX_DIR!, f), 'utf8'))?.[1] ?? '').replace(/\r?\n(?=[ \t])/g, '')),
  );
  return subjects.sort();
}

describe('the examples walkthrough (README "Try it")', () => {
  it('imports the two good registrations, fails the bad one naming each field, and reports both scraper weeks with numbers that add up', { timeout: 150_000 }, async () => {
    const log = await startFleet();
    // Each start polls once: the files go in after that poll, as in the README (start, then copy),
    // or a slow start's poll could take them before the `fleet poll` below.
    await until('the start poll', () => log().includes('"msg":"bucket polled"'), 60_000);

    // registrations: copied into the local bucket, then `fleet poll`
    const prefixDir = path.join(env.LOCAL_BUCKET_DIR!, 'registrations');
    await mkdir(prefixDir, { recursive: true });
    await cp(path.join(examples, 'registrations'), prefixDir, { recursive: true });
    // A person types the next command after LOCAL_BUCKET_SETTLE_MS (1 s) has passed; a poll within
    // it leaves the files for the next poll, as they may still be being copied in.
    const polled = await runCli(['poll'], { ...env, LOG_LEVEL: 'silent', LOCAL_BUCKET_SETTLE_MS: '0' });
    expect(polled.stdout).toContain('3 new file(s) enqueued');

    const ledger = await until('three final imports', async () => {
      const rows = await listLedger(db.db);
      return rows.length === 3 && rows.every((r) => r.status === 'deleted' || r.status === 'failed') && rows;
    }, 60_000);
    const byName = (n: string) => ledger.find((r) => r.objectName.includes(n))!;
    expect(byName('Mustermann_Max')).toMatchObject({ status: 'deleted', validation: 'valid (unsigned)' });
    expect(byName('Musterfrau_Erika')).toMatchObject({ status: 'deleted' });
    const jonas = byName('Beispiel_Jonas');
    expect(jonas).toMatchObject({ status: 'failed', errorCode: 'validation_failed' });
    expect(jonas.reason).toContain('patient_data.plz: expected 5 digits');
    expect(jonas.reason).toContain('patient_data.geburtsdatum: expected a real calendar date');
    expect(jonas.reason).toContain('patient_data.symptome.0: expected one of the 30 symptoms');
    // only the failed file stays in the bucket; its original bytes are kept in FAILED_DIR
    expect(await readdir(prefixDir)).toEqual(['Beispiel_Jonas_20250707_5f3a1c88.json']);
    expect(await readdir(env.FAILED_DIR!)).toEqual([`${jonas.id}-Beispiel_Jonas_20250707_5f3a1c88.json`]);
    const dlq = await runCli(['dlq', 'list', '--json'], { ...env, LOG_LEVEL: 'silent' });
    expect(JSON.parse(dlq.stdout).deadLetters).toMatchObject([{ id: `patient-import.ledger.${jonas.id}`, code: 'validation_failed', originalQueue: 'patient-import' }]);

    // scraper week 1: a date folder copied into the drop folder
    await cp(path.join(examples, 'scraper', '20250702'), path.join(env.SCRAPER_DROP_DIR!, '20250702'), { recursive: true });
    const [week1] = await until('week 1 imported', async () => {
      const files = await listFiles(db.db);
      return files.length === 1 && files[0]!.finishedAt !== null && files;
    }, 30_000);
    expect(week1).toMatchObject({ path: '20250702/52074.json', status: 'partial' });
    expect(week1!.counts).toMatchObject({ total: 6, created: 4, updated: 0, unchanged: 0, deactivated: 0, skipped: 1, failed: 1 });
    expect(week1!.failures).toMatchObject([{ index: 4, externalId: 'praxis105', reason: 'basic_info.last_name: missing' }]);
    expect(week1!.statusMismatches).toMatchObject([{ index: 5, externalId: 'praxis106', stated: 'unchanged' }]);
    expect(week1!.metadataDisagreements).toMatchObject([{ field: 'new_therapists', stated: 4, found: 5 }]);

    // scraper week 2: one changed phone, one deleted, the fixed last name, the rest unchanged
    await cp(path.join(examples, 'scraper', '20250709'), path.join(env.SCRAPER_DROP_DIR!, '20250709'), { recursive: true });
    const week2 = await until('week 2 imported', async () => {
      const f = (await listFiles(db.db)).find((x) => x.path === '20250709/52074.json');
      return f?.finishedAt != null && f;
    }, 30_000);
    expect(week2).toMatchObject({ status: 'imported', metadataDisagreements: [] });
    expect(week2.counts).toMatchObject({ total: 6, created: 1, updated: 1, unchanged: 2, deactivated: 1, skipped: 1, failed: 0 });

    // what the README's table says each example shows
    const patients = await db.db.select({ id: patienten.id, zahlungsreferenz: patienten.zahlungsreferenz, status: patienten.status, paid: patienten.zahlungEingegangen }).from(patienten);
    expect(patients.find((x) => x.id === byName('Musterfrau_Erika').patientId)).toMatchObject({ zahlungsreferenz: 'V_7c2d90', status: 'auf_der_Suche', paid: true });
    expect(patients.find((x) => x.id === byName('Mustermann_Max').patientId)).toMatchObject({ zahlungsreferenz: '0b1ab67b', status: 'offen', paid: false });
    const therapists = await db.db.select({ vorname: therapeuten.vorname, nachname: therapeuten.nachname, anrede: therapeuten.anrede, status: therapeuten.status, telefon: therapeuten.telefon, email: therapeuten.email }).from(therapeuten);
    const therapist = (vorname: string) => therapists.find((x) => x.vorname === vorname);
    expect(therapists).toHaveLength(5); // the children-only therapist is not imported
    expect(therapist('Thomas')).toMatchObject({ telefon: '0241 0000199', status: 'aktiv' });
    expect(therapist('Anna')).toMatchObject({ status: 'inaktiv' });
    expect(therapist('Sabine')).toMatchObject({ anrede: 'Frau', email: 'praxis.probe@example.org' });
    expect(therapist('Marie')).toMatchObject({ nachname: 'Entwurf', status: 'aktiv' });

    // staff emails: one per imported patient, one for the failed file, one summary per run
    const subjects = await until('five staff emails', async () => {
      const s = await outboxSubjects();
      return s.length >= 5 && s;
    }, 30_000);
    expect(subjects).toHaveLength(5);
    expect(subjects).toContain(`Anmeldung konnte nicht importiert werden (Import ${jonas.id})`);
    expect(subjects).toContain(`Neue Patientenanmeldung importiert (Import ${byName('Mustermann_Max').id})`);
    expect(subjects).toContain(`Neue Patientenanmeldung importiert, bezahlte Gutschein-Buchung (Import ${byName('Musterfrau_Erika').id})`);
    expect(subjects.filter((s) => /^Therapeuten-Import Lauf \d+/.test(s))).toHaveLength(2);
    expect(subjects).toContainEqual(expect.stringMatching(/^Therapeuten-Import Lauf \d+: 1 Therapeut fehlgeschlagen/));
    // the only error logged is the failed registration's, and it names no value of the file
    const errors = log().split('\n').filter((l) => /"level":(50|60)/.test(l));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain(`"jobId":"patient-import.ledger.${jonas.id}"`);
    // no personal data of the examples in the log lines (names, emails, the bad values)
    for (const value of ['Jonas', 'Beispiel_', 'Mustermann', 'Musterfrau', 'example.org', '5207', '1999-02-29', 'Schlafstoerungen', 'Probe', 'Kinderlieb']) {
      expect(log()).not.toContain(value);
    }
  });
});
