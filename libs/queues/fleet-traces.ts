import { deadLetterQueueName, queueNames } from './catalog.js';
import type { QueueSet } from './queue-set.js';

/**
 * Where a command reads the fleet's queues: QUEUE_PREFIX as configured and the Redis of
 * REDIS_URL as `host:port/db` (never its password), and whether a fleet has used that prefix
 * there (see fleetSeenUnderPrefix). Shown at the top of `fleet status`, `fleet daily` and
 * `fleet dlq list`, whose empty answers mean nothing under a prefix no fleet uses.
 */
export interface QueueSource {
  queuePrefix: string;
  redis: string;
  fleetSeen: boolean;
}

/** Where a Redis URL points, with its database: `host:port/db` (never the password it may carry). */
export function redisTargetWithDb(url: string): string {
  try {
    const u = new URL(url);
    const db = /^\/(\d+)$/.exec(u.pathname)?.[1] ?? u.searchParams.get('db') ?? '0';
    return `${u.hostname || '127.0.0.1'}:${u.port || 6379}/${db}`;
  } catch {
    return '(REDIS_URL not parsable)';
  }
}

/**
 * Whether anything shows that a fleet has used the queue prefix on this Redis. Signals:
 * - a key only a fleet's work leaves, for any catalog queue or its dead-letter queue: the
 *   events stream (BullMQ appends to it for every job added, moved, completed or failed, trims it
 *   and never deletes it) or the job schedulers (`repeat`, registered by every process with a
 *   scheduling role at start), or the last successful bucket poll, or a running outbox relay's record;
 * - else a connection of a fleet process named under the prefix (BullMQ names its worker and
 *   event connections `<prefix>:<base64 queue name>`): a fleet just started that has had no
 *   job yet. CLIENT LIST may be refused (managed Redis): then only the keys count.
 * Not the queue meta hash (`<prefix>:<queue>:meta`): any Queue object writes it when it is
 * constructed, so until the CLI stopped doing so (QueueSetOptions.writeMeta) an earlier `fleet
 * status` with the wrong prefix had written it there too.
 */
export async function fleetSeenUnderPrefix(queues: QueueSet): Promise<boolean> {
  const redis = await queues.redis();
  const names = queueNames().flatMap((n) => [n, deadLetterQueueName(n)]);
  const keys = [...names.flatMap((n) => [`${queues.prefix}:${n}:events`, `${queues.prefix}:${n}:repeat`]), `${queues.prefix}:bucket-poll-last-success`, `${queues.prefix}:outbox-relays`];
  if ((await redis.exists(...keys)) > 0) return true;
  try {
    const clients = (await redis.client('LIST')) as string;
    return clients.split('\n').some((line) => / name=(\S+)/.exec(line)?.[1]?.startsWith(`${queues.prefix}:`));
  } catch {
    return false;
  }
}
