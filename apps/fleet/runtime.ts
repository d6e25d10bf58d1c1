import { warnUnlessNoEviction } from '../../libs/queues/index.js';
import type { Component, FleetContext } from '../../libs/runtime/index.js';
import { roles } from './roles.js';

export interface RunningFleet {
  components: Component[];
  /** Stops every component in reverse order within the time limit, then closes connections. */
  stop(reason: string): Promise<void>;
}

/** Starts the given roles in this process. */
export async function startFleet(ctx: FleetContext, roleNames: string[]): Promise<RunningFleet> {
  await warnUnlessNoEviction(ctx.producerRedis, ctx.log);
  const components: Component[] = [];
  for (const name of roleNames) components.push(...(await roles[name]!.components(ctx)));
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
        ctx.readiness.setPhase('stopping');
        ctx.log.info({ reason, timeoutMs: limit }, 'fleet stopping');
        for (const c of [...components].reverse()) {
          try {
            await c.stop(limit);
          } catch (err) {
            ctx.log.error({ err, component: c.name }, 'component failed to stop cleanly');
          }
        }
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
