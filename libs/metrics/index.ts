import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { within } from '../runtime/within.js';

/**
 * Prometheus metrics of one fleet process. Labels are queue and state names only:
 * never ids, names or anything a patient could be recognised by.
 */
export function createMetrics() {
  const registry = new Registry();
  // Node's process metrics under their standard names (process_*, nodejs_*), as the usual Node.js
  // dashboards read them; the fleet's own metrics are fleet_*.
  collectDefaultMetrics({ register: registry });
  const completed = new Counter({
    name: 'fleet_jobs_completed_total',
    help: 'Jobs that finished successfully',
    labelNames: ['queue'],
    registers: [registry],
  });
  const failed = new Counter({
    name: 'fleet_jobs_failed_total',
    help: 'Job attempts that failed (retried or not)',
    labelNames: ['queue', 'kind'],
    registers: [registry],
  });
  const dead = new Counter({
    name: 'fleet_jobs_dead_total',
    help: 'Jobs moved to a dead-letter queue',
    labelNames: ['queue'],
    registers: [registry],
  });
  const stalled = new Counter({
    name: 'fleet_jobs_stalled_total',
    help: 'Jobs found stalled by this process (their process died or lost their lock) and put back in their queue',
    labelNames: ['queue'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'fleet_job_duration_seconds',
    help: 'Time a job attempt took',
    labelNames: ['queue', 'outcome'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  return { registry, completed, failed, dead, stalled, duration };
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * A feature's metrics, made once per registry (prom-client refuses a metric name twice): every
 * later call with the same registry gets what the first one built.
 */
export function oncePerRegistry<T>(build: (registry: Registry) => T): (registry: Registry) => T {
  const made = new WeakMap<Registry, T>();
  return (registry) => {
    let m = made.get(registry);
    if (m === undefined) {
      m = build(registry);
      made.set(registry, m);
    }
    return m;
  };
}

/** How long a scrape waits for a gauge's read (PostgreSQL, Redis) before leaving those gauges out. */
export const SCRAPE_WAIT_MS = 2_000;

/** A read that gave no answer within the scrape's wait is not started again for this long while it hangs. */
export const SCRAPE_RETRY_HUNG_MS = 60_000;

/**
 * One read shared by the gauges of a scrape (prom-client starts every collect in the same
 * tick): a call while a read is in flight gets its promise, a settled read is not reused. A
 * read that fails, or does not answer within `waitMs` (a stopped or hung PostgreSQL leaves its
 * connections open and silent), is reported to `onError` and gives null, so the scrape still
 * answers and the gauges built on it are left out of it. Without the limit the whole /metrics
 * waited: Prometheus saw the process as down (FleetProcessDown) and lost its other metrics.
 * While such a read still hangs, the next scrapes give null at once instead of starting another
 * (each would hold one more pool connection until PostgreSQL answers); one is started again
 * after `retryHungMs`, in case the hung one never settles.
 */
export function scrapeRead<T>(
  read: () => Promise<T>,
  onError: (err: unknown) => void,
  waitMs: number = SCRAPE_WAIT_MS,
  retryHungMs: number = SCRAPE_RETRY_HUNG_MS,
): () => Promise<T | null> {
  let inFlight: Promise<T | null> | null = null;
  /** When the read that is still hanging began (null: none hangs). */
  let hungSince: number | null = null;
  return () => {
    if (inFlight) return inFlight;
    if (hungSince !== null && Date.now() - hungSince < retryHungMs) return Promise.resolve(null);
    const began = Date.now();
    const work = read();
    hungSince = null;
    let done = false;
    const settled = () => {
      done = true;
      if (hungSince === began) hungSince = null;
    };
    // Registered before the wait's: a read that failed is done when the wait's handler runs.
    void work.then(settled, settled);
    const p = within(work, waitMs).catch((err: unknown) => {
      if (!done) hungSince = began; // not answered within the wait: it hangs until it settles
      onError(err);
      return null;
    });
    inFlight = p;
    void p.then(() => {
      if (inFlight === p) inFlight = null;
    });
    return p;
  };
}

/** A gauge whose value is read when Prometheus scrapes (queue depth, outbox lag, ...); absent when `collect` gives no rows. */
export function collectedGauge(
  metrics: Metrics,
  name: string,
  help: string,
  labelNames: string[],
  collect: () => Promise<Array<{ labels: Record<string, string>; value: number }>>,
): Gauge {
  return new Gauge({
    name,
    help,
    labelNames,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      const rows = await collect();
      // No rows: the gauge is absent from the scrape (unknown), not 0, also without labels.
      if (rows.length === 0 && labelNames.length === 0) this.remove();
      for (const { labels, value } of rows) this.set(labels, value);
    },
  });
}
