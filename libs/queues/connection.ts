import { Redis, type RedisOptions } from 'ioredis';
import { urlTarget } from '../config/index.js';
import type { Logger } from '../log/index.js';

/** How long a command's connection keeps trying to reach Redis before it gives up. */
export const COMMAND_REDIS_GIVE_UP_MS = 10_000;

/**
 * How long a command's connection waits for one reply. A Redis that accepts connections but
 * never answers (stopped with SIGSTOP, hung, a network that drops packets) is otherwise never
 * given up on: the connection never becomes ready (its ready check waits for INFO), so nothing
 * fails and nothing times out.
 */
export const COMMAND_REDIS_REPLY_TIMEOUT_MS = 5_000;

/** The longest wait between two attempts of a connection to reach Redis again (plus up to 0.5 s of jitter). */
export const REDIS_RECONNECT_MAX_MS = 2_000;

/**
 * How long a connection waits before its `times`th attempt to reach Redis again: 0.5 s, 1 s,
 * then every 2 s (each plus up to 0.5 s of jitter, so a fleet's connections do not all knock at
 * once). A drill stopping Redis for 3 minutes: the wait had doubled to 20 s, so every role
 * resumed 13-15 s after Redis was back (`/ready` 503 as long), and a worker back before the
 * producer connection its jobs enqueue on failed those jobs' attempts (`Stream isn't
 * writeable`). A refused connection attempt costs Redis next to nothing: some 15 connections of
 * a fleet process knock 6-8 times a second.
 */
export function redisReconnectDelayMs(times: number): number {
  return Math.min(500 * 2 ** Math.max(times - 1, 0), REDIS_RECONNECT_MAX_MS) + Math.floor(Math.random() * 500);
}

/**
 * Redis connections as BullMQ's production guide advises:
 * - workers never give up on Redis (maxRetriesPerRequest: null, reconnect forever with backoff);
 * - producers fail fast (no offline queue, few retries), so a request handler gets an error
 *   instead of hanging while Redis is away, and reconnect when it is back;
 * - a one-shot command (the CLI) is a producer that stops reconnecting once Redis has been out of
 *   reach for COMMAND_REDIS_GIVE_UP_MS: BullMQ waits for its connection to be ready before each
 *   call, so a connection that reconnects forever made `fleet status` wait without a word; and
 *   a reply (the ready check's included) that takes longer than COMMAND_REDIS_REPLY_TIMEOUT_MS
 *   counts as out of reach, so a silent Redis ends the same way as one that refuses.
 */
export function redisConnection(url: string, role: 'worker' | 'producer' | 'command', extra: RedisOptions = {}): Redis {
  const common: RedisOptions = {
    retryStrategy: redisReconnectDelayMs,
    lazyConnect: false,
    ...extra,
  };
  if (role === 'worker') {
    return tracked(new Redis(url, { ...common, maxRetriesPerRequest: null, enableReadyCheck: false }));
  }
  const producer: RedisOptions = { ...common, maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 5_000 };
  if (role === 'producer') return tracked(new Redis(url, producer));
  // Counted from the first attempt (not from its failure): a silent Redis spends
  // COMMAND_REDIS_REPLY_TIMEOUT_MS on each attempt before it fails.
  let failingSince: number | null = Date.now();
  const redis = new Redis(url, {
    ...producer,
    commandTimeout: COMMAND_REDIS_REPLY_TIMEOUT_MS,
    retryStrategy: (times) => {
      failingSince ??= Date.now();
      return Date.now() - failingSince >= COMMAND_REDIS_GIVE_UP_MS ? null : Math.min(500 * times, 2_000);
    },
  });
  redis.on('ready', () => {
    failingSince = null;
  });
  redis.on('connecting', () => {
    failingSince ??= Date.now();
  });
  return tracked(redis);
}

const lastErrors = new WeakMap<Redis, string>();

/**
 * Remembers the connection's last error until it is ready again (see redisLastError). Not until
 * it connects: a Redis that takes the connection and never answers connects at every retry, and
 * why it is not ready (its reply timed out) was then forgotten at once.
 */
function tracked(redis: Redis): Redis {
  redis.on('error', (err: Error) => lastErrors.set(redis, err.message));
  redis.on('ready', () => lastErrors.delete(redis));
  return redis;
}

/** Why a connection from redisConnection is not ready (ECONNREFUSED, a reply timed out, ...), if it said so since it was last ready. */
export function redisLastError(redis: Redis): string | undefined {
  return lastErrors.get(redis);
}

/**
 * Redis did not become ready within `waitMs` (see redisReady): `lastError` is why, when the
 * connection said so (ECONNREFUSED, a timed-out reply), for a message naming the service.
 */
export class RedisNotReadyError extends Error {
  override name = 'RedisNotReadyError';
  constructor(
    readonly waitMs: number,
    readonly lastError: string | undefined,
  ) {
    super(`redis not ready after ${waitMs} ms${lastError ? ` (${lastError})` : ''}`);
  }
}

/**
 * Whether `redis` is connected now or becomes so within `waitMs`. A producer connection has no
 * offline queue (a command sent while it connects fails) and BullMQ waits for the connection
 * before each call, so callers that must not fail or hang wait here first.
 */
export function redisReady(redis: Redis, waitMs: number): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const onReady = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      redis.off('ready', onReady);
      resolve(false);
    }, waitMs);
    redis.once('ready', onReady);
  });
}

/** Where a Redis URL points (host:port), for messages: never the password it may carry. */
export function redisTarget(url: string): string {
  return urlTarget(url, 6379, 'REDIS_URL');
}

/** A prefix in braces keeps every key of the fleet in one Redis Cluster hash slot. */
export function clusterSafePrefix(prefix: string): string {
  return prefix.startsWith('{') ? prefix : `{${prefix}}`;
}

/** BullMQ loses jobs when Redis evicts keys; say so loudly at start. */
export async function warnUnlessNoEviction(redis: Redis, log: Logger, waitMs = 10_000): Promise<string | null> {
  try {
    // A producer connection has no offline queue: wait until it is connected before asking.
    if (!(await redisReady(redis, waitMs))) throw new Error(`redis not ready after ${waitMs} ms`);
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
