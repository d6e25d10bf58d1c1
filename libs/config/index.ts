import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';

/**
 * Every setting of the fleet, parsed once at start from the environment.
 * Each variable is documented with its default in .env.example; keep the two in step
 * (a test compares them).
 */

const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'], {
      error: 'expected true or false',
    })
    .default(fallback ? 'true' : 'false')
    .transform((v) => ['true', '1', 'yes', 'on'].includes(v));

/**
 * The largest whole number a variable takes: what a Node timer takes (a larger *_MS would fire
 * after 1 ms, over and over) and what PostgreSQL takes for a timeout.
 */
const MAX_INT = 2_147_483_647;
/** Retention and look-back windows in days: up to 100 years (0 is "forever" where the variable says so). */
const MAX_DAYS = 36_500;

// Written out in decimal: an empty or blank value (`VAR=` in a compose or env file) is not 0,
// which for a retention meant "keep forever" and for a timeout "none", without a word.
const int = (fallback: number, min = 0, max = MAX_INT) =>
  z
    .string()
    .optional()
    .transform((v, c) => {
      if (v === undefined) return fallback;
      const t = v.trim();
      if (t === '') {
        c.addIssue({ code: 'custom', message: `expected a whole number (it is empty: unset it for the default, ${fallback})` });
        return z.NEVER;
      }
      const n = Number(t);
      if (!/^[+-]?\d+(\.0*)?$/.test(t) && !Number.isNaN(n)) {
        c.addIssue({ code: 'custom', message: 'expected a whole number' });
        return z.NEVER;
      }
      return n;
    })
    .pipe(
      z
        .number({ error: 'expected a number' })
        .int({ error: 'expected a whole number', abort: true })
        .min(min, { error: `expected a whole number >= ${min}` })
        .max(max, { error: `expected a whole number <= ${max}` }),
    );
const days = (fallback: number) => int(fallback, 0, MAX_DAYS);

/** A folder: an empty or blank value would be the working directory (or a folder named " "). */
const dir = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .refine((v) => v.trim() !== '', { error: 'expected a folder path (it is empty)' });

const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v));


/** A URL of the one kind a client speaks: another scheme (mysql://, http://) fails here, naming the variable, not later. */
const urlOf = (schemes: [string, string], fallback: string) =>
  z
    .url({ protocol: new RegExp(`^(${schemes.join('|')})$`), error: `expected a ${schemes[0]}:// or ${schemes[1]}:// URL` })
    .default(fallback);

