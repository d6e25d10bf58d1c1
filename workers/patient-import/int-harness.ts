import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger, type Logger } from '../../libs/log/index.js';
import { openContext, workerComponent, type Component, type FleetContext } from '../../libs/runtime/index.js';
import { createTestDatabase } from '../../libs/testing/db.js';
import { GcsStandIn } from '../../libs/testing/gcs-stand-in.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { bucketPollHandlers, patientImportHandlers } from './worker.js';
import { runPoll } from './run-poll.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';

export const BUCKET = 'curavani-test-data-transfer';
export const PREFIX = 'registrations/';

export interface HarnessOptions {
  /** A migrated database of the caller's own. */
  databaseUrl: string;
  queuePrefix: string;
  env?: Record<string, string>;
  log?: Logger;
  standIn?: GcsStandIn;
}

/**
 * `startImportHarness` over a database and a queue prefix of the test file's own. `close(started)`
 * stops the components the test started (the last first), then removes the harness, the queue
 * keys and the database.
 */
export async function startOwnImportHarness(env: Record<string, string> = {}) {
  const database = await createTestDatabase();
  const q = testQueuePrefix();
  const h = await startImportHarness({ databaseUrl: database.url, queuePrefix: q.prefix, env });
  return {
    database,
    q,
    h,
    async close(started: Component[]): Promise<void> {
      for (const c of [...started].reverse()) await c.stop(5_000).catch(() => {});
      await h.close();
      await q.cleanup();
      await database.drop();
    },
  };
}

/**
 * The patient import wired as in production (real PostgreSQL, Redis and the real GCS
 * client) against a GCS stand-in, with folders of its own. For integration tests, child
 * worker processes and the benchmark.
 */
export async function startImportHarness(o: HarnessOptions) {
  const standIn = o.standIn ?? (await new GcsStandIn({ recordRequests: false }).start());
  const dir = await mkdtemp(path.join(tmpdir(), 'patient-import-'));
  const env = harnessEnv({ ...o, standInUrl: standIn.url, dir });
  const ctx = openContext(loadConfig(env), o.log ?? silentLogger());
  const components: Component[] = [];
  return {
    ctx,
    standIn,
    dir,
    env,
    backupDir: env.BACKUP_DIR!,
    failedDir: env.FAILED_DIR!,
    async startWorkers(opts: { afterCommit?: () => void; stalledIntervalMs?: number } = {}): Promise<void> {
      const c = workerComponent(ctx, 'patient-import', patientImportHandlers(ctx, opts.afterCommit ? { afterCommit: opts.afterCommit } : {}), {
        ...(opts.stalledIntervalMs ? { stalledIntervalMs: opts.stalledIntervalMs, lockDurationMs: opts.stalledIntervalMs } : {}),
      });
      await c.start();
      components.push(c);
    },
    async startPollWorker(): Promise<void> {
      const c = workerComponent(ctx, 'bucket-poll', bucketPollHandlers(ctx));
      await c.start();
      components.push(c);
    },
    poll: () => runPoll(ctx),
    put(name: string, bytes: Buffer) {
      return standIn.putObject(BUCKET, name, bytes);
    },
    async close(opts: { keepStandIn?: boolean } = {}) {
      for (const c of components.reverse()) await c.stop(5_000).catch(() => {});
      await ctx.close();
      if (!o.standIn && !opts.keepStandIn) await standIn.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export type ImportHarness = Awaited<ReturnType<typeof startImportHarness>>;

export function harnessEnv(o: { databaseUrl: string; queuePrefix: string; env?: Record<string, string>; standInUrl: string; dir: string }): Record<string, string> {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATABASE_URL: o.databaseUrl,
    DB_POOL_MAX: '10',
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: o.queuePrefix,
    RETRY_BACKOFF_SCALE: '0.01',
    WORKER_CONCURRENCY: '4',
    STORAGE_DRIVER: 'gcs',
    GCS_BUCKET: BUCKET,
    GCS_PREFIX: PREFIX,
    GCS_API_ENDPOINT: o.standInUrl,
    GCS_MAX_RETRIES: '0',
    GCS_TIMEOUT_MS: '5000',
    BACKUP_DIR: path.join(o.dir, 'backup'),
    FAILED_DIR: path.join(o.dir, 'failed'),
    MAIL_OUTBOX_DIR: path.join(o.dir, 'outbox'),
    ...o.env,
  };
}

/** Polls `fn` until it returns a truthy value. */
export async function until<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export type { FleetContext };
