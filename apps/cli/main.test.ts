import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { closedPort, silentServer } from '../../libs/testing/ports.js';
import { TEST_ADMIN_DB_URL, TEST_REDIS_URL } from '../../libs/testing/services.js';
import { runCli } from './run-cli.js';

/** The real CLI; none of these commands gets as far as opening a connection. */
const fleet = (...args: string[]) => runCli(args, { LOG_LEVEL: 'warn' });

describe.concurrent('fleet exit codes (README: 0 done, 1 failure, 2 bad usage or configuration, 3 not found)', () => {
  it.each([
    [['frobnicate'], "unknown command 'frobnicate'"],
    [['dlq', 'discard'], "missing required argument 'id'"],
    [['dlq', 'requeue', '--bogus'], "unknown option '--bogus'"],
    [['dlq', 'list', '--queue'], "option '--queue <queue>' argument missing"],
    // Bull Board names the dead letters' queue patient-import-dlq; --queue wants the job's own queue.
    [['dlq', 'list', '--queue', 'patient-import-dlq'], 'unknown queue patient-import-dlq: --queue takes the queue the job belongs to (--queue patient-import), not its dead-letter queue'],
    [['imports'], 'Usage: fleet imports'],
    [[], 'Usage: fleet'],
  ])('fleet %j is bad usage: exit 2', { timeout: 30_000 }, async (args, message) => {
    const r = await fleet(...args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    // commander's own errors read like the fleet's ("fleet: ..."), not "error: ..."; a group
    // without its subcommand prints its usage instead.
    if (!message.startsWith('Usage:')) expect(r.stderr).toMatch(new RegExp(`^fleet: ${message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  });

  it('fleet --help names the environment the CLI reads and the exit codes', { timeout: 30_000 }, async () => {
    const r = await fleet('--help');
    expect(r.stdout).toContain('export the values the fleet runs with in this terminal too');
    expect(r.stdout).toContain('Exit codes: 0 done, 1 failure, 2 bad usage or configuration, 3 not found.');
  });

  // Defaults were shown three ways: (default: "50"), (default 24), (default KAFKA_TOPIC_PARTITIONS).
  it.each([
    [['events', 'list', '--help'], 'at most this many events (default: 50)'],
    [['events', 'parked', '--help'], 'at most this many events (default: 100)'],
    [['events', 'setup', '--help'], 'partitions per topic (default: KAFKA_TOPIC_PARTITIONS)'],
    [['daily', '--help'], 'window in hours (default: 24)'],
    [['imports', 'list', '--help'], 'at most this many (default: 50)'],
  ])('fleet %j shows defaults one way: (default: X)', { timeout: 30_000 }, async (args, text) => {
    const r = await fleet(...args);
    expect(r.stdout.replace(/\s+/g, ' ')).toContain(text);
    expect(r.stdout).not.toMatch(/\(default: "|\(default [^:]/);
  });

  it.each([[['--help']], [['help', 'dlq']], [['dlq', 'discard', '--help']], [['--version']]])('fleet %j exits 0', { timeout: 30_000 }, async (args) => {
    const r = await fleet(...args);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toBe('');
  });
});

describe('a Redis the CLI cannot reach', () => {
  // README: the CLI fails fast. BullMQ waits for its connection to become ready, and a connection
  // that reconnects forever kept `fleet status` (and a cron job running `fleet daily --json`)
  // waiting without a word for as long as Redis was away.
  it.each([[['status']], [['dlq', 'list']], [['dlq', 'requeue', 'patient-import.ledger.1', '--reason', 'r']], [['dlq', 'discard', 'patient-import.ledger.1', '--reason', 'r']]])('fleet %j fails with exit 1 naming REDIS_URL instead of waiting', { timeout: 60_000 }, async (args) => {
    const port = await closedPort();
    const r = await runCli(args, { LOG_LEVEL: 'warn', REDIS_URL: `redis://:s3cret@127.0.0.1:${port}` }, { timeoutMs: 45_000 });
    expect(r.code).toBe(1);
    // While the connection keeps trying (a restarting Redis is waited for), one line says so.
    expect(r.stderr).toBe(
      `fleet: waiting for redis at 127.0.0.1:${port} (REDIS_URL): connect ECONNREFUSED 127.0.0.1:${port}; trying again for up to 10 s\n` +
        `fleet: redis not reachable at 127.0.0.1:${port} (REDIS_URL): connect ECONNREFUSED 127.0.0.1:${port}\n`,
    );
  });
});

describe('fleet poll while Redis is away', () => {
  // A drill: the poll listed the bucket and recorded the new files, then failed at its first
  // enqueue; the files it recorded waited for the next scheduled poll (an hour by default).
  it('fails before it lists or records anything, naming REDIS_URL', { timeout: 60_000 }, async () => {
    const port = await closedPort();
    const db = await createTestDatabase();
    const bucket = await mkdtemp(path.join(tmpdir(), 'fleet-poll-'));
    try {
      await mkdir(path.join(bucket, 'registrations'));
      await writeFile(path.join(bucket, 'registrations/Muster_Max_20250705_0b1ab67b.json'), '{}');
      await utimes(path.join(bucket, 'registrations/Muster_Max_20250705_0b1ab67b.json'), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
      const r = await runCli(['poll'], { LOG_LEVEL: 'warn', DATABASE_URL: db.url, REDIS_URL: `redis://127.0.0.1:${port}`, STORAGE_DRIVER: 'local', LOCAL_BUCKET_DIR: bucket }, { timeoutMs: 45_000 });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        `fleet: waiting for redis at 127.0.0.1:${port} (REDIS_URL): connect ECONNREFUSED 127.0.0.1:${port}; trying again for up to 10 s\n` +
          `fleet: redis not reachable at 127.0.0.1:${port} (REDIS_URL): connect ECONNREFUSED 127.0.0.1:${port}\n`,
      );
      expect(await db.sql`select id from fleet.patient_import_ledger`).toHaveLength(0);
    } finally {
      await db.drop();
      await rm(bucket, { recursive: true, force: true });
    }
  });
});

describe('a Redis that accepts connections but never answers', () => {
  // A stopped (SIGSTOP), hung or partitioned Redis: TCP connects, no reply ever comes. The
  // connection never became ready and nothing timed out, so `fleet status` waited without a word
  // for as long as Redis stayed silent, while the fleet's own /ready already said `redis down`.
  it.each([[['status']], [['dlq', 'list']], [['dlq', 'requeue', 'patient-import.ledger.1', '--reason', 'r']]])('fleet %j fails with exit 1 naming REDIS_URL instead of waiting', { timeout: 60_000 }, async (args) => {
    const silent = await silentServer();
    const port = silent.port;
    try {
      const r = await runCli(args, { LOG_LEVEL: 'warn', REDIS_URL: `redis://127.0.0.1:${port}` }, { timeoutMs: 45_000 });
      expect(r.code).toBe(1);
      const at = `127\\.0\\.0\\.1:${port} \\(REDIS_URL\\): connected, but no reply within 5 s`;
      expect(r.stderr).toMatch(new RegExp(`^fleet: waiting for redis at ${at}; trying again for up to 10 s\\nfleet: redis not reachable at ${at}\\n$`));
    } finally {
      await silent.close();
    }
  });
});

describe('a database the CLI cannot reach', () => {
  // As for Redis: which service, where, and the variable to check. `fleet daily` said only
  // `fleet: connect ECONNREFUSED 127.0.0.1:5432`, `fleet imports list` `database query failed: ...`.
  it.each([[['imports', 'list']], [['daily']]])('fleet %j fails with exit 1 naming DATABASE_URL, not drizzle\'s statement and parameters', { timeout: 30_000 }, async (args) => {
    const port = await closedPort();
    const r = await runCli(args, { LOG_LEVEL: 'warn', DATABASE_URL: `postgres://postgres:s3cret@127.0.0.1:${port}/nowhere`, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: testQueuePrefix().prefix });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`fleet: postgres not reachable at 127.0.0.1:${port} (DATABASE_URL): connect ECONNREFUSED 127.0.0.1:${port}\n`);
  });

  it('a database that takes the connection and never answers (stopped, hung) is named after the command\'s 10 s connect limit, not as CONNECT_TIMEOUT', { timeout: 60_000 }, async () => {
    const silent = await silentServer();
    const port = silent.port;
    try {
      const r = await runCli(['imports', 'list'], { LOG_LEVEL: 'warn', DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nowhere`, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: testQueuePrefix().prefix }, { timeoutMs: 45_000 });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`fleet: postgres not reachable at 127.0.0.1:${port} (DATABASE_URL): no answer within 10 s while connecting\n`);
    } finally {
      await silent.close();
    }
  });

  // It said only `\`fleet migrate\` creates it`, which in a terminal without the fleet's
  // DATABASE_URL (the README's most common first-day slip) creates a second, empty database.
  it('a database that does not exist is named as such: check DATABASE_URL, or create it with fleet migrate', { timeout: 30_000 }, async () => {
    const url = new URL(TEST_ADMIN_DB_URL);
    url.pathname = `/fleet_never_created_${process.pid}`;
    const r = await runCli(['imports', 'list'], { LOG_LEVEL: 'warn', DATABASE_URL: url.toString(), REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: testQueuePrefix().prefix });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `fleet: postgres at ${url.host} (DATABASE_URL): database "fleet_never_created_${process.pid}" does not exist; is DATABASE_URL the fleet's? (the CLI reads the environment only: export the fleet's DATABASE_URL and QUEUE_PREFIX in this terminal too) A new database: \`fleet migrate\` creates it\n`,
    );
  });
});

describe('fleet start and fleet migrate with PostgreSQL down', () => {
  // They said only `fleet: connect ECONNREFUSED 127.0.0.1:5441` (found in an outage walkthrough),
  // where every other command names the service and the variable, as the README promises.
  it.each([[['migrate']], [['start', '--only', 'scraper-watcher']], [['start', '--no-migrate', '--only', 'scraper-watcher']]])(
    'fleet %j fails with exit 1 naming DATABASE_URL',
    { timeout: 60_000 },
    async (args) => {
      const port = await closedPort();
      const q = testQueuePrefix();
      const dir = await mkdtemp(path.join(tmpdir(), 'fleet-start-pg-down-'));
      try {
        const r = await runCli(
          args,
          { LOG_LEVEL: 'warn', LOG_PRETTY: 'false', DATABASE_URL: `postgres://postgres:s3cret@127.0.0.1:${port}/nowhere`, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix, HTTP_PORT: '0', SCRAPER_DROP_DIR: dir },
          { timeoutMs: 45_000 },
        );
        expect(r.code).toBe(1);
        expect(r.stderr).toBe(`fleet: postgres not reachable at 127.0.0.1:${port} (DATABASE_URL): connect ECONNREFUSED 127.0.0.1:${port}\n`);
      } finally {
        await q.cleanup();
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});

describe('fleet start --only with no role in it', () => {
  // `fleet start --only "$ROLES"` with the variable empty started every role (polling, watching,
  // sending) where one was meant: bad usage, refused before anything connects.
  it.each([[''], [' , ']])('fleet start --only %j is bad usage: exit 2, nothing started', { timeout: 60_000 }, async (only) => {
    const port = await closedPort();
    const dir = await mkdtemp(path.join(tmpdir(), 'fleet-start-only-empty-'));
    try {
      const folders = Object.fromEntries(['BACKUP_DIR', 'FAILED_DIR', 'MAIL_OUTBOX_DIR', 'LOCAL_BUCKET_DIR', 'SCRAPER_DROP_DIR'].map((v) => [v, path.join(dir, v)]));
      await Promise.all(Object.values(folders).map((f) => mkdir(f)));
      const r = await runCli(
        ['start', '--only', only],
        { LOG_LEVEL: 'warn', LOG_PRETTY: 'false', DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nowhere`, REDIS_URL: `redis://127.0.0.1:${port}`, HTTP_PORT: '0', ...folders },
        { timeoutMs: 45_000 },
      );
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^fleet: --only names no role; known roles: .*scraper-watcher.*\n$/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a database older than the CLI (not migrated yet)', () => {
  it('says to run fleet migrate after what PostgreSQL said', { timeout: 60_000 }, async () => {
    // A new release's CLI before `fleet migrate` (a rolling deploy): PostgreSQL's "column ... does
    // not exist" alone leaves the operator guessing.
    const db = await createTestDatabase();
    const q = testQueuePrefix();
    try {
      await db.sql`alter table fleet.deliveries drop column contents_removed_at`;
      const r = await runCli(['retention', 'run', '--dry-run'], { LOG_LEVEL: 'warn', DATABASE_URL: db.url, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        'fleet: database query failed: 42703 column deliveries.contents_removed_at does not exist (is the database migrated for this release? run fleet migrate)\n',
      );
    } finally {
      await db.drop();
      await q.cleanup();
    }
  });
});

describe('output into a pipe that is closed early (fleet status | head -3)', () => {
  // The reader stops reading: the write fails with EPIPE, which ended the CLI with an unhandled
  // 'error' event and a stack trace under the lines the operator asked for.
  it('ends quietly with exit 0', { timeout: 60_000 }, async () => {
    const q = testQueuePrefix();
    try {
      const main = fileURLToPath(new URL('./main.ts', import.meta.url));
      const child = spawn(process.execPath, ['--import', 'tsx', main, 'status'], {
        env: { ...process.env, LOG_LEVEL: 'warn', REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: q.prefix },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout.destroy(); // head has read its lines and gone
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
      expect(stderr).not.toContain('EPIPE');
      expect(code).toBe(0);
    } finally {
      await q.cleanup();
    }
  });
});
