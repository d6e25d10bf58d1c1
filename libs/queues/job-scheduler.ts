import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../log/index.js';
import { catalog, type JobName, type Payload } from './catalog.js';
import { jobOptionsFor, type QueueSet } from './queue-set.js';

/**
 * Registers a BullMQ job scheduler (cron + time zone) under a fixed id, so that several
 * fleet processes or a rolling deploy end up with exactly one schedule. Guards against the
 * duplicate-schedule problems BullMQ users report (taskforcesh/bullmq#2876, #2988, #3085:
 * concurrent or quick successive upserts creating extra delayed jobs or none):
 * - one Redis lock around the whole registration, so processes take turns;
 * - no upsert at all when the stored scheduler already has the wanted cron, zone, job and
 *   retry policy;
 * - schedulers on the queue producing the same job under another id (an older deploy)
 *   are removed;
 * - afterwards exactly one delayed job of the scheduler must exist; extras are removed.
 */
export interface EnsureSchedulerOptions<N extends JobName> {
  queues: QueueSet;
  log: Logger;
  schedulerId: string;
  jobName: N;
  data: Payload<N>;
  pattern: string;
  timeZone: string;
  /** How long to wait for another process's registration (ms). */
  lockWaitMs?: number;
}

export interface EnsureSchedulerResult {
  action: 'created' | 'updated' | 'unchanged';
  next: Date | null;
  removedSchedulers: string[];
  removedDuplicateJobs: number;
}

const LOCK_TTL_MS = 30_000;

/** Runs `fn` holding a Redis lock (SET NX, expires after 30 s); waits up to `waitMs` for it. */
export async function withLock<T>(redis: Redis, key: string, waitMs: number, fn: () => Promise<T>): Promise<T> {
  const token = randomUUID();
  const deadline = Date.now() + waitMs;
  for (;;) {
    if ((await redis.set(key, token, 'PX', LOCK_TTL_MS, 'NX')) === 'OK') break;
    if (Date.now() > deadline) throw new Error(`could not take the lock ${key} within ${waitMs} ms`);
    await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
  }
  try {
    return await fn();
  } finally {
    // Release only our own lock.
    await redis.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end", 1, key, token);
  }
}

export async function ensureJobScheduler<N extends JobName>(o: EnsureSchedulerOptions<N>): Promise<EnsureSchedulerResult> {
  const queueName = catalog[o.jobName].queue;
  const queue = o.queues.queue(queueName);
  const lockKey = `${o.queues.prefix}:${queueName}:scheduler-lock:${o.schedulerId}`;
  // The producer connection once it is up (it has no offline queue: a schedule registered
  // right at start would fail while Redis still connects).
  return withLock(await o.queues.redis(), lockKey, o.lockWaitMs ?? 15_000, async () => {
    const removedSchedulers: string[] = [];
    for (const s of await queue.getJobSchedulers(0, -1)) {
      const id = s.id ?? s.key;
      if (id !== o.schedulerId && s.name === o.jobName) {
        await queue.removeJobScheduler(id);
        removedSchedulers.push(id);
      }
    }
    const current = await queue.getJobScheduler(o.schedulerId);
    let action: EnsureSchedulerResult['action'] = 'unchanged';
    const { attempts, backoff, removeOnComplete, removeOnFail, keepLogs } = jobOptionsFor(o.jobName, o.queues.backoffScale);
    // The job's retry policy counts too: a deploy that changes it (or RETRY_BACKOFF_SCALE) must reach the scheduled jobs.
    const storedOpts = current?.template?.opts;
    const sameRetry = storedOpts?.attempts === attempts && JSON.stringify(storedOpts?.backoff) === JSON.stringify(backoff);
    if (!current || current.pattern !== o.pattern || current.tz !== o.timeZone || current.name !== o.jobName || !sameRetry) {
      await queue.upsertJobScheduler(
        o.schedulerId,
        { pattern: o.pattern, tz: o.timeZone },
        { name: o.jobName, data: o.data, opts: { attempts, backoff, removeOnComplete, removeOnFail, keepLogs } },
      );
      action = current ? 'updated' : 'created';
    }
    // Exactly one delayed job may wait for this scheduler.
    const prefix = `repeat:${o.schedulerId}:`;
    const waiting = (await queue.getDelayed(0, -1)).filter((j) => j.id?.startsWith(prefix));
    const stored = await queue.getJobScheduler(o.schedulerId);
    let removedDuplicateJobs = 0;
    if (waiting.length > 1) {
      const keep = waiting.find((j) => stored?.next !== undefined && j.id === `${prefix}${stored.next}`) ?? waiting.sort((a, b) => a.timestamp + (a.delay ?? 0) - (b.timestamp + (b.delay ?? 0)))[0]!;
      for (const j of waiting) {
        if (j !== keep) {
          await j.remove();
          removedDuplicateJobs++;
        }
      }
    }
    if (removedSchedulers.length || removedDuplicateJobs) {
      o.log.warn({ schedulerId: o.schedulerId, removedSchedulers, removedDuplicateJobs }, 'job scheduler duplicates removed');
    }
    return { action, next: stored?.next ? new Date(stored.next) : null, removedSchedulers, removedDuplicateJobs };
  });
}
