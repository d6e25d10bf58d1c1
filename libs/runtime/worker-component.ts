import type { Worker } from 'bullmq';
import { bindWorkers, closeWorkers, type Handlers } from '../queues/index.js';
import type { Component } from './component.js';
import type { FleetContext } from './context.js';
import { resumeAfterOutage, type OutageResume } from './resume-after-outage.js';

/** The longest wait between two attempts of a job carried through a PostgreSQL outage (scaled by RETRY_BACKOFF_SCALE); the longest retry delay of imports and emails. */
export const OUTAGE_MAX_DELAY_MS = 320_000;

/**
 * A component that runs the BullMQ workers of the given handlers. Lock duration and stalled
 * interval come from the config (WORKER_LOCK_DURATION_MS, WORKER_STALLED_INTERVAL_MS) unless
 * `opts` sets them.
 */
export function workerComponent(ctx: FleetContext, name: string, handlers: Handlers, opts: { lockDurationMs?: number; stalledIntervalMs?: number } = {}): Component {
  let workers: Worker[] = [];
  let resume: OutageResume | undefined;
  return {
    name,
    handles: Object.keys(handlers),
    async start() {
      // Jobs that could not reach PostgreSQL run again as soon as it answers, not at the end of their delay.
      const outage = (resume = resumeAfterOutage(ctx));
      workers = bindWorkers(handlers, {
        onRetrying: (queue, jobId, err) => outage.retrying(queue, jobId, err),
        // An attempt that could not reach PostgreSQL does not use up the job's attempts for OUTAGE_CARRY_HOURS.
        outage: {
          isOutage: outage.isOutage,
          carryMs: ctx.config.queues.outageCarryMs,
          maxDelayMs: Math.max(1, Math.round(OUTAGE_MAX_DELAY_MS * ctx.config.queues.backoffScale)),
        },
        connection: ctx.workerRedis(),
        prefix: ctx.config.queues.prefix,
        log: ctx.log,
        metrics: ctx.metrics,
        queues: ctx.queues,
        concurrency: ctx.config.queues.concurrency,
        lockDurationMs: opts.lockDurationMs ?? ctx.config.queues.lockDurationMs,
        stalledIntervalMs: opts.stalledIntervalMs ?? ctx.config.queues.stalledIntervalMs,
      });
      await Promise.all(workers.map((w) => w.waitUntilReady()));
      ctx.log.info({ component: name, queues: workers.map((w) => w.name) }, 'workers started');
    },
    async stop(timeoutMs) {
      const outcome = await closeWorkers(workers, timeoutMs, ctx.log);
      resume?.stop();
      ctx.log.info({ component: name, outcome }, 'workers stopped');
    },
  };
}