/** Why cron-parser (the parser BullMQ's job schedulers use) refuses an expression; undefined: it is valid. */
function cronProblem(v: string): string | undefined {
  try {
    CronExpressionParser.parse(v);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

// The field values are checked here too: a value out of range (minute 61, weekday 8) would
// otherwise pass and stop the fleet only when its schedule is registered, half started.
const cron = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .refine((v) => v.trim().split(/\s+/).length >= 5 && v.trim().split(/\s+/).length <= 6, {
      error: 'expected a cron expression with 5 or 6 fields',
      abort: true,
    })
    .superRefine((v, c) => {
      const problem = cronProblem(v.trim());
      if (problem) c.addIssue({ code: 'custom', message: `expected a valid cron expression (${problem})` });
    });

const timeZone = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .refine(
      (tz) => {
        try {
          new Intl.DateTimeFormat('en', { timeZone: tz });
          return true;
        } catch {
          return false;
        }
      },
      { error: 'expected an IANA time zone such as Europe/Berlin' },
    );

export const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LOG_PRETTY: z.enum(['auto', 'true', 'false']).default('auto'),
  FLEET_INSTANCE: z.string().default(''),

  DATABASE_URL: urlOf(['postgres', 'postgresql'], 'postgres://postgres@127.0.0.1:5432/curavani_fleet'),
  DB_POOL_MAX: int(10, 1),
  DB_STATEMENT_TIMEOUT_MS: int(30_000, 0),
  DB_IDLE_IN_TX_TIMEOUT_MS: int(60_000, 0),
  PLATFORM_MIGRATIONS: bool(true),

  REDIS_URL: urlOf(['redis', 'rediss'], 'redis://127.0.0.1:6379'),
  QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/, { error: 'expected letters, digits, - or _' })
    .default('fleet'),
  SHUTDOWN_TIMEOUT_MS: int(30_000, 0),
  WORKER_CONCURRENCY: int(4, 1),
  WORKER_LOCK_DURATION_MS: int(30_000, 1_000),
  WORKER_STALLED_INTERVAL_MS: int(30_000, 500),
  SCHEDULE_CHECK_MS: int(60_000, 500),
  RETRY_BACKOFF_SCALE: z.coerce.number({ error: 'expected a number' }).positive({ error: 'expected a number > 0' }).max(1, { error: 'expected a number <= 1' }).default(1),
  OUTAGE_CARRY_HOURS: int(24, 0, 720),

  HTTP_HOST: z.string().default('127.0.0.1'),
  HTTP_PORT: int(3000, 0).pipe(z.number().max(65_535, { error: 'expected a port number <= 65535' })),
  /** Unset: http://127.0.0.1:<HTTP_PORT> (publicBaseUrlOf), so links follow a port moved off 3000. */
  PUBLIC_BASE_URL: optionalString.pipe(z.url({ error: 'expected a URL' }).optional()),
  DASHBOARD_URL: optionalString.pipe(z.url({ error: 'expected a URL' }).optional()),
  DASHBOARD_USER: optionalString,
  DASHBOARD_PASSWORD: optionalString,
  READY_TIMEOUT_MS: int(2_000, 1),

  MAIL_DRIVER: z.enum(['outbox', 'resend']).default('outbox'),
  MAIL_OUTBOX_DIR: dir('var/outbox'),
  MAIL_FROM: z.string().default('Curavani <noreply@curavani.com>'),
  MAIL_RATE_PER_SECOND: int(2, 1),
  MAIL_BATCH_SIZE: int(100, 1).pipe(z.number().max(100, { error: 'expected a whole number <= 100 (the provider limit)' })),
  MAIL_REQUEST_TIMEOUT_MS: int(30_000, 1),
  MAIL_SWEEP_INTERVAL_MS: int(60_000, 1_000),
  MAIL_SWEEP_PENDING_AFTER_MS: int(60_000, 0),
  MAIL_SENDING_STALE_MS: int(3_600_000, 60_000),
  RESEND_API_KEY: optionalString,
  RESEND_BASE_URL: optionalString.pipe(z.url({ error: 'expected a URL' }).optional()),
  STAFF_EMAIL: z.email({ error: 'expected an email address' }).default('info@curavani.com'),
  EMAIL_RETENTION_DAYS: days(30),

  // therapist import (scraper file drops)
  SCRAPER_DROP_DIR: dir('var/scraper'),
  SCRAPER_STABILITY_MS: int(2_000, 50),
  SCRAPER_POLL_INTERVAL_MS: int(250, 10),
  SCRAPER_RUN_QUIET_MS: int(10_000, 0),
  SCRAPER_USE_POLLING: bool(false),
  SCRAPER_FILE_MAX_MB: int(16, 1),
  SCRAPER_WATCH_DAYS: days(35),
  SCRAPER_LEASE_CHECK_MS: int(5_000, 100),

  KAFKA_BROKERS: optionalString.pipe(
    z
      .string()
      .regex(/^\s*[^\s,:]+:\d+\s*(,\s*[^\s,:]+:\d+\s*)*$/, { error: 'expected host:port[,host:port...]' })
      .optional(),
  ),
  KAFKA_CLIENT_ID: z.string().min(1).default('curavani-fleet'),
  KAFKA_SSL: bool(false),
  KAFKA_SSL_CA_FILE: optionalString,
  KAFKA_SSL_CERT_FILE: optionalString,
  KAFKA_SSL_KEY_FILE: optionalString,
  KAFKA_SASL_MECHANISM: optionalString.pipe(
    z.enum(['plain', 'scram-sha-256', 'scram-sha-512'], { error: 'expected plain, scram-sha-256 or scram-sha-512' }).optional(),
  ),
  KAFKA_SASL_USERNAME: optionalString,
  KAFKA_SASL_PASSWORD: optionalString,
  KAFKA_CONNECTION_TIMEOUT_MS: int(3_000, 1),
  KAFKA_REQUEST_TIMEOUT_MS: int(30_000, 1),
  KAFKA_TOPIC_PARTITIONS: int(6, 1),
  KAFKA_TOPIC_REPLICATION_FACTOR: int(3, 1),
  OUTBOX_RELAY_BATCH_SIZE: int(500, 1),
  OUTBOX_RELAY_POLL_INTERVAL_MS: int(500, 10),
  OUTBOX_RELAY_BACKOFF_MIN_MS: int(500, 1),
  OUTBOX_RELAY_BACKOFF_MAX_MS: int(30_000, 1),
  OUTBOX_RELAY_KAFKA_TIMEOUT_MS: int(10_000, 100),
  OUTBOX_RETENTION_DAYS: days(7),

  POLL_CRON: cron('0 * * * *'),
  POLL_TZ: timeZone('Europe/Berlin'),
  POLL_PAGE_SIZE: int(1000, 1),
  BACKUP_DIR: dir('var/backup/registrations'),
  FAILED_DIR: dir('var/failed/registrations'),
  REGISTRATION_SIGNING_SECRET: optionalString,
  REGISTRATION_ENVIRONMENT: z.string().min(1).default('production'),
  REGISTRATION_FILE_MAX_MB: int(1, 1),
  STAFF_IMPORT_EMAILS: bool(true),
  BACKUP_RETENTION_DAYS: days(30),
  FAILED_RETENTION_DAYS: days(90),
  RETENTION_CRON: cron('30 3 * * *'),
  RETENTION_TZ: timeZone('Europe/Berlin'),

  WEEKLY_CRON: cron('0 9 * * 1'),
  WEEKLY_TZ: timeZone('Europe/Berlin'),
  WEEKLY_PAGE_SIZE: int(1000, 1),
  WEEKLY_CONTACT_EMAIL: z.email({ error: 'expected an email address' }).default('info@curavani.com'),
  WEEKLY_CONTACT_PHONE: optionalString,
  WEEKLY_UNSUBSCRIBE_MAILTO: z.email({ error: 'expected an email address' }).default('abmelden@curavani.com'),
  UNSUBSCRIBE_SECRET: optionalString.pipe(z.string().min(32, { error: 'expected at least 32 characters' }).optional()),
  // Earlier UNSUBSCRIBE_SECRETs, comma-separated: links signed with them are still accepted (a
  // rotation breaks no link patients already have); new links are signed with UNSUBSCRIBE_SECRET only.
  UNSUBSCRIBE_SECRET_PREVIOUS: z
    .string()
    .default('')
    .transform((v, c) => {
      const secrets = v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      // Said by entry and length only (describeIssue shows the variable's length, never its value).
      secrets.forEach((s, i) => {
        if (s.length < 32) c.issues.push({ code: 'custom', input: v, message: `expected at least 32 characters in each comma-separated secret (entry ${i + 1} has ${s.length})` });
      });
      return secrets;
    }),
  STORAGE_DRIVER: z.enum(['local', 'gcs']).default('local'),
  GCS_BUCKET: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/, {
      error: 'expected a GCS bucket name: 3 to 222 characters of lowercase letters, digits, . _ -, starting and ending with a letter or digit',
    })
    .default('curavani-production-data-transfer'),
  GCS_PREFIX: z.string().default('registrations/'),
  LOCAL_BUCKET_DIR: dir('var/bucket'),
  LOCAL_BUCKET_SETTLE_MS: int(1000, 0),
  GCS_API_ENDPOINT: optionalString.pipe(z.url({ error: 'expected a URL' }).optional()),
  GCS_PROJECT_ID: optionalString,
  GCS_TIMEOUT_MS: int(30_000, 1),
  GCS_MAX_RETRIES: int(3, 0),
  GCS_TOTAL_TIMEOUT_MS: int(60_000, 1000),
});

