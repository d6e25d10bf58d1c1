import type { Redis } from 'ioredis';
import type { Config } from '../config/index.js';
import type postgres from 'postgres';
import { openDatabase, openProbeConnection, type Database } from '../db/client.js';
import type { Logger } from '../log/index.js';
import { createMetrics, type Metrics } from '../metrics/index.js';
import { QueueSet, redisConnection } from '../queues/index.js';
import { systemClock, type Clock } from './clock.js';
import { createReadiness, type Readiness } from './readiness.js';
import { settlesWithin } from './within.js';

/**
 * The connections and shared services of one fleet process, opened once by the app and
 * handed to every worker binding and producer. Nothing here is opened at import time.
 */
export interface FleetContext {
  config: Config;
  log: Logger;
  database: Database;
  /** Fail-fast connection for producers, status and the dashboard. */
  producerRedis: Redis;
  queues: QueueSet;
  metrics: Metrics;
  clock: Clock;
  /** Checks and phase behind `GET /ready`; the runtime adds each component's `ready()`. */
  readiness: Readiness;
  /** Opens a worker connection (retries Redis forever); closed by the runtime. */
  workerRedis(): Redis;
  /** The readiness probe's own PostgreSQL connection (not the workers' pool), opened on first use. */
  probeSql(): postgres.Sql;
  close(): Promise<void>;
}

/** How long closing waits for Redis (BullMQ's close, then QUIT) before it drops the connections. */
export const REDIS_CLOSE_WAIT_MS = 2_000;

export interface OpenContextOptions {
  clock?: Clock;
  metrics?: Metrics;
  /**
   * `command`: a one-shot command (the CLI), whose Redis connection gives up instead of
   * reconnecting forever, and whose queues write no meta key to Redis by being opened (a
   * read-only command leaves no trace under a mistyped QUEUE_PREFIX; see QueueSetOptions.writeMeta).
   */
  redisRole?: 'producer' | 'command';
  /** How long the pool waits for a connection to PostgreSQL (default 30 s, postgres.js's). */
  dbConnectTimeoutSeconds?: number;
}

export function openContext(config: Config, log: Logger, opts: OpenContextOptions = {}): FleetContext {
  const applicationName = `curavani-fleet${config.instance ? `:${config.instance}` : ''}`;
  const database = openDatabase({ ...config.db, applicationName, ...(opts.dbConnectTimeoutSeconds !== undefined ? { connectTimeoutSeconds: opts.dbConnectTimeoutSeconds } : {}) });
  let probe: postgres.Sql | null = null;
  const producerRedis = redisConnection(config.queues.redisUrl, opts.redisRole ?? 'producer');
  producerRedis.on('error', (err) => log.debug({ err }, 'redis (producer) connection error'));
  const queues = new QueueSet({ connection: producerRedis, prefix: config.queues.prefix, backoffScale: config.queues.backoffScale, writeMeta: opts.redisRole !== 'command' });
  const workerConnections: Redis[] = [];
  return {
    config,
    log,
    database,
    producerRedis,
    queues,
    metrics: opts.metrics ?? createMetrics(),
    clock: opts.clock ?? systemClock,
    readiness: createReadiness(),
    workerRedis() {
      const r = redisConnection(config.queues.redisUrl, 'worker');
      r.on('error', (err) => log.debug({ err }, 'redis (worker) connection error'));
      workerConnections.push(r);
      return r;
    },
    probeSql() {
      probe ??= openProbeConnection({ url: config.db.url, applicationName });
      return probe;
    },
    async close() {
      await probe?.end({ timeout: 1 });
      // A Redis that is away (ioredis reconnects for ever) or stopped/hung (connected, silent)
      // held BullMQ's close and QUIT, and the process with them, for as long as it stayed so,
      // well past SHUTDOWN_TIMEOUT_MS: each step waits REDIS_CLOSE_WAIT_MS, then the
      // connections are dropped without their QUIT (nothing is lost: a job whose worker did not
      // finish it goes back to the queue once its lock expires, as after a forced stop).
      const gaveUp: string[] = [];
      if (!(await settlesWithin(queues.close().catch(() => {}), REDIS_CLOSE_WAIT_MS))) gaveUp.push('queues');
      const connections: Array<[string, Redis]> = [...workerConnections.map((r, i): [string, Redis] => [`worker ${i + 1}`, r]), ['producer', producerRedis]];
      await Promise.all(
        connections.map(async ([name, r]) => {
          const quit = r.quit().then(
            () => true,
            () => false,
          );
          const answered = await settlesWithin(quit, REDIS_CLOSE_WAIT_MS);
          if (!answered) gaveUp.push(`redis ${name}`);
          if (!answered || !(await quit)) r.disconnect();
        }),
      );
      if (gaveUp.length) {
        log.warn({ gaveUp, waitedMs: REDIS_CLOSE_WAIT_MS }, 'closing: redis did not answer in time; its connections were dropped without waiting');
      }
      await database.close();
    },
  };
}
