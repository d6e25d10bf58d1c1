import { afterAll, describe, expect, it } from 'vitest';
import { redisConnection } from './connection.js';
import { redisRateLimiter } from './rate-limiter.js';
import { testQueuePrefix } from '../testing/redis.js';
import { TEST_REDIS_URL } from '../testing/services.js';

const q = testQueuePrefix();
const redis = redisConnection(TEST_REDIS_URL, 'worker');
afterAll(async () => {
  await redis.quit();
  await q.cleanup();
});

describe('redisRateLimiter (shared request slots in Redis)', () => {
  it('hands out slots 1000/rate ms apart, across limiter instances', async () => {
    const a = redisRateLimiter(redis, { prefix: q.prefix, name: 'slots', perSecond: 2 });
    const b = redisRateLimiter(redis, { prefix: q.prefix, name: 'slots', perSecond: 2 });
    const waits = [await a.reserve(), await b.reserve(), await a.reserve(), await b.reserve()];
    expect(waits[0]).toBe(0);
    // Each later slot is ~500 ms after the previous one (minus the few ms the calls took).
    for (let i = 1; i < waits.length; i++) {
      expect(waits[i]! - waits[i - 1]!).toBeGreaterThan(450);
      expect(waits[i]! - waits[i - 1]!).toBeLessThanOrEqual(500);
    }
  });

  it('pause pushes the next slot back for every caller', async () => {
    const l = redisRateLimiter(redis, { prefix: q.prefix, name: 'paused', perSecond: 2 });
    await l.pause(3000);
    const wait = await redisRateLimiter(redis, { prefix: q.prefix, name: 'paused', perSecond: 2 }).reserve();
    expect(wait).toBeGreaterThan(2900);
    expect(wait).toBeLessThanOrEqual(3000);
  });

  it('pausedFor says how long a pause still holds, for every caller (a slot reserved before it is not to be used)', async () => {
    const a = redisRateLimiter(redis, { prefix: q.prefix, name: 'held', perSecond: 2 });
    const b = redisRateLimiter(redis, { prefix: q.prefix, name: 'held', perSecond: 2 });
    expect(await b.pausedFor()).toBe(0);
    await a.pause(2000);
    const held = await b.pausedFor();
    expect(held).toBeGreaterThan(1900);
    expect(held).toBeLessThanOrEqual(2000);
    // A shorter pause later does not shorten it.
    await b.pause(500);
    expect(await a.pausedFor()).toBeGreaterThan(1800);
  });
});