export type Env = z.infer<typeof envSchema>;

/**
 * The base of links in emails (unsubscribe): PUBLIC_BASE_URL, else this process's own HTTP
 * address on loopback (port 3000 when HTTP_PORT=0 picks a free one), so a fleet moved to another
 * port on a shared machine links to itself, not to whatever listens on 3000.
 */
function publicBaseUrlOf(e: Pick<Env, 'PUBLIC_BASE_URL' | 'HTTP_PORT'>): string {
  return e.PUBLIC_BASE_URL ?? `http://127.0.0.1:${e.HTTP_PORT || 3000}`;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function describeIssue(issue: z.core.$ZodIssue, env: Record<string, string | undefined>): string {
  const variable = issue.path.join('.') || '(environment)';
  const raw = env[variable];
  const secret = /SECRET|PASSWORD|API_KEY|TOKEN/.test(variable) || /^[a-z]+:\/\/[^/@]*:[^/@]*@/i.test(raw ?? '');
  const shown =
    raw === undefined
      ? 'it is missing'
      : secret
        ? `got a value of ${raw.length} characters`
        : `got ${JSON.stringify(raw.length > 60 ? raw.slice(0, 57) + '...' : raw)}`;
  return `${variable}: ${issue.message} (${shown})`;
}

export function parseEnv(env: Record<string, string | undefined> = process.env): Env {
  const result = envSchema.safeParse(env);
  if (!result.success) {
    const lines = result.error.issues.map((i) => describeIssue(i, env));
    throw new ConfigError(`invalid configuration: ${lines.join('; ')}`);
  }
  const e = result.data;
  if (e.MAIL_DRIVER === 'resend' && !e.RESEND_API_KEY) {
    throw new ConfigError('invalid configuration: RESEND_API_KEY: required when MAIL_DRIVER=resend (it is missing)');
  }
  // Emails that really go out carry unsubscribe links: signed with the development secret (in
  // the repository) they could be forged for every patient id. Production says so among its
  // other problems below; a staging or server run without NODE_ENV=production is refused here.
  if (e.MAIL_DRIVER === 'resend' && !e.UNSUBSCRIBE_SECRET && e.NODE_ENV !== 'production') {
    throw new ConfigError('invalid configuration: UNSUBSCRIBE_SECRET: required when MAIL_DRIVER=resend (it is missing); the development secret signs links anyone could forge');
  }
  // The same for the development secret set by hand, as the current or an earlier secret: links
  // verified with it could be forged for every patient id.
  if (e.MAIL_DRIVER === 'resend' || e.NODE_ENV === 'production') {
    const dev = unsubscribeSecretsDevDefault(e);
    if (dev.length) {
      throw new ConfigError(
        `invalid configuration: ${dev.join(', ')}: must not be the development secret when ${e.NODE_ENV === 'production' ? 'NODE_ENV=production' : 'MAIL_DRIVER=resend'} (it is in the repository: links could be forged)`,
      );
    }
  }
  if ((e.DASHBOARD_USER === undefined) !== (e.DASHBOARD_PASSWORD === undefined)) {
    throw new ConfigError(
      'invalid configuration: DASHBOARD_USER and DASHBOARD_PASSWORD: set both or neither (only one is set)',
    );
  }
  if (e.STORAGE_DRIVER === 'gcs' && !env.GCS_BUCKET?.trim()) {
    // The default names the production bucket, and the import deletes what it imported: a
    // staging or laptop run must not reach it by leaving the variable out.
    throw new ConfigError(
      `invalid configuration: GCS_BUCKET: required when STORAGE_DRIVER=gcs (it is missing); name the bucket to import from (the production bucket is ${e.GCS_BUCKET})`,
    );
  }
  checkFolders(e);
  checkKafkaSecurity(e);
  if (e.NODE_ENV === 'production') {
    const problems = productionProblems(e);
    if (problems.length) throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  return e;
}

/**
 * The local stand-ins that `npm start` uses by default are refused in production, all at once:
 * there they would send no email to anyone and read no registration from the bucket, with
 * nothing but a healthy-looking process to show for it.
 */
function productionProblems(e: Env): string[] {
  const problems: string[] = [];
  if (e.MAIL_DRIVER !== 'resend') {
    problems.push(
      `MAIL_DRIVER: expected resend when NODE_ENV=production (got ${e.MAIL_DRIVER}); the outbox driver only writes emails to MAIL_OUTBOX_DIR and sends none`,
    );
  }
  if (e.STORAGE_DRIVER !== 'gcs') {
    problems.push(
      `STORAGE_DRIVER: expected gcs when NODE_ENV=production (got ${e.STORAGE_DRIVER}); the local driver reads registrations from LOCAL_BUCKET_DIR, not from the bucket`,
    );
  }
  if (!e.UNSUBSCRIBE_SECRET) problems.push('UNSUBSCRIBE_SECRET: required when NODE_ENV=production (it is missing)');
  // The operator login guards patient data and nothing slows repeated guesses: no short password.
  if (e.DASHBOARD_PASSWORD !== undefined && e.DASHBOARD_PASSWORD.length < 16) {
    problems.push(`DASHBOARD_PASSWORD: at least 16 characters when NODE_ENV=production (got a value of ${e.DASHBOARD_PASSWORD.length} characters)`);
  }
  // Production emails carry one-click unsubscribe links under PUBLIC_BASE_URL: RFC 8058 wants
  // HTTPS, and a loopback address reaches nobody.
  const base = publicBaseUrlOf(e);
  const u = new URL(base);
  const loopback = ['localhost', '127.0.0.1', '[::1]', '0.0.0.0'].includes(u.hostname) || u.hostname.startsWith('127.');
  if (u.protocol !== 'https:' || loopback) {
    problems.push(`PUBLIC_BASE_URL: expected an https address patients can reach when NODE_ENV=production (got ${base}); emails link to it for unsubscribing`);
  }
  return problems;
}

/**
 * The folders the patient import keeps files in must be distinct: a copy's name is the same in
 * BACKUP_DIR and FAILED_DIR (`<ledger id>-<object name>`), so one folder for both would let the
 * backup retention remove a failed-folder copy, and the local bucket driver would read (and,
 * once imported, delete) the copies as new registrations.
 */
function checkFolders(e: Env): void {
  const folders = [['BACKUP_DIR', e.BACKUP_DIR], ['FAILED_DIR', e.FAILED_DIR], ...(e.STORAGE_DRIVER === 'local' ? [['LOCAL_BUCKET_DIR', e.LOCAL_BUCKET_DIR]] : [])] as const;
  for (let i = 0; i < folders.length; i++) {
    for (let j = i + 1; j < folders.length; j++) {
      const [a, da] = folders[i]!;
      const [b, db] = folders[j]!;
      if (path.resolve(da) === path.resolve(db)) throw new ConfigError(`invalid configuration: ${a} and ${b}: expected two different folders (both are ${path.resolve(da)})`);
    }
  }
}

/** The Kafka TLS and SASL variables that only make sense together. */
function checkKafkaSecurity(e: Env): void {
  const fail = (msg: string) => {
    throw new ConfigError(`invalid configuration: ${msg}`);
  };
  if (!e.KAFKA_SSL) {
    for (const v of ['KAFKA_SSL_CA_FILE', 'KAFKA_SSL_CERT_FILE', 'KAFKA_SSL_KEY_FILE'] as const) {
      if (e[v] !== undefined) fail(`${v}: only used with KAFKA_SSL=true (KAFKA_SSL is false)`);
    }
  }
  if ((e.KAFKA_SSL_CERT_FILE === undefined) !== (e.KAFKA_SSL_KEY_FILE === undefined)) {
    fail('KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE: set both (a client certificate and its key) or neither (only one is set)');
  }
  if (e.KAFKA_SASL_MECHANISM === undefined) {
    for (const v of ['KAFKA_SASL_USERNAME', 'KAFKA_SASL_PASSWORD'] as const) {
      if (e[v] !== undefined) fail(`${v}: only used with KAFKA_SASL_MECHANISM (it is missing)`);
    }
    return;
  }
  for (const v of ['KAFKA_SASL_USERNAME', 'KAFKA_SASL_PASSWORD'] as const) {
    if (e[v] === undefined) fail(`${v}: required when KAFKA_SASL_MECHANISM=${e.KAFKA_SASL_MECHANISM} (it is missing)`);
  }
  if (e.KAFKA_SASL_MECHANISM === 'plain' && !e.KAFKA_SSL) {
    fail('KAFKA_SASL_MECHANISM=plain sends the password as it is: set KAFKA_SSL=true (or use scram-sha-256/512)');
  }
}

/** A PEM file named by a variable, read at start so a wrong path stops the fleet with its name. */
function readPem(variable: string, file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`invalid configuration: ${variable}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!text.includes('-----BEGIN ')) throw new ConfigError(`invalid configuration: ${variable}: ${file} is not a PEM file (no -----BEGIN line)`);
  return text;
}

/** Signs unsubscribe links when no secret is set and no email really goes out (never with MAIL_DRIVER=resend or in production). */
export const DEV_UNSUBSCRIBE_SECRET = 'curavani-fleet-development-only-unsubscribe-secret';

/** The variables (never their values) that hold the development secret: UNSUBSCRIBE_SECRET, UNSUBSCRIBE_SECRET_PREVIOUS (entry n). */
function unsubscribeSecretsDevDefault(e: Pick<Env, 'UNSUBSCRIBE_SECRET' | 'UNSUBSCRIBE_SECRET_PREVIOUS'>): string[] {
  return [
    ...(e.UNSUBSCRIBE_SECRET === DEV_UNSUBSCRIBE_SECRET ? ['UNSUBSCRIBE_SECRET'] : []),
    ...e.UNSUBSCRIBE_SECRET_PREVIOUS.flatMap((s, i) => (s === DEV_UNSUBSCRIBE_SECRET ? [`UNSUBSCRIBE_SECRET_PREVIOUS (entry ${i + 1})`] : [])),
  ];
}

/** The parsed settings, grouped into the slices that libraries take as arguments. */
export function loadConfig(env: Record<string, string | undefined> = process.env) {
  const e = parseEnv(env);
  return {
    env: e.NODE_ENV,
    instance: e.FLEET_INSTANCE,
    log: { level: e.LOG_LEVEL, pretty: e.LOG_PRETTY, instance: e.FLEET_INSTANCE },
    db: {
      url: e.DATABASE_URL,
      poolMax: e.DB_POOL_MAX,
      statementTimeoutMs: e.DB_STATEMENT_TIMEOUT_MS,
      idleInTransactionTimeoutMs: e.DB_IDLE_IN_TX_TIMEOUT_MS,
      platformMigrations: e.PLATFORM_MIGRATIONS,
    },
    queues: {
      redisUrl: e.REDIS_URL,
      prefix: e.QUEUE_PREFIX,
      shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
      concurrency: e.WORKER_CONCURRENCY,
      /** A job's lock lives this long unless its worker renews it (every half of it). */
      lockDurationMs: e.WORKER_LOCK_DURATION_MS,
      /** How often a worker looks for jobs whose lock expired (their process died) and puts them back. */
      stalledIntervalMs: e.WORKER_STALLED_INTERVAL_MS,
      /** How often a process that registers a schedule checks it is still in Redis (and registers it again when not). */
      scheduleCheckMs: e.SCHEDULE_CHECK_MS,
      backoffScale: e.RETRY_BACKOFF_SCALE,
      /**
       * For how long after it was queued a job that could not reach PostgreSQL waits for it
       * without using up its attempts (0: such attempts count like any other failure).
       */
      outageCarryMs: e.OUTAGE_CARRY_HOURS * 3_600_000,
    },
    http: {
      host: e.HTTP_HOST,
      port: e.HTTP_PORT,
      publicBaseUrl: publicBaseUrlOf(e).replace(/\/+$/, ''),
      /** Where staff open the operator pages (links in staff emails); undefined: no links. */
      dashboardUrl: e.DASHBOARD_URL?.replace(/\/+$/, ''),
      dashboardUser: e.DASHBOARD_USER,
      dashboardPassword: e.DASHBOARD_PASSWORD,
      readyTimeoutMs: e.READY_TIMEOUT_MS,
    },
    mail: {
      driver: e.MAIL_DRIVER,
      outboxDir: e.MAIL_OUTBOX_DIR,
      from: e.MAIL_FROM,
      ratePerSecond: e.MAIL_RATE_PER_SECOND,
      batchSize: e.MAIL_BATCH_SIZE,
      requestTimeoutMs: e.MAIL_REQUEST_TIMEOUT_MS,
      sweepIntervalMs: e.MAIL_SWEEP_INTERVAL_MS,
      sweepPendingAfterMs: e.MAIL_SWEEP_PENDING_AFTER_MS,
      sendingStaleMs: e.MAIL_SENDING_STALE_MS,
      resendApiKey: e.RESEND_API_KEY,
      resendBaseUrl: e.RESEND_BASE_URL,
      staffEmail: e.STAFF_EMAIL,
      /**
       * Days a sent, failed or dropped delivery keeps its subject, body and headers after its last
       * change (0: forever); then the nightly retention sweep (RETENTION_CRON) blanks them.
       */
      retentionDays: e.EMAIL_RETENTION_DAYS,
    },
    kafka: {
      /** undefined: Kafka not configured (the relay stays idle, events stay in the outbox). */
      brokers: e.KAFKA_BROKERS?.split(',').map((b) => b.trim()),
      clientId: e.KAFKA_CLIENT_ID,
      /** TLS to the brokers: undefined for plain TCP; `ca` undefined trusts Node's built-in CAs. */
      tls: e.KAFKA_SSL
        ? {
            ca: e.KAFKA_SSL_CA_FILE === undefined ? undefined : readPem('KAFKA_SSL_CA_FILE', e.KAFKA_SSL_CA_FILE),
            cert: e.KAFKA_SSL_CERT_FILE === undefined ? undefined : readPem('KAFKA_SSL_CERT_FILE', e.KAFKA_SSL_CERT_FILE),
            key: e.KAFKA_SSL_KEY_FILE === undefined ? undefined : readPem('KAFKA_SSL_KEY_FILE', e.KAFKA_SSL_KEY_FILE),
          }
        : undefined,
      sasl:
        e.KAFKA_SASL_MECHANISM === undefined
          ? undefined
          : { mechanism: e.KAFKA_SASL_MECHANISM, username: e.KAFKA_SASL_USERNAME!, password: e.KAFKA_SASL_PASSWORD! },
      connectionTimeoutMs: e.KAFKA_CONNECTION_TIMEOUT_MS,
      requestTimeoutMs: e.KAFKA_REQUEST_TIMEOUT_MS,
      topicPartitions: e.KAFKA_TOPIC_PARTITIONS,
      topicReplicationFactor: e.KAFKA_TOPIC_REPLICATION_FACTOR,
    },
    outbox: {
      relayBatchSize: e.OUTBOX_RELAY_BATCH_SIZE,
      relayPollIntervalMs: e.OUTBOX_RELAY_POLL_INTERVAL_MS,
      relayBackoffMinMs: e.OUTBOX_RELAY_BACKOFF_MIN_MS,
      relayBackoffMaxMs: Math.max(e.OUTBOX_RELAY_BACKOFF_MAX_MS, e.OUTBOX_RELAY_BACKOFF_MIN_MS),
      /** The relay's own limit on waiting for Kafka to answer (connect, publish, probe); see KafkaSettings.answerTimeoutMs. */
      relayKafkaTimeoutMs: e.OUTBOX_RELAY_KAFKA_TIMEOUT_MS,
      retentionDays: e.OUTBOX_RETENTION_DAYS,
    },
    patientImport: {
      pollCron: e.POLL_CRON,
      pollTimeZone: e.POLL_TZ,
      pageSize: e.POLL_PAGE_SIZE,
      backupDir: e.BACKUP_DIR,
      failedDir: e.FAILED_DIR,
      signingSecret: e.REGISTRATION_SIGNING_SECRET,
      environment: e.REGISTRATION_ENVIRONMENT,
      maxFileBytes: e.REGISTRATION_FILE_MAX_MB * 1024 * 1024,
      staffImportEmails: e.STAFF_IMPORT_EMAILS,
      /** Local copies of finished rows are removed this many days after the row became final (0: kept forever). */
      retention: { backupDays: e.BACKUP_RETENTION_DAYS, failedDays: e.FAILED_RETENTION_DAYS, cron: e.RETENTION_CRON, timeZone: e.RETENTION_TZ },
    },
    weekly: {
      cron: e.WEEKLY_CRON,
      timeZone: e.WEEKLY_TZ,
      pageSize: e.WEEKLY_PAGE_SIZE,
      contactEmail: e.WEEKLY_CONTACT_EMAIL,
      contactPhone: e.WEEKLY_CONTACT_PHONE,
      unsubscribeMailto: e.WEEKLY_UNSUBSCRIBE_MAILTO,
      unsubscribeSecret: e.UNSUBSCRIBE_SECRET ?? DEV_UNSUBSCRIBE_SECRET,
      /** Earlier secrets (UNSUBSCRIBE_SECRET_PREVIOUS): accepted when verifying a link, never used to sign one. */
      previousUnsubscribeSecrets: e.UNSUBSCRIBE_SECRET_PREVIOUS,
    },
    therapistImport: {
      dropDir: e.SCRAPER_DROP_DIR,
      stabilityMs: e.SCRAPER_STABILITY_MS,
      pollIntervalMs: e.SCRAPER_POLL_INTERVAL_MS,
      runQuietMs: e.SCRAPER_RUN_QUIET_MS,
      usePolling: e.SCRAPER_USE_POLLING,
      maxFileBytes: e.SCRAPER_FILE_MAX_MB * 1024 * 1024,
      watchDays: e.SCRAPER_WATCH_DAYS,
      leaseCheckMs: e.SCRAPER_LEASE_CHECK_MS,
    },
    storage: {
      driver: e.STORAGE_DRIVER,
      bucket: e.GCS_BUCKET,
      prefix: e.GCS_PREFIX,
      local: { dir: e.LOCAL_BUCKET_DIR, settleMs: e.LOCAL_BUCKET_SETTLE_MS },
      gcs: {
        apiEndpoint: e.GCS_API_ENDPOINT,
        projectId: e.GCS_PROJECT_ID,
        timeoutMs: e.GCS_TIMEOUT_MS,
        maxRetries: e.GCS_MAX_RETRIES,
        totalTimeoutMs: e.GCS_TOTAL_TIMEOUT_MS,
      },
    },
  };
}

export type Config = ReturnType<typeof loadConfig>;

export { bool as envBool, int as envInt, cron as envCron, timeZone as envTimeZone, optionalString as envOptionalString };

/** Where a service URL points (host:port), for messages: never the credentials it may carry. */
export function urlTarget(url: string, defaultPort: number, variable: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || '127.0.0.1'}:${u.port || defaultPort}`;
  } catch {
    return `(${variable} not parsable)`;
  }
}
