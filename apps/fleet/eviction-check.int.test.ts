import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../libs/log/index.js';
import { redisConnection } from '../../libs/queues/index.js';
import { TEST_REDIS_URL } from '../../libs/testing/services.js';
import { tcpProxy } from '../../libs/testing/tcp-proxy.js';
import { checkEvictionPolicyWhenReachable } from './runtime.js';

const target = new URL(TEST_REDIS_URL);
const redis = tcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
afterAll(() => redis.close());

describe("the start's maxmemory-policy check with Redis down at start", () => {
  // It logged `could not read redis maxmemory-policy (CONFIG GET refused)` when nothing had
  // refused anything (the error was `redis not ready after 10000 ms`), and never checked again
  // once Redis was back (found in an outage walkthrough).
  it('says Redis is not reachable (not a refused CONFIG GET), and checks once Redis connects', { timeout: 30_000 }, async () => {
    await redis.open();
    await redis.close(); // a port of its own nothing answers on: Redis down
    const url = new URL(TEST_REDIS_URL);
    url.host = `127.0.0.1:${redis.port}`;
    const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
    const log = createLogger({ level: 'info', pretty: 'false' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    const conn = redisConnection(url.toString(), 'producer');
    conn.on('error', () => {});
    try {
      const { later } = await checkEvictionPolicyWhenReachable(conn, url.toString(), log, 500);
      expect(lines.map((l) => l.msg)).toEqual(['redis not reachable at start: its maxmemory-policy (must be noeviction) is checked once it is']);
      expect(lines[0]).toMatchObject({ level: 40, redis: `127.0.0.1:${redis.port}`, cause: `connect ECONNREFUSED 127.0.0.1:${redis.port}` });
      expect(JSON.stringify(lines)).not.toContain('refused');
      expect(later).toBeDefined();

      await redis.open();
      await later;
      // The machine's Redis runs with noeviction (README): the check ran and says so.
      expect(lines.slice(1)).toEqual([expect.objectContaining({ level: 30, policy: 'noeviction', msg: 'redis reachable: maxmemory-policy checked' })]);
    } finally {
      conn.disconnect();
    }
  });
});
