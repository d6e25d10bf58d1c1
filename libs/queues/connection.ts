import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../log/index.js';

/**
 * Redis connections as BullMQ's production guide advises:
 * - workers never give up on Redis (maxRetriesPerRequest: null, reconnect forever with backoff);
 * - producers fail fast (no offline queue, few retries), so a request handler or CLI gets
 *   an error instead of hanging while Redis is away.
 */
export function redisConnection(url: string, role: 'worker' | 'producer', extra: RedisOptions = {}): Redis {
  const common: RedisOptions = {
    retryStrategy: (times) => Math.min(1000 * 2 ** Math.min(times, 5), 20_000) + Math.floor(Math.random() * 500),
    lazyConnect: false,
    ...extra,
  };
  if (role === 'worker') {
    return new Redis(url, { ...common, maxRetriesPerRequest: null, enableReadyCheck: false });
  }
  return new Redis(url, { ...common, maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 5_000 });
}

/** A prefix in braces keeps every key of the fleet in one Redis Cluster hash slot. */
export function clusterSafePrefix(prefix: string): string {
  return prefix.startsWith('{') ? prefix : `{${prefix}}`;
}

/** BullMQ loses jobs when Redis evicts keys; say so loudly at start. */
export async function warnUnlessNoEviction(redis: Redis, log: Logger, waitMs = 10_000): Promise<string | null> {
  try {
    // A producer connection has no offline queue: wait until it is connected before asking.
    if (redis.status !== 'ready') {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`redis not ready after ${waitMs} ms`)), waitMs);
        redis.once('ready', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const reply = (await redis.config('GET', 'maxmemory-policy')) as string[];
    const policy = reply[1] ?? null;
    if (policy !== 'noeviction') {
      log.warn({ policy }, 'redis maxmemory-policy is not noeviction: queued jobs can be evicted and lost');
    }
    return policy;
  } catch (err) {
    log.warn({ err }, 'could not read redis maxmemory-policy (CONFIG GET refused); make sure it is noeviction');
    return null;
  }
}
