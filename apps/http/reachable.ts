import type { Redis } from 'ioredis';
import type postgres from 'postgres';
import { redisLastError, redisReady, redisTarget } from '../../libs/queues/index.js';
import { within, type FleetContext, type ReadinessResult } from '../../libs/runtime/index.js';

/**
 * How long a page (or a /metrics scrape) waits for Redis or PostgreSQL to answer before it says
 * which one is down.
 */
export const SERVICE_WAIT_MS = 2_000;

/** The PING in flight per connection: callers share it, so a silent Redis collects one, not one per request. */
const pings = new WeakMap<Redis, Promise<string>>();

/**
 * Whether the producer connection's Redis answers: connected (or connected within
 * `connectWaitMs`: a process that just started, a reconnect) and a PING answered within
 * `answerMs`, else rejects (`no answer within <ms> ms`). The connection's status alone is not
 * enough: a stopped (SIGSTOP) or hung Redis leaves it open and `ready`, and the producer
 * connection has no command timeout, so every command on it waits for as long as Redis is silent.
 */
export async function redisAnswers(ctx: FleetContext, connectWaitMs: number, answerMs: number): Promise<ReadinessResult> {
  const redis = ctx.producerRedis;
  await redisReady(redis, connectWaitMs);
  // A PING on a connection that is not connected fails at once with ioredis's "Stream isn't
  // writeable and enableOfflineQueue options is false": say where and why instead. (Also while
  // the status still says ready but the socket has already ended.)
  if (redis.status !== 'ready' || !redis.stream?.writable) {
    const cause = redisLastError(redis);
    const state = redis.status === 'ready' ? 'closed' : redis.status === 'connect' ? 'open, no answer yet' : redis.status;
    return { ok: false, detail: `not connected to ${redisTarget(ctx.config.queues.redisUrl)} (REDIS_URL; connection ${state})${cause ? `: ${cause}` : ''}` };
  }
  let ping = pings.get(redis);
  if (!ping) {
    const p = redis.ping();
    const done = () => {
      if (pings.get(redis) === p) pings.delete(redis);
    };
    p.then(done, done);
    pings.set(redis, p);
    ping = p;
  }
  const pong = await within(ping, answerMs);
  return pong === 'PONG' ? { ok: true } : { ok: false, detail: `unexpected reply ${pong}` };
}

/** The probe's `select 1` in flight per connection: checks arriving meanwhile share it. */
const selects = new WeakMap<postgres.Sql, Promise<unknown>>();

/**
 * Whether PostgreSQL answers a `select 1` within `answerMs` on the readiness probe's own
 * connection (the workers' pool can be busy without PostgreSQL being down), else rejects with
 * what PostgreSQL (or the time limit) said. Checks at the same time (/ready, the operator pages)
 * share one `select 1`: the probe waits PROBE_RECONNECT_MS between connection attempts, and
 * queued one after the other they would each wait their turn, past `answerMs`, while PostgreSQL
 * is away or starting up.
 */
export async function postgresAnswers(ctx: FleetContext, answerMs: number): Promise<void> {
  const sql = ctx.probeSql();
  let select = selects.get(sql);
  if (!select) {
    const p = sql`select 1`.execute().then(() => undefined);
    const done = () => {
      if (selects.get(sql) === p) selects.delete(sql);
    };
    p.then(done, done);
    selects.set(sql, p);
    select = p;
  }
  await within(select, answerMs);
}
