import type { Redis } from 'ioredis';
import { clusterSafePrefix } from './connection.js';

/**
 * A request-rate limiter shared by every process through Redis: each caller reserves the
 * next free slot (slots `1000 / perSecond` ms apart, Redis' clock) and waits until it.
 * Unlike BullMQ's queue limiter it counts provider requests, not jobs, so jobs that turn
 * out to have nothing to send cost nothing. `pause(ms)` pushes the next free slot back
 * (HTTP 429 with retry-after), for every process at once. Slots handed out before a pause are
 * not taken back: a caller that waited for its slot asks `pausedFor()` before using it, and
 * reserves again when its slot fell inside a pause set meanwhile (with 16 workers each waiting
 * for a slot 500 ms apart, the slots already handed out reach 8 s ahead: without that check a
 * 429's retry-after of 5 s held back no request at all).
 */
export interface RateLimiter {
  /** Reserves a slot; returns how long the caller must wait before using it (ms). */
  reserve(): Promise<number>;
  /** No slot before now + ms. */
  pause(ms: number): Promise<void>;
  /** How long a pause still holds (ms; 0: none): a slot reserved before it is not to be used. */
  pausedFor(): Promise<number>;
}

const RESERVE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local nextFree = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, nextFree)
redis.call('SET', KEYS[1], slot + interval, 'PX', slot + interval - now + 60000)
return slot - now`;

const PAUSE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pausedUntil = now + tonumber(ARGV[1])
local nextFree = tonumber(redis.call('GET', KEYS[1]) or '0')
if pausedUntil > nextFree then redis.call('SET', KEYS[1], pausedUntil, 'PX', tonumber(ARGV[1]) + 60000) end
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if pausedUntil > held then redis.call('SET', KEYS[2], pausedUntil, 'PX', tonumber(ARGV[1]) + 1000) end
return pausedUntil`;

const PAUSED_FOR = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
return math.max(0, held - now)`;

export function redisRateLimiter(redis: Redis, opts: { prefix: string; name: string; perSecond: number }): RateLimiter {
  const key = `${clusterSafePrefix(opts.prefix)}:rate:${opts.name}`;
  const pausedKey = `${key}:paused-until`;
  const interval = Math.max(1, Math.round(1000 / opts.perSecond));
  return {
    async reserve() {
      return Number(await redis.eval(RESERVE, 1, key, interval));
    },
    async pause(ms) {
      await redis.eval(PAUSE, 2, key, pausedKey, Math.max(0, Math.round(ms)));
    },
    async pausedFor() {
      return Number(await redis.eval(PAUSED_FOR, 1, pausedKey));
    },
  };
}
