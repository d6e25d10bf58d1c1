import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, envSchema, loadConfig, parseEnv } from './index.js';

function exampleEnv(): Record<string, string> {
  const text = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8');
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

describe('config', () => {
  it('.env.example documents every variable of the schema, and nothing else', () => {
    expect(Object.keys(exampleEnv()).sort()).toEqual(Object.keys(envSchema.shape).sort());
  });

  it('the defaults written in .env.example are the real defaults', () => {
    expect(parseEnv(exampleEnv())).toEqual(parseEnv({}));
  });

  it('links in emails follow HTTP_PORT unless PUBLIC_BASE_URL is set (a fleet on another port links to itself)', () => {
    expect(loadConfig({}).http.publicBaseUrl).toBe('http://127.0.0.1:3000');
    expect(loadConfig({ HTTP_PORT: '18731' }).http.publicBaseUrl).toBe('http://127.0.0.1:18731');
    expect(loadConfig({ HTTP_PORT: '0' }).http.publicBaseUrl).toBe('http://127.0.0.1:3000');
    expect(loadConfig({ HTTP_PORT: '18731', PUBLIC_BASE_URL: 'https://fleet.example.org/' }).http.publicBaseUrl).toBe('https://fleet.example.org');
    expect(() => loadConfig({ PUBLIC_BASE_URL: 'not a url' })).toThrow(/PUBLIC_BASE_URL: expected a URL/);
  });

  it('runs with no variables at all (local defaults)', () => {
    const c = loadConfig({});
    expect(c.db.url).toBe('postgres://postgres@127.0.0.1:5432/curavani_fleet');
    expect(c.mail.driver).toBe('outbox');
    expect(c.queues.prefix).toBe('fleet');
  });

  it('a bad value stops with one line naming the variable and what is wrong', () => {
    expect(() => loadConfig({ DB_POOL_MAX: 'lots' })).toThrow(ConfigError);
    expect(() => loadConfig({ DB_POOL_MAX: 'lots' })).toThrow(/^invalid configuration: DB_POOL_MAX: expected a number \(got "lots"\)$/);
    expect(() => loadConfig({ DB_POOL_MAX: '0' })).toThrow(/DB_POOL_MAX: expected a whole number >= 1/);
    expect(() => loadConfig({ PLATFORM_MIGRATIONS: 'maybe' })).toThrow(/PLATFORM_MIGRATIONS: expected true or false \(got "maybe"\)/);
    expect(() => loadConfig({ REDIS_URL: 'not a url' })).toThrow(/REDIS_URL: expected a redis:\/\/ or rediss:\/\/ URL/);
    // a URL of another kind was taken and failed later without naming the variable
    // (`database query failed: ENOTFOUND ...`; a command waiting on an http:// Redis)
    expect(() => loadConfig({ DATABASE_URL: 'mysql://fleet@db/fleet' })).toThrow(
      /^invalid configuration: DATABASE_URL: expected a postgres:\/\/ or postgresql:\/\/ URL \(got "mysql:\/\/fleet@db\/fleet"\)$/,
    );
    expect(() => loadConfig({ REDIS_URL: 'http://127.0.0.1:6379' })).toThrow(/^invalid configuration: REDIS_URL: expected a redis:\/\/ or rediss:\/\/ URL/);
    expect(loadConfig({ DATABASE_URL: 'postgresql://db/fleet', REDIS_URL: 'rediss://cache:6380' }).queues.redisUrl).toBe('rediss://cache:6380');
    // "b" is made of allowed characters: the message says the length too
    expect(() => loadConfig({ GCS_BUCKET: 'b' })).toThrow(
      /^invalid configuration: GCS_BUCKET: expected a GCS bucket name: 3 to 222 characters of lowercase letters, digits, \. _ -, starting and ending with a letter or digit \(got "b"\)$/,
    );
    expect(() => loadConfig({ QUEUE_PREFIX: 'a:b' })).toThrow(/QUEUE_PREFIX/);
    expect(() => loadConfig({ HTTP_PORT: '70000' })).toThrow(/^invalid configuration: HTTP_PORT: expected a port number <= 65535 \(got "70000"\)$/);
    const message = (() => {
      try {
        loadConfig({ DB_POOL_MAX: 'x', HTTP_PORT: 'y' });
      } catch (e) {
        return (e as Error).message;
      }
    })();
    expect(message).not.toContain('\n');
    expect(message).toContain('DB_POOL_MAX');
    expect(message).toContain('HTTP_PORT');
  });

  it('never echoes a secret or a URL with a password in an error', () => {
    const err = (() => {
      try {
        loadConfig({ DATABASE_URL: 'postgres://fleet:hunter2@db:5432/x', DB_POOL_MAX: 'x', DASHBOARD_USER: 'a', DASHBOARD_PASSWORD: 'hunter2', QUEUE_PREFIX: 'hunter2:' });
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })();
    expect(err).toContain('DB_POOL_MAX');
    expect(err).toContain('QUEUE_PREFIX');
    const short = (() => {
      try {
        loadConfig({ REDIS_URL: 'redis://:hunter2@', NODE_ENV: 'production' });
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })();
    expect(short).toContain('REDIS_URL');
    expect(short).not.toContain('hunter2');
  });

  it('cross-field rules name the variables', () => {
    expect(() => loadConfig({ MAIL_DRIVER: 'resend' })).toThrow(/RESEND_API_KEY: required when MAIL_DRIVER=resend/);
    expect(() => loadConfig({ DASHBOARD_USER: 'ops' })).toThrow(/DASHBOARD_USER and DASHBOARD_PASSWORD/);
    // the default bucket is the production one, and the import deletes what it imported
    expect(() => loadConfig({ STORAGE_DRIVER: 'gcs' })).toThrow(/^invalid configuration: GCS_BUCKET: required when STORAGE_DRIVER=gcs \(it is missing\)/);
    expect(loadConfig({ STORAGE_DRIVER: 'gcs', GCS_BUCKET: 'curavani-staging-data-transfer' }).storage.bucket).toBe('curavani-staging-data-transfer');
    expect(loadConfig({}).storage.bucket).toBe('curavani-production-data-transfer');
  });

  it('production refuses the local stand-ins, naming every variable at once', () => {
    const message = (() => {
      try {
        loadConfig({ NODE_ENV: 'production' });
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })();
    expect(message).toContain('MAIL_DRIVER: expected resend when NODE_ENV=production (got outbox)');
    expect(message).toContain('STORAGE_DRIVER: expected gcs when NODE_ENV=production (got local)');
    expect(message).toContain('UNSUBSCRIBE_SECRET: required when NODE_ENV=production');
    expect(message).toContain('PUBLIC_BASE_URL: expected an https address');
    const production = {
      NODE_ENV: 'production',
      MAIL_DRIVER: 'resend',
      RESEND_API_KEY: 're_test',
      STORAGE_DRIVER: 'gcs',
      GCS_BUCKET: 'curavani-production-data-transfer',
      UNSUBSCRIBE_SECRET: 's'.repeat(32),
      PUBLIC_BASE_URL: 'https://fleet.curavani.com',
    };
    expect(loadConfig(production).mail).toMatchObject({ driver: 'resend' });
    expect(() => loadConfig({ ...production, DASHBOARD_USER: 'ops', DASHBOARD_PASSWORD: 'hunter2hunter2' })).toThrow(
      /^invalid configuration: DASHBOARD_PASSWORD: at least 16 characters when NODE_ENV=production \(got a value of 14 characters\)$/,
    );
    expect(loadConfig({ ...production, DASHBOARD_USER: 'ops', DASHBOARD_PASSWORD: 'x'.repeat(16) }).http).toBeDefined();
    // The registration signing secret: unset and short stay allowed, in production too (the site's
    // secret as much as the fleet's: a process running the import warns at start instead).
    expect(loadConfig(production).patientImport.signingSecret).toBeUndefined();
    expect(loadConfig({ ...production, REGISTRATION_SIGNING_SECRET: 's3cret' }).patientImport.signingSecret).toBe('s3cret');
    expect(() => loadConfig({ ...production, MAIL_DRIVER: 'outbox' })).toThrow(/^invalid configuration: MAIL_DRIVER: expected resend when NODE_ENV=production \(got outbox\); the outbox driver only writes emails/);
    // development and tests keep the local defaults
    expect(loadConfig({ NODE_ENV: 'development' }).mail).toMatchObject({ driver: 'outbox' });
  });

  it('Kafka TLS and SASL: rules that name the variables, PEM files read at start, the password never echoed', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'fleet-config-'));
    try {
      const pem = path.join(dir, 'ca.pem');
      await writeFile(pem, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
      const notPem = path.join(dir, 'ca.txt');
      await writeFile(notPem, 'hello');
      const sasl = { KAFKA_SASL_MECHANISM: 'scram-sha-512', KAFKA_SASL_USERNAME: 'fleet', KAFKA_SASL_PASSWORD: 'hunter2-kafka' };

      const c = loadConfig({ KAFKA_BROKERS: 'k1:9093', KAFKA_SSL: 'true', KAFKA_SSL_CA_FILE: pem, ...sasl });
      expect(c.kafka.tls).toEqual({ ca: await readFile(pem, 'utf8'), cert: undefined, key: undefined });
      expect(c.kafka.sasl).toEqual({ mechanism: 'scram-sha-512', username: 'fleet', password: 'hunter2-kafka' });
      expect(loadConfig({}).kafka).toMatchObject({ tls: undefined, sasl: undefined });
      expect(loadConfig({ KAFKA_SSL: 'true' }).kafka.tls).toEqual({ ca: undefined, cert: undefined, key: undefined });

      const message = (env: Record<string, string>) => {
        try {
          loadConfig(env);
        } catch (e) {
          return (e as Error).message;
        }
        return '';
      };
      expect(message({ KAFKA_SASL_MECHANISM: 'gssapi' })).toMatch(/KAFKA_SASL_MECHANISM: expected plain, scram-sha-256 or scram-sha-512/);
      expect(message({ KAFKA_SASL_MECHANISM: 'scram-sha-256', KAFKA_SASL_USERNAME: 'fleet' })).toMatch(/KAFKA_SASL_PASSWORD: required when KAFKA_SASL_MECHANISM=scram-sha-256/);
      expect(message({ KAFKA_SASL_USERNAME: 'fleet', KAFKA_SASL_PASSWORD: 'hunter2-kafka' })).toMatch(/KAFKA_SASL_USERNAME: only used with KAFKA_SASL_MECHANISM/);
      expect(message({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'fleet', KAFKA_SASL_PASSWORD: 'hunter2-kafka' })).toMatch(/plain sends the password as it is: set KAFKA_SSL=true/);
      expect(message({ KAFKA_SSL_CA_FILE: pem })).toMatch(/KAFKA_SSL_CA_FILE: only used with KAFKA_SSL=true/);
      expect(message({ KAFKA_SSL: 'true', KAFKA_SSL_CERT_FILE: pem })).toMatch(/KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE: set both/);
      expect(message({ KAFKA_SSL: 'true', KAFKA_SSL_CA_FILE: path.join(dir, 'missing.pem') })).toMatch(/KAFKA_SSL_CA_FILE: cannot read .*missing\.pem \(ENOENT\)/);
      expect(message({ KAFKA_SSL: 'true', KAFKA_SSL_CA_FILE: notPem })).toMatch(/KAFKA_SSL_CA_FILE: .*ca\.txt is not a PEM file/);
      expect(message({ KAFKA_SSL: 'maybe', ...sasl, KAFKA_SASL_MECHANISM: 'x' })).not.toContain('hunter2-kafka');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a cron expression with a value out of range stops the start, naming the variable (not the fleet half started)', () => {
    expect(() => loadConfig({ POLL_CRON: '61 * * * *' })).toThrow(/^invalid configuration: POLL_CRON: expected a valid cron expression \(.*61.*\) \(got "61 \* \* \* \*"\)$/);
    expect(() => loadConfig({ WEEKLY_CRON: '0 9 * * 8' })).toThrow(/^invalid configuration: WEEKLY_CRON: expected a valid cron expression/);
    expect(() => loadConfig({ WEEKLY_CRON: '0 25 * * 1' })).toThrow(/WEEKLY_CRON: expected a valid cron expression/);
    expect(() => loadConfig({ WEEKLY_CRON: 'every monday' })).toThrow(/^invalid configuration: WEEKLY_CRON: expected a cron expression with 5 or 6 fields \(got "every monday"\)$/);
    expect(loadConfig({ POLL_CRON: '*/15 * * * *', WEEKLY_CRON: '0 9 * * MON' }).weekly.cron).toBe('0 9 * * MON');
  });

  it('numbers at their limits: empty or blank is no 0, other notations and values no timer or date takes are refused, naming the variable', () => {
    // `VAR=` in an env file: not 0 (a retention kept forever, a statement timeout of none, a random port).
    for (const raw of ['', ' ', '\t']) {
      expect(() => loadConfig({ BACKUP_RETENTION_DAYS: raw })).toThrow(/^invalid configuration: BACKUP_RETENTION_DAYS: expected a whole number \(it is empty: unset it for the default, 30\)/);
      expect(() => loadConfig({ EMAIL_RETENTION_DAYS: raw })).toThrow(/EMAIL_RETENTION_DAYS: expected a whole number \(it is empty/);
      expect(() => loadConfig({ DB_STATEMENT_TIMEOUT_MS: raw })).toThrow(/DB_STATEMENT_TIMEOUT_MS: expected a whole number/);
      expect(() => loadConfig({ HTTP_PORT: raw })).toThrow(/HTTP_PORT: expected a whole number/);
    }
    for (const raw of ['0x10', '1e3', '1e400', '12abc']) expect(() => loadConfig({ SCHEDULE_CHECK_MS: raw }), raw).toThrow(/SCHEDULE_CHECK_MS: expected a (whole )?number/);
    // Longer than a Node timer takes: it would fire after 1 ms, over and over.
    expect(() => loadConfig({ MAIL_SWEEP_INTERVAL_MS: '3000000000' })).toThrow(/^invalid configuration: MAIL_SWEEP_INTERVAL_MS: expected a whole number <= 2147483647 \(got "3000000000"\)$/);
    // Days beyond what a date holds: every nightly retention run (and the outbox prune) would throw.
    for (const v of ['BACKUP_RETENTION_DAYS', 'FAILED_RETENTION_DAYS', 'EMAIL_RETENTION_DAYS', 'OUTBOX_RETENTION_DAYS', 'SCRAPER_WATCH_DAYS']) {
      expect(() => loadConfig({ [v]: '100000000' }), v).toThrow(new RegExp(`^invalid configuration: ${v}: expected a whole number <= 36500 \\(got "100000000"\\)$`));
    }
    expect(() => loadConfig({ FAILED_RETENTION_DAYS: '-1' })).toThrow(/FAILED_RETENTION_DAYS: expected a whole number >= 0/);
    expect(loadConfig({ BACKUP_RETENTION_DAYS: ' 36500 ', FAILED_RETENTION_DAYS: '0', SHUTDOWN_TIMEOUT_MS: '2147483647' }).patientImport.retention).toMatchObject({ backupDays: 36_500, failedDays: 0 });
  });

  it('folders: blank is refused; the patient-import folders must be distinct', () => {
    for (const v of ['BACKUP_DIR', 'FAILED_DIR', 'LOCAL_BUCKET_DIR', 'MAIL_OUTBOX_DIR', 'SCRAPER_DROP_DIR']) {
      expect(() => loadConfig({ [v]: ' ' }), v).toThrow(new RegExp(`^invalid configuration: ${v}: expected a folder path \\(it is empty\\)`));
    }
    expect(() => loadConfig({ BACKUP_DIR: '/srv/copies', FAILED_DIR: '/srv/copies/' })).toThrow(
      /^invalid configuration: BACKUP_DIR and FAILED_DIR: expected two different folders \(both are \/srv\/copies\)$/,
    );
    expect(() => loadConfig({ LOCAL_BUCKET_DIR: 'var/failed/registrations' })).toThrow(/FAILED_DIR and LOCAL_BUCKET_DIR: expected two different folders/);
    expect(() => loadConfig({ STORAGE_DRIVER: 'gcs', GCS_BUCKET: 'curavani-staging', LOCAL_BUCKET_DIR: 'var/failed/registrations' })).not.toThrow();
  });

  it('reads booleans and numbers from their string forms', () => {
    const c = loadConfig({ PLATFORM_MIGRATIONS: 'false', DB_POOL_MAX: '3', RETRY_BACKOFF_SCALE: '0.5' });
    expect(c.db.platformMigrations).toBe(false);
    expect(c.db.poolMax).toBe(3);
    expect(c.queues.backoffScale).toBe(0.5);
  });
});

describe('README configuration table', () => {
  it('is the table generated from .env.example (run npx tsx scripts/config-table.ts)', async () => {
    const { parseEnvExample, renderConfigTable, withConfigTable } = await import('./env-doc.js');
    const example = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8');
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const rows = parseEnvExample(example);
    expect(rows.map((r) => r.name).sort()).toEqual(Object.keys(envSchema.shape).sort());
    expect(rows.every((r) => r.description.length > 0)).toBe(true);
    expect(withConfigTable(readme, renderConfigTable(rows))).toBe(readme);
  });
});
