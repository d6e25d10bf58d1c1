import { Redis } from 'ioredis';
import { silentLogger } from '../log/index.js';
import { createMetrics } from '../metrics/index.js';
import { QueueSet, redisConnection } from '../queues/index.js';
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
