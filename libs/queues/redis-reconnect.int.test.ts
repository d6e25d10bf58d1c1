import { afterAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { TEST_REDIS_URL } from '../testing/services.js';
import { tcpProxy } from '../testing/tcp-proxy.js';
import { REDIS_RECONNECT_MAX_MS, redisConnection, redisReady } from './connection.js';

const target = new URL(TEST_REDIS_URL);
const proxy = tcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
afterAll(() => proxy.close());

describe('connections to a Redis that comes back after minutes', () => {
  // Found in a drill (Redis stopped for 3 minutes with imports and emails in flight): the wait
  // between reconnect attempts had doubled to 20 s, so the workers and `/ready` were back 13-15 s
  // after Redis, and patient imports taken by a worker already back failed their attempt on the
  // producer connection still waiting (`Stream isn't writeable`). Here Redis is away for 16 s,
  // long enough for that wait to have grown to 16 s.
  it('reconnect within a few seconds of Redis answering again, the workers’ and the producers’ alike', { timeout: 60_000 }, async () => {
    await proxy.open();
    const url = new URL(TEST_REDIS_URL);
    url.host = `127.0.0.1:${proxy.port}`;
    const connections: Redis[] = [redisConnection(url.toString(), 'worker'), redisConnection(url.toString(), 'producer')];
    for (const c of connections) c.on('error', () => {});
    try {
      for (const c of connections) expect(await redisReady(c, 5_000)).toBe(true);

      await proxy.close(); // Redis stopped: its port refuses
      await new Promise((r) => setTimeout(r, 16_000));
      expect(connections.map((c) => c.status)).not.toContain('ready');

      await proxy.open(); // Redis back on the same port
      const back = Date.now();
      const ready = await Promise.all(connections.map((c) => redisReady(c, 10_000).then((ok) => (ok ? Date.now() - back : Infinity))));
      // At most one wait (2 s plus 0.5 s of jitter) and the connect.
      for (const ms of ready) expect(ms).toBeLessThan(REDIS_RECONNECT_MAX_MS + 1_500);
      expect(await connections[1]!.ping()).toBe('PONG');
    } finally {
      for (const c of connections) c.disconnect();
    }
  });
});
