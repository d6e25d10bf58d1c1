import type { Worker } from 'bullmq';
import { bindWorkers, closeWorkers, type Handlers } from '../queues/index.js';
import type { Component } from './component.js';
import type { FleetContext } from './context.js';

/** A component that runs the BullMQ workers of the given handlers. */
export function workerComponent(ctx: FleetContext, name: string, handlers: Handlers, opts: { lockDurationMs?: number; stalledIntervalMs?: number } = {}): Component {
  let workers: Worker[] = [];
  return {
    name,
    handles: Object.keys(handlers),
    async start() {
      workers = bindWorkers(handlers, {
        connection: ctx.workerRedis(),
        prefix: ctx.config.queues.prefix,
        log: ctx.log,
        metrics: ctx.metrics,
        queues: ctx.queues,
        concurrency: ctx.config.queues.concurrency,
        ...(opts.lockDurationMs ? { lockDurationMs: opts.lockDurationMs } : {}),
        ...(opts.stalledIntervalMs ? { stalledIntervalMs: opts.stalledIntervalMs } : {}),
      });
      await Promise.all(workers.map((w) => w.waitUntilReady()));
      ctx.log.info({ component: name, queues: workers.map((w) => w.name) }, 'workers started');
    },
    async stop(timeoutMs) {
      const outcome = await closeWorkers(workers, timeoutMs, ctx.log);
      ctx.log.info({ component: name, outcome }, 'workers stopped');
    },
  };
}
