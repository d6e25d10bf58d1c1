import { randomUUID } from 'node:crypto';
import { Queue, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { PermanentError } from '../errors/index.js';
import {
  CAPPED_BACKOFF,
  catalog,
  deadLetterQueueName,
  jobIdFor,
  queueNames,
  type JobName,
  type Payload,
} from './catalog.js';
import { clusterSafePrefix, RedisNotReadyError, redisLastError, redisReady } from './connection.js';

export interface QueueSetOptions {
  /** A producer connection (fails fast); shared by every queue of the set. */
  connection: Redis;
  prefix: string;
  /** Multiplies every retry delay of the catalog (1 in production; tests use a small value). */
  backoffScale?: number;
  /**
   * false: opening a queue writes nothing to Redis. BullMQ's Queue writes the queue's meta hash
   * (`<prefix>:<queue>:meta`: its version and event stream length) as soon as it is constructed,
   * even to read a count; a one-shot command run with the wrong QUEUE_PREFIX (or REDIS_URL)
   * thereby created a fleet's keys where no fleet runs. Adding a job still writes the meta it
   * needs (BullMQ's add script sets the stream length when missing). Default true.
   */
  writeMeta?: boolean;
}

export interface EnqueueOptions {
  delayMs?: number;
  /** Replace the catalog's idempotency key (rarely needed: requeue keeps the original id). */
  jobId?: string;
  priority?: number;
}

export function jobOptionsFor(name: JobName, backoffScale = 1): JobsOptions {
  const def = catalog[name];
  return {
    attempts: def.retry.attempts,
    backoff: {
      type: def.retry.maxDoublings === undefined ? 'exponential' : CAPPED_BACKOFF,
      delay: Math.max(1, Math.round(def.retry.backoffMs * backoffScale)),
      jitter: def.retry.jitter,
    },
    removeOnComplete: { age: def.retention.completed.ageSeconds, count: def.retention.completed.count },
    removeOnFail: { age: def.retention.failed.ageSeconds, count: def.retention.failed.count },
    // A job carried through a long database outage logs each attempt (OutageCarry): the last ones are enough.
    keepLogs: JOB_LOGS_KEPT,
  };
}

/** Log lines kept per job (BullMQ `keepLogs`): a day's outage would leave ~290 per job carried through it. */
export const JOB_LOGS_KEPT = 20;

/** Describes a zod error as `field: rule; field: rule`. */
export function describeZodError(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`).join('; ');
}

/**
 * The producer side of every fleet queue and its dead-letter queue. `enqueue` validates
 * the payload against the catalog before anything reaches Redis.
 */
export class QueueSet {
  readonly prefix: string;
  readonly backoffScale: number;
  private readonly queues = new Map<string, Queue>();

  constructor(private readonly opts: QueueSetOptions) {
    this.prefix = clusterSafePrefix(opts.prefix);
    this.backoffScale = opts.backoffScale ?? 1;
  }

  /**
   * The producer connection (locks around operator actions), once connected: it has no offline
   * queue, so a command sent while it still connects fails.
   */
  async redis(waitMs = 10_000): Promise<Redis> {
    const redis = this.opts.connection;
    if (!(await redisReady(redis, waitMs))) throw new RedisNotReadyError(waitMs, redisLastError(redis));
    return redis;
  }

  /** Whether the producer connection is connected now or becomes so within `waitMs` (never throws). */
  ready(waitMs: number): Promise<boolean> {
    return redisReady(this.opts.connection, waitMs);
  }

  queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: this.opts.connection, prefix: this.prefix, ...(this.opts.writeMeta === false ? { skipMetasUpdate: true } : {}) });
      q.on('error', () => {}); // surfaced by the calls that fail; avoid unhandled 'error' events
      this.queues.set(name, q);
    }
    return q;
  }

  /** Every queue of the catalog and its dead-letter queue, for dashboards and status. */
  allQueues(): Array<{ name: string; queue: Queue; deadLetter: boolean }> {
    return queueNames().flatMap((name) => [
      { name, queue: this.queue(name), deadLetter: false },
      { name: deadLetterQueueName(name), queue: this.queue(deadLetterQueueName(name)), deadLetter: true },
    ]);
  }

  async enqueue<N extends JobName>(name: N, payload: Payload<N>, opts: EnqueueOptions = {}) {
    const def = catalog[name];
    const parsed = def.schema.safeParse(payload);
    if (!parsed.success) {
      throw new PermanentError('invalid_payload', `job ${name}: ${describeZodError(parsed.error)}`);
    }
    const data = parsed.data as Payload<N>;
    // Keyless jobs still get a string id, so dead letters and requeues can name them.
    const jobId = opts.jobId ?? jobIdFor(name, data) ?? `${name}.${randomUUID()}`;
    const job = await this.queue(def.queue).add(name, data, {
      ...jobOptionsFor(name, this.backoffScale),
      jobId,
      ...(opts.delayMs ? { delay: opts.delayMs } : {}),
      ...(opts.priority ? { priority: opts.priority } : {}),
    });
    return { jobId: job.id!, queue: def.queue };
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }
}
