import { afterAll, describe, expect, it } from 'vitest';
import type { Worker } from 'bullmq';
import { createLogger } from '../log/index.js';
import { createTestQueues, workerHoldingItsJob } from '../testing/queues.js';
import { until } from '../testing/until.js';
import { TEST_REDIS_URL } from '../testing/services.js';
import { tcpProxy } from '../testing/tcp-proxy.js';
import { bindQueueWorker, closeWorkers } from './bind-worker.js';
import { clusterSafePrefix, redisConnection } from './connection.js';
import { QueueSet } from './queue-set.js';

const target = new URL(TEST_REDIS_URL);
const proxy = tcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
const t = createTestQueues();
afterAll(async () => {
  await proxy.close();
  await t.close();
});

describe('a worker whose Redis is out of reach', () => {
  // Found in an operator walkthrough (a fleet started with a wrong REDIS_URL port, and Redis
  // going away under a running fleet): every reconnect attempt of each worker's two
  // connections was logged as `worker error` with a stack, 14 error lines every 20 s for the
  // fleet's seven queues, none saying that Redis is what is missing or naming REDIS_URL.
  it('says once (not per reconnect attempt) that it cannot reach Redis, where, and naming REDIS_URL; and when it reached it', { timeout: 40_000 }, async () => {
    await proxy.open();
    await proxy.close(); // a port of its own nothing answers on: Redis down
    const url = new URL(TEST_REDIS_URL);
    url.host = `127.0.0.1:${proxy.port}`;
    const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
    const log = createLogger({ level: 'info', pretty: 'false' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    const connection = redisConnection(url.toString(), 'worker');
    const errors: unknown[] = [];
    connection.on('error', (err) => errors.push(err));
    let worker: Worker | null = null;
    try {
      worker = bindQueueWorker('patient-import', { 'patient-import': async () => 'ok' }, { connection, prefix: t.prefix, log, metrics: t.metrics, queues: t.queues, concurrency: 1 });
      // Several reconnect attempts (1 s, 2 s, ... apart), each failing on both connections.
      await until('two failed connection attempts', () => errors.length >= 2);
      await new Promise((r) => setTimeout(r, 500));
      expect(lines.filter((l) => l.msg === 'worker error')).toEqual([]);
      const down = lines.filter((l) => /cannot reach redis/.test(l.msg));
      expect(down).toHaveLength(1);
      expect(down[0]).toMatchObject({ level: 50, queue: 'patient-import', redis: `127.0.0.1:${proxy.port}`, cause: `connect ECONNREFUSED 127.0.0.1:${proxy.port}` });
      expect(down[0]!.msg).toContain('REDIS_URL');
      expect(down[0]).not.toHaveProperty('err'); // no stack for a refused connection

      await proxy.open();
      await until('the worker reached redis', () => lines.some((l) => l.msg === 'worker reached redis'));
      expect(lines.find((l) => l.msg === 'worker reached redis')).toMatchObject({ level: 30, queue: 'patient-import', redis: `127.0.0.1:${proxy.port}` });
    } finally {
      if (worker) await closeWorkers([worker], 5_000);
      connection.disconnect();
    }
  });
});

describe('a job whose lock is gone from Redis when it finishes', () => {
  // Found in a Redis drill: Redis away longer than the lock (30 s to 3 minutes) let the locks of
  // the jobs running then expire; each such job, once done, was logged as `worker error` at error
  // level with a stack, twice (its completion, then its failure, both refused: "Missing lock"),
  // ~40 lines after each outage, none saying that the job runs again.
  it('is logged at warn, without a stack, saying it runs again once found stalled', { timeout: 30_000 }, async () => {
    const { lines, worker, running, finish } = workerHoldingItsJob(t);
    try {
      const { jobId } = await t.queues.enqueue('patient-import', { ledgerId: 4242 });
      await running;
      // As if Redis had been away longer than the lock: it expired meanwhile.
      const redis = await t.queues.redis();
      expect(await redis.del(`${clusterSafePrefix(t.prefix)}:patient-import:${jobId}:lock`)).toBe(1);
      finish();
      await until('the lock-expired line', () => lines.some((l) => /lock had expired/.test(l.msg)));
      await new Promise((r) => setTimeout(r, 300));
      expect(lines.filter((l) => l.msg === 'worker error')).toEqual([]);
      const gone = lines.filter((l) => /lock had expired/.test(l.msg));
      expect(gone[0]).toMatchObject({ level: 40, queue: 'patient-import', code: -2, cause: expect.stringContaining(jobId) });
      expect(gone[0]).not.toHaveProperty('err');
    } finally {
      await closeWorkers([worker], 5_000);
    }
  });
});

describe('a job whose lock cannot be renewed while it runs', () => {
  // BullMQ logs an `error` per job ("could not renew lock for job …", no code) after its
  // `lockRenewalFailed`: an outage longer than the lock logged each running job as `worker error`
  // at error level with a stack, though the job runs on and again once found stalled.
  it('is logged once at warn, with the number of jobs, not as a worker error', { timeout: 30_000 }, async () => {
    // Renewed every 500 ms (half the lock).
    const { lines, worker, running, finish } = workerHoldingItsJob(t, { lockDurationMs: 1_000 });
    const renewalFailed: string[][] = [];
    worker.on('lockRenewalFailed', (ids: string[]) => renewalFailed.push(ids));
    try {
      const { jobId } = await t.queues.enqueue('patient-import', { ledgerId: 4545 });
      await running;
      const redis = await t.queues.redis();
      expect(await redis.del(`${clusterSafePrefix(t.prefix)}:patient-import:${jobId}:lock`)).toBe(1);
      await until('a failed lock renewal', () => renewalFailed.length > 0, 10_000);
      await new Promise((r) => setTimeout(r, 300));
      expect(renewalFailed[0]).toEqual([jobId]);
      expect(lines.filter((l) => l.msg === 'worker error')).toEqual([]);
      const said = lines.filter((l) => /lock could not be renewed/.test(l.msg));
      expect(said.length).toBeGreaterThanOrEqual(1);
      expect(said[0]).toMatchObject({ level: 40, queue: 'patient-import', jobs: 1 });
      expect(said[0]).not.toHaveProperty('err');
      // Any other error without a code is still an error.
      worker.emit('error', new Error('something else'));
      expect(lines.filter((l) => l.msg === 'worker error')).toHaveLength(1);
    } finally {
      finish();
      await closeWorkers([worker], 5_000);
    }
  });
});

describe('a job taken while the producer connection is still reconnecting', () => {
  // Found in a Redis drill: after Redis came back the workers' connections were back before the
  // producer connection (each reconnects on its own timer), and 72 patient imports taken in that
  // gap failed their attempt enqueueing their staff email ("Stream isn't writeable").
  it('waits for it instead of failing its attempt', { timeout: 30_000 }, async () => {
    const producerProxy = tcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
    await producerProxy.open();
    const url = new URL(TEST_REDIS_URL);
    url.host = `127.0.0.1:${producerProxy.port}`;
    const producer = redisConnection(url.toString(), 'producer');
    producer.on('error', () => {});
    const queues = new QueueSet({ connection: producer, prefix: t.prefix, backoffScale: 0.01 });
    const runs: Array<'ok' | string> = [];
    let worker: Worker | null = null;
    try {
      expect(await queues.ready(5_000)).toBe(true);
      await queues.queue('email').getJobCounts(); // the queue in use before Redis goes away
      await producerProxy.close(); // the producer connection is away, the worker's is not
      await until('the producer connection to see Redis gone', () => producer.status !== 'ready');
      worker = bindQueueWorker(
        'patient-import',
        {
          'patient-import': async () => {
            try {
              await queues.enqueue('email-send', { deliveryId: '00000000-0000-4000-8000-000000000001' });
              runs.push('ok');
            } catch (err) {
              runs.push(String(err));
              throw err;
            }
          },
        },
        { connection: t.workerConnection(), prefix: t.prefix, log: t.log, metrics: t.metrics, queues, concurrency: 1 },
      );
      const { jobId } = await t.queues.enqueue('patient-import', { ledgerId: 4343 });
      // Taken while the producer connection is away (a fixed pause let a slower worker take it
      // after the connection was back, and the test passed without the wait); it waits to run.
      await until('the job taken', async () => (await t.queues.queue('patient-import').getJobState(jobId)) === 'active');
      expect(runs).toEqual([]);
      await producerProxy.open(); // Redis "back" for the producer connection too
      await until('the job ran', () => runs.length > 0, 10_000);
      await new Promise((r) => setTimeout(r, 300));
      expect(runs).toEqual(['ok']);
    } finally {
      if (worker) await closeWorkers([worker], 5_000);
      await queues.close().catch(() => {});
      producer.disconnect();
      await producerProxy.close();
    }
  });
});
