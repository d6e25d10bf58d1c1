import type { Redis } from 'ioredis';
import type { Logger } from '../../libs/log/index.js';
import { redisLastError, redisReady, redisTarget, warnUnlessNoEviction } from '../../libs/queues/index.js';
import type { Component, FleetContext } from '../../libs/runtime/index.js';
import { checkRoleFolders, roles } from './roles.js';

export interface RunningFleet {
  components: Component[];
  /** Stops every component in reverse order within the time limit, then closes connections. */
  stop(reason: string): Promise<void>;
}

/**
 * The start's check of Redis's maxmemory-policy (`warnUnlessNoEviction`). A Redis not reachable
 * at start is said as such, not as a refused CONFIG GET, and the check runs once it connects
 * (it ran only at start, so it never ran for a fleet started during a Redis outage). `later`:
 * that deferred check, for tests.
 */
export async function checkEvictionPolicyWhenReachable(redis: Redis, url: string, log: Logger, waitMs = 10_000): Promise<{ later?: Promise<void> }> {
  if (await redisReady(redis, waitMs)) {
    await warnUnlessNoEviction(redis, log);
    return {};
  }
  log.warn(
    { redis: redisTarget(url), cause: redisLastError(redis) ?? `not ready after ${waitMs} ms` },
    'redis not reachable at start: its maxmemory-policy (must be noeviction) is checked once it is',
  );
  const later = new Promise<void>((resolve) => {
    redis.once('ready', () => {
      void warnUnlessNoEviction(redis, log, 1_000).then((policy) => {
        if (policy === 'noeviction') log.info({ policy }, 'redis reachable: maxmemory-policy checked');
        resolve();
      });
    });
  });
  return { later };
}

/** Starts the given roles in this process. */
export async function startFleet(ctx: FleetContext, roleNames: string[]): Promise<RunningFleet> {
  // A folder the roles cannot use stops the start here, named, before any worker takes a job.
  try {
    await checkRoleFolders(ctx.config, roleNames);
  } catch (err) {
    await ctx.close();
    throw err;
  }
  await checkEvictionPolicyWhenReachable(ctx.producerRedis, ctx.config.queues.redisUrl, ctx.log);
  const components: Component[] = [];
  const stopLast = new Set<Component>();
  for (const name of roleNames) {
    const own = await roles[name]!.components(ctx);
    components.push(...own);
    if (roles[name]!.stopsLast) for (const c of own) stopLast.add(c);
  }
  // GET /ready answers 503 until every component started, and again while stopping.
  ctx.readiness.setPhase('starting');
  for (const c of components) if (c.ready) ctx.readiness.add(c.name, () => c.ready!());
  const started: Component[] = [];
  try {
    for (const c of components) {
      await c.start();
      started.push(c);
    }
  } catch (err) {
    ctx.log.error({ err }, 'fleet failed to start: stopping what started');
    for (const c of started.reverse()) await c.stop(ctx.config.queues.shutdownTimeoutMs).catch(() => {});
    await ctx.close();
    throw err;
  }
  ctx.readiness.setPhase('running');
  ctx.log.info({ roles: roleNames, components: components.map((c) => c.name) }, 'fleet started');

  let stopping: Promise<void> | null = null;
  return {
    components,
    stop(reason) {
      stopping ??= (async () => {
        const limit = ctx.config.queues.shutdownTimeoutMs;
        const deadline = Date.now() + limit;
        ctx.readiness.setPhase('stopping');
        ctx.log.info({ reason, timeoutMs: limit }, 'fleet stopping');
        const stopOne = async (c: Component, timeoutMs: number) => {
          try {
            await c.stop(timeoutMs);
          } catch (err) {
            ctx.log.error({ err, component: c.name }, 'component failed to stop cleanly');
          }
        };
        // Every component stops taking work at once and drains within the one limit: stopped one
        // after the other, each waited up to the whole limit while the later ones still took new
        // jobs, and the process outlived SHUTDOWN_TIMEOUT_MS (and a pod's grace period).
        await Promise.all([...components].reverse().filter((c) => !stopLast.has(c)).map((c) => stopOne(c, limit)));
        // Then the roles that must outlive the drain (the HTTP app: /ready says "stopping"),
        // within what is left of the limit.
        for (const c of [...components].reverse().filter((c) => stopLast.has(c))) await stopOne(c, Math.max(0, deadline - Date.now()));
        await ctx.close();
        ctx.log.info('fleet stopped');
      })();
      return stopping;
    },
  };
}

/** Stops the fleet on SIGTERM/SIGINT; a second signal exits at once. */
export function stopOnSignals(fleet: RunningFleet, onDone: (code: number) => void): void {
  let signalled = false;
  const handler = (signal: NodeJS.Signals) => {
    if (signalled) {
      onDone(130);
      return;
    }
    signalled = true;
    fleet.stop(signal).then(
      () => onDone(0),
      () => onDone(1),
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
