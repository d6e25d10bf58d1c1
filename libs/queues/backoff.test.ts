import type { MinimalJob } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { cappedBackoff } from './bind-worker.js';
import { CAPPED_BACKOFF, catalog, jobNames, retryDelayMs, retryHorizonMs, type JobName } from './catalog.js';
import { jobOptionsFor } from './queue-set.js';

const MINUTE = 60_000;

function jobOf(name: JobName, scale = 1): MinimalJob {
  return { name, opts: jobOptionsFor(name, scale) } as unknown as MinimalJob;
}

describe('retry backoff', () => {
  it('families that wait for PostgreSQL or Redis keep retrying through a 30-minute outage, even with the shortest jitter', () => {
    for (const name of ['patient-import', 'therapist-import', 'weekly-tick', 'weekly-fanout', 'weekly-status', 'email-send'] as const) {
      const retry = catalog[name].retry;
      expect(retryHorizonMs(retry) * (1 - retry.jitter), name).toBeGreaterThanOrEqual(30 * MINUTE);
    }
  });

  it("the weekly fan-out keeps retrying for at least 6 hours (a week's emails hang on it), never waiting more than 16 minutes between tries", () => {
    const retry = catalog['weekly-fanout'].retry;
    expect(retryHorizonMs(retry) * (1 - retry.jitter)).toBeGreaterThanOrEqual(6 * 60 * MINUTE);
    expect(retryDelayMs(retry, retry.attempts - 1)).toBeLessThanOrEqual(16 * MINUTE);
  });

  it('a capped family doubles its delay up to its cap, then stays there (BullMQ exponential would reach hours)', () => {
    const job = jobOf('therapist-import');
    const { backoffMs, maxDoublings } = catalog['therapist-import'].retry;
    const cap = backoffMs * 2 ** maxDoublings!;
    for (let retry = 1; retry < catalog['therapist-import'].retry.attempts; retry++) {
      const full = Math.min(backoffMs * 2 ** (retry - 1), cap);
      const d = cappedBackoff(retry, CAPPED_BACKOFF, undefined, job);
      expect(d, `retry ${retry}`).toBeGreaterThanOrEqual(full / 2);
      expect(d, `retry ${retry}`).toBeLessThanOrEqual(full);
    }
    expect(cap).toBeLessThanOrEqual(10 * MINUTE);
  });

  it('the cap scales with RETRY_BACKOFF_SCALE like the first delay', () => {
    const d = cappedBackoff(17, CAPPED_BACKOFF, undefined, jobOf('patient-import', 0.01));
    const { backoffMs, maxDoublings } = catalog['patient-import'].retry;
    expect(d).toBeLessThanOrEqual(backoffMs * 0.01 * 2 ** maxDoublings!);
    expect(d).toBeGreaterThanOrEqual((backoffMs * 0.01 * 2 ** maxDoublings!) / 2);
  });

  it('the bucket poll retries within minutes, and its attempts (a safety net: the next scheduled poll ends it) outlast even a weekly POLL_CRON', () => {
    const retry = catalog['bucket-poll'].retry;
    expect(retryDelayMs(retry, retry.attempts - 1)).toBeLessThanOrEqual(6 * MINUTE);
    expect(retryHorizonMs(retry) * (1 - retry.jitter)).toBeGreaterThanOrEqual(7 * 24 * 60 * MINUTE);
  });

  it('every family uses a backoff BullMQ or the worker binding knows', () => {
    for (const name of jobNames) {
      const type = (jobOptionsFor(name).backoff as { type: string }).type;
      expect(['exponential', CAPPED_BACKOFF], name).toContain(type);
    }
  });
});
