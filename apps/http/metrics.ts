import { Router } from 'express';
import { collectedGauge, scrapeRead } from '../../libs/metrics/index.js';
import { bucketPollDueBy, lastBucketPollSuccess, pausedQueues, schedulerStates } from '../../libs/queues/index.js';
import { within, type FleetContext } from '../../libs/runtime/index.js';
import { postgresAnswers, redisAnswers, SERVICE_WAIT_MS } from './reachable.js';

export const QUEUE_DEPTH_METRIC = 'fleet_queue_jobs';

/** Job states counted per queue; dead-letter queues are listed as queues of their own (`<queue>-dlq`). */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed'] as const;

/**
 * Registers the queue depth gauge (read from Redis on each scrape) once per registry.
 * Labels: queue and state only. When Redis is unreachable or does not answer, the scrape still
 * answers (within SERVICE_WAIT_MS): the gauge is left empty and `fleet_queue_depth_scrape_ok` says 0.
 */
export function registerQueueDepth(ctx: FleetContext): void {
  const registry = ctx.metrics.registry;
  if (registry.getSingleMetric(QUEUE_DEPTH_METRIC)) return;

  // The gauges below share one read of Redis per scrape.
  const read = scrapeRead(
    async () => {
      // BullMQ waits until its connection is ready: a process that started while Redis was away
      // would hold the scrape (and every other metric) until Redis came back; and a stopped or
      // hung Redis leaves the connection ready while no command is answered. So: not connected
      // now, or no PING answered (one in flight, shared), or no answer to the reads within the
      // wait: the depth is not read in this scrape.
      const answer = await redisAnswers(ctx, 0, SERVICE_WAIT_MS);
      if (!answer.ok) throw new Error(answer.detail);
      const [perQueue, schedules, paused, lastPoll] = await within(Promise.all([
        Promise.all(
          ctx.queues.allQueues().map(async ({ name, queue }) => {
            const counts = await queue.getJobCounts(...QUEUE_STATES);
            return QUEUE_STATES.map((state) => ({ labels: { queue: name, state }, value: counts[state] ?? 0 }));
          }),
        ),
        schedulerStates(ctx.queues),
        pausedQueues(ctx.queues),
        lastBucketPollSuccess(ctx.queues),
      ]), SERVICE_WAIT_MS);
      return { depth: perQueue.flat(), schedules, paused: new Set(paused), lastPoll };
    },
    (err) => ctx.log.warn({ err }, 'metrics: could not read queue depth from redis'),
  );

  collectedGauge(
    ctx.metrics,
    QUEUE_DEPTH_METRIC,
    'Jobs per queue and state (dead-letter queues end in -dlq), read from Redis at scrape time',
    ['queue', 'state'],
    async () => (await read())?.depth ?? [],
  );
  collectedGauge(ctx.metrics, 'fleet_queue_depth_scrape_ok', '1 when reading the queue depth from Redis succeeded in this scrape, else 0', [], async () => [
    { labels: {}, value: (await read()) ? 1 : 0 },
  ]);
  collectedGauge(
    ctx.metrics,
    'fleet_job_scheduler_registered',
    "1 when the fleet's job scheduler is registered in Redis, 0 when it is missing (nothing produces its jobs until a process with its role starts)",
    ['scheduler'],
    async () => ((await read())?.schedules ?? []).map((x) => ({ labels: { scheduler: x.id }, value: x.registered ? 1 : 0 })),
  );
  collectedGauge(
    ctx.metrics,
    'fleet_bucket_poll_last_success_timestamp_seconds',
    'Unix time the registration bucket was last polled successfully, by any process (absent before the first, or after Redis lost its data); a failing poll is retried up to the next scheduled one and then left to it, without a dead letter',
    [],
    async () => {
      const at = (await read())?.lastPoll;
      return at ? [{ labels: {}, value: at.getTime() / 1000 }] : [];
    },
  );
  // From this process's POLL_CRON, not from Redis: FleetRegistrationsNotPolled compares the two.
  const pollSchedule = { pattern: ctx.config.patientImport.pollCron, timeZone: ctx.config.patientImport.pollTimeZone };
  collectedGauge(
    ctx.metrics,
    'fleet_bucket_poll_due_timestamp_seconds',
    'Unix time of the scheduled bucket poll (POLL_CRON) that a last successful poll older than it has missed: the last one at least 30 minutes ago',
    [],
    async () => [{ labels: {}, value: bucketPollDueBy(pollSchedule, ctx.clock.now()).getTime() / 1000 }],
  );
  // Jobs that cannot reach PostgreSQL wait for it without using up their attempts (OUTAGE_CARRY_HOURS),
  // so no dead letters say that it is away: FleetPostgresDown does, from this.
  collectedGauge(
    ctx.metrics,
    'fleet_postgres_up',
    "1 when PostgreSQL answered this process's select 1 (its readiness probe connection) within 2 s in this scrape, else 0",
    [],
    async () => [{ labels: {}, value: await postgresAnswers(ctx, SERVICE_WAIT_MS).then(() => 1, () => 0) }],
  );
  collectedGauge(
    ctx.metrics,
    'fleet_queue_paused',
    '1 when the queue is paused (its jobs wait until it is resumed), else 0; dead-letter queues are not listed',
    ['queue'],
    async () => {
      const r = await read();
      return r ? ctx.queues.allQueues().filter((q) => !q.deadLetter).map(({ name }) => ({ labels: { queue: name }, value: r.paused.has(name) ? 1 : 0 })) : [];
    },
  );
}

export function metricsRoutes(ctx: FleetContext): Router {
  registerQueueDepth(ctx);
  const router = Router();
  router.get('/metrics', async (_req, res) => {
    const registry = ctx.metrics.registry;
    const body = await registry.metrics();
    res.setHeader('Cache-Control', 'no-store');
    res.type(registry.contentType).send(body);
  });
  return router;
}
