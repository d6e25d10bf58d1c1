import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext } from '../../libs/runtime/index.js';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { createTestQueues } from '../../libs/testing/queues.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { checkRoleFolders, roles } from '../fleet/roles.js';
import { startFleet } from '../fleet/runtime.js';

const run = promisify(execFile);
const main = fileURLToPath(new URL('./main.ts', import.meta.url));

let db: TestDatabase;
let dir: string;
/** A regular file: a folder below it cannot be created (ENOTDIR), as for a wrong mount path. */
let aFile: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-folders-'));
  aFile = path.join(dir, 'a-file');
  await writeFile(aFile, 'not a folder');
});
afterAll(async () => {
  await db?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Every folder setting valid (its own subfolder of `dir`), then `bad` on top. */
function folderEnv(bad: Record<string, string>): Record<string, string> {
  return {
    BACKUP_DIR: path.join(dir, 'ok', 'backup'),
    FAILED_DIR: path.join(dir, 'ok', 'failed'),
    MAIL_OUTBOX_DIR: path.join(dir, 'ok', 'outbox'),
    SCRAPER_DROP_DIR: path.join(dir, 'ok', 'scraper'),
    LOCAL_BUCKET_DIR: path.join(dir, 'ok', 'bucket'),
    ...bad,
  };
}

describe('fleet start with a folder it cannot use', () => {
  const cases = [
    { variable: 'BACKUP_DIR', value: () => path.join(aFile, 'backups'), reason: 'cannot be created (ENOTDIR)' },
    { variable: 'FAILED_DIR', value: () => path.join(aFile, 'failed'), reason: 'cannot be created (ENOTDIR)' },
    { variable: 'MAIL_OUTBOX_DIR', value: () => path.join(aFile, 'outbox'), reason: 'cannot be created (ENOTDIR)' },
    { variable: 'SCRAPER_DROP_DIR', value: () => path.join(aFile, 'scraper'), reason: 'cannot be created (ENOTDIR)' },
    { variable: 'SCRAPER_DROP_DIR', value: () => aFile, reason: 'not a directory' },
    { variable: 'LOCAL_BUCKET_DIR', value: () => path.join(aFile, 'bucket'), reason: 'cannot be created (ENOTDIR)' },
  ];
  for (const c of cases) {
    it(`${c.variable} (${c.reason}): refuses at once, exit 2, naming the variable, the path and why; no worker takes a job, no HTTP`, { timeout: 60_000 }, async () => {
      const t = createTestQueues();
      try {
        // Work waiting for the workers: none may take it.
        const imp = await t.queues.enqueue('patient-import', { ledgerId: 1 });
        const mail = await t.queues.enqueue('email-send', { deliveryId: '00000000-0000-4000-8000-000000000001' });
        const value = c.value();
        const env = {
          ...process.env,
          ...folderEnv({ [c.variable]: value }),
          DATABASE_URL: db.url,
          REDIS_URL: TEST_REDIS_URL,
          QUEUE_PREFIX: t.prefix,
          MAIL_DRIVER: 'outbox',
          HTTP_PORT: '0',
          LOG_LEVEL: 'info',
          LOG_PRETTY: 'false',
        };
        // timeout: the old code started every role and ran until stopped
        const r = await run(process.execPath, ['--import', 'tsx', main, 'start'], { env, timeout: 20_000 }).then(
          (x) => ({ code: 0 as number | null, stdout: x.stdout, stderr: x.stderr }),
          (e: { code: number | null; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
        );
        expect(r.stderr).toBe(`fleet: invalid configuration: ${c.variable}=${value}: ${c.reason}\n`);
        expect(r.code).toBe(2);
        expect(r.stdout).not.toContain('fleet started');
        expect(r.stdout).not.toContain('http app listening');
        expect(await t.queues.queue('patient-import').getJob(imp.jobId).then((j) => j!.getState())).toBe('waiting');
        expect(await t.queues.queue('email').getJob(mail.jobId).then((j) => j!.getState())).toBe('waiting');
      } finally {
        await t.close();
      }
    });
  }

  it('names every unusable folder at once', { timeout: 60_000 }, async () => {
    const t = createTestQueues();
    const env = {
      ...process.env,
      ...folderEnv({ BACKUP_DIR: path.join(aFile, 'b'), FAILED_DIR: path.join(aFile, 'f') }),
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: t.prefix,
    };
    try {
      const r = await run(process.execPath, ['--import', 'tsx', main, 'start', '--only', 'patient-import'], { env, timeout: 20_000 }).catch(
        (e: { code: number; stderr: string }) => e,
      );
      expect((r as { code: number }).code).toBe(2);
      expect(r.stderr).toMatch(/BACKUP_DIR=.*\/a-file\/b: cannot be created \(ENOTDIR\); FAILED_DIR=.*\/a-file\/f: cannot be created \(ENOTDIR\)/);
    } finally {
      await t.close();
    }
  });
});

describe('startFleet (the runtime, whatever starts it)', () => {
  it('checks the folders before any component starts, and closes the connections', async () => {
    const t = createTestQueues();
    const ctx = openContext(
      loadConfig({ ...folderEnv({ FAILED_DIR: path.join(aFile, 'failed') }), DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: t.prefix }),
      silentLogger(),
    );
    try {
      const imp = await t.queues.enqueue('patient-import', { ledgerId: 2 });
      const err = await startFleet(ctx, ['patient-import']).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toBe(`invalid configuration: FAILED_DIR=${path.join(aFile, 'failed')}: cannot be created (ENOTDIR)`);
      expect(await t.queues.queue('patient-import').getJob(imp.jobId).then((j) => j!.getState())).toBe('waiting');
    } finally {
      await t.close();
    }
  });
});

describe('which folders a role checks', () => {
  const bad = () =>
    folderEnv({
      BACKUP_DIR: path.join(aFile, 'b'),
      FAILED_DIR: path.join(aFile, 'f'),
      MAIL_OUTBOX_DIR: path.join(aFile, 'o'),
      SCRAPER_DROP_DIR: path.join(aFile, 's'),
      LOCAL_BUCKET_DIR: path.join(aFile, 'l'),
    });

  it('only those of its roles: HTTP, relay and weekly need none; the email role none with Resend, poller and import no local bucket with GCS', async () => {
    await checkRoleFolders(loadConfig(bad()), ['http', 'outbox-relay', 'weekly']);
    await expect(checkRoleFolders(loadConfig(bad()), ['bucket-poller'])).rejects.toThrow(/^invalid configuration: LOCAL_BUCKET_DIR=[^;]*$/);
    await checkRoleFolders(loadConfig({ ...bad(), STORAGE_DRIVER: 'gcs', GCS_BUCKET: 'curavani-test-bucket' }), ['bucket-poller']);
    await checkRoleFolders(loadConfig({ ...bad(), MAIL_DRIVER: 'resend', RESEND_API_KEY: 're_x', UNSUBSCRIBE_SECRET: 's'.repeat(32) }), ['email']);
    await expect(checkRoleFolders(loadConfig(bad()), ['email'])).rejects.toThrow(/^invalid configuration: MAIL_OUTBOX_DIR=/);
    await expect(checkRoleFolders(loadConfig(bad()), ['therapist-import'])).rejects.toThrow(/^invalid configuration: SCRAPER_DROP_DIR=/);
    const all = (await checkRoleFolders(loadConfig(bad()), Object.keys(roles)).catch((e: unknown) => e)) as Error;
    for (const v of ['BACKUP_DIR', 'FAILED_DIR', 'SCRAPER_DROP_DIR', 'MAIL_OUTBOX_DIR', 'LOCAL_BUCKET_DIR']) expect(all.message.split(`${v}=`)).toHaveLength(2);
  });

  it('creates missing folders as the code did on first use (the import worker only reads: the drop folder must exist there)', async () => {
    const fresh = path.join(dir, 'fresh');
    const env = {
      BACKUP_DIR: path.join(fresh, 'backup'),
      FAILED_DIR: path.join(fresh, 'failed'),
      MAIL_OUTBOX_DIR: path.join(fresh, 'outbox'),
      SCRAPER_DROP_DIR: path.join(fresh, 'scraper'),
    };
    await expect(checkRoleFolders(loadConfig(env), ['therapist-import'])).rejects.toThrow(
      `invalid configuration: SCRAPER_DROP_DIR=${env.SCRAPER_DROP_DIR}: does not exist (ENOENT)`,
    );
    await checkRoleFolders(loadConfig(env), Object.keys(roles));
    expect((await readdir(fresh)).sort()).toEqual(['backup', 'failed', 'outbox', 'scraper']);
    // the write probe leaves nothing behind
    for (const d of ['backup', 'failed', 'outbox']) expect(await readdir(path.join(fresh, d))).toEqual([]);
    // the copies' names hold patient names: their folders are listable by the fleet's user only
    for (const d of ['backup', 'failed']) expect((await stat(path.join(fresh, d))).mode & 0o777).toBe(0o700);
    await checkRoleFolders(loadConfig(env), ['therapist-import']);
  });

  it('a relative path is shown as set and as resolved', async () => {
    const rel = path.relative(process.cwd(), path.join(aFile, 'b'));
    await expect(checkRoleFolders(loadConfig({ ...bad(), BACKUP_DIR: rel }), ['patient-import'])).rejects.toThrow(
      `BACKUP_DIR=${rel} (${path.join(aFile, 'b')}): cannot be created (ENOTDIR)`,
    );
  });
});
