import { afterAll, describe, expect, it } from 'vitest';
import type { Worker } from 'bullmq';
import { createLogger } from '../log/index.js';
import { createTestQueues } from '../testing/queues.js';
import { TEST_REDIS_URL } from '../testing/services.js';
import { tcpProxy } from '../testing/tcp-proxy.js';
import { bindQueueWorker, closeWorkers } from './bind-worker.js';
import { redisConnection } from './connection.js';

const target = new URL(TEST_REDIS_URL);
const proxy = tcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
const t = createTestQueues();
afterAll(async () => {
  await proxy.close();
  await t.close();
});

async function until(fn: () => boolean, timeoutMs = 20_000): Promise<void> {
  const start = Date.now();
  while (!fn()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

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
      await until(() => errors.length >= 2);
      await new Promise((r) => setTimeout(r, 500));
      expect(lines.filter((l) => l.msg === 'worker error')).toEqual([]);
      const down = lines.filter((l) => /cannot reach redis/.test(l.msg));
      expect(down).toHaveLength(1);
      expect(down[0]).toMatchObject({ level: 50, queue: 'patient-import', redis: `127.0.0.1:${proxy.port}`, cause: `connect ECONNREFUSED 127.0.0.1:${proxy.port}` });
      expect(down[0]!.msg).toContain('REDIS_URL');
      expect(down[0]).not.toHaveProperty('err'); // no stack for a refused connection

      await proxy.open();
      await until(() => lines.some((l) => l.msg === 'worker reached redis'));
      expect(lines.find((l) => l.msg === 'worker reached redis')).toMatchObject({ level: 30, queue: 'patient-import', redis: `127.0.0.1:${proxy.port}` });
    } finally {
      if (worker) await closeWorkers([worker], 5_000);
      connection.disconnect();
    }
  });
});
