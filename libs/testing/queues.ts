import { Redis } from 'ioredis';
import { createLogger, silentLogger } from '../log/index.js';
import { createMetrics } from '../metrics/index.js';
import { bindQueueWorker, QueueSet, redisConnection } from '../queues/index.js';
import { TEST_REDIS_URL } from './services.js';
import { testQueuePrefix } from './redis.js';

/**
 * Queues under a prefix of this test's own, on the machine's real Redis, with retry delays
 * scaled down. `close()` closes every connection and deletes every key under the prefix.
 */
export function createTestQueues(opts: { backoffScale?: number } = {}) {
  const { prefix, cleanup } = testQueuePrefix();
  const producer = redisConnection(TEST_REDIS_URL, 'producer');
  const queues = new QueueSet({ connection: producer, prefix, backoffScale: opts.backoffScale ?? 0.01 });
  const opened: Redis[] = [];
  return {
    prefix,
    queues,
    metrics: createMetrics(),
    log: silentLogger(),
    workerConnection(): Redis {
      const r = redisConnection(TEST_REDIS_URL, 'worker');
      opened.push(r);
      return r;
    },
    async close() {
      await queues.close();
      await Promise.allSettled(opened.map((r) => r.quit()));
      await producer.quit();
      await cleanup();
    },
  };
}

/**
 * A patient-import worker of `t` logging into `lines`, whose job runs until `finish` is called
 * (`running`: it has started); with a short lock (and stalled interval) for the lock and stall tests.
 */
export function workerHoldingItsJob(t: ReturnType<typeof createTestQueues>, opts: { lockDurationMs?: number; stalledIntervalMs?: number } = {}) {
  const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
  const log = createLogger({ level: 'info', pretty: 'false' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  let started!: () => void;
  const running = new Promise<void>((r) => (started = r));
  let finish!: () => void;
  const finished = new Promise<void>((r) => (finish = r));
  const worker = bindQueueWorker(
    'patient-import',
    {
      'patient-import': async () => {
        started();
        await finished;
        return 'ok';
      },
    },
    { connection: t.workerConnection(), prefix: t.prefix, log, metrics: t.metrics, queues: t.queues, concurrency: 1, ...opts },
  );
  return { lines, worker, running, finish };
}
