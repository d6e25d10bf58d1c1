import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { runMigrations } from '../../libs/db/migrate.js';
import { TEST_ADMIN_DB_URL, TEST_REDIS_URL, randomSuffix, withDatabase } from '../../libs/testing/services.js';

const run = promisify(execFile);
const main = fileURLToPath(new URL('./main.ts', import.meta.url));
const admin = postgres(TEST_ADMIN_DB_URL, { max: 1, onnotice: () => {} });
const name = `fleet_start_${randomSuffix()}`;

afterAll(async () => {
  await admin.unsafe(`drop database if exists "${name}" with (force)`);
  await admin.end();
});

describe('fleet start --no-migrate against the platform database (PLATFORM_MIGRATIONS=false, as in infra/k8s)', () => {
  it('checks the platform tables all the same: a missing one stops the start, named, before anything runs', { timeout: 60_000 }, async () => {
    const url = withDatabase(TEST_ADMIN_DB_URL, name);
    await runMigrations(url, { platform: false }); // the fleet's own tables only: no platform tables
    const env = {
      ...process.env,
      DATABASE_URL: url,
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: `test-start-${randomSuffix()}`,
      PLATFORM_MIGRATIONS: 'false',
      HTTP_PORT: '0',
      LOG_LEVEL: 'info',
      LOG_PRETTY: 'false',
    };
    // timeout: the old code started the fleet and ran until stopped
    const r = await run(process.execPath, ['--import', 'tsx', main, 'start', '--no-migrate', '--only', 'http'], { env, timeout: 20_000 }).then(
      (x) => ({ code: 0 as number | null, stdout: x.stdout, stderr: x.stderr }),
      (e: { code: number | null; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
    expect(r.stdout).not.toContain('fleet started');
    expect(r.stderr).toMatch(/^fleet: the platform database lacks what the fleet needs: .*patient_service\.patienten/);
    expect(r.code).toBe(1);
  });
});
