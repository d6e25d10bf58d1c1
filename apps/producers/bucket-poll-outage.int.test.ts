import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job } from 'bullmq';
import { listDeadLetters } from '../../libs/queues/index.js';
import type { Component } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { metricValues } from '../../libs/testing/metrics.js';
import { fileBytes, objectNameFor, plainRegistration } from '../../workers/patient-import/fixtures.js';
import { PREFIX, startOwnImportHarness, until, type ImportHarness } from '../../workers/patient-import/int-harness.js';
import { registerQueueDepth } from '../http/metrics.js';
import { bucketPollerComponents } from './bucket-poller.js';

/**
 * The bucket (or PostgreSQL, or Redis) is away for longer than a poll's old retries (5 attempts,
 * about 2.5 minutes): the scheduled poll must keep retrying up to the next scheduled poll and then
 * end without a dead letter (the next poll lists everything again), and the registrations must be
 * imported by the first poll after the outage, not an hour later. POLL_CRON fires every 10 s
 * here and retry delays are 1/100 of production's (100 ms doubling to 3.2 s), so a poll gets
 * about 8 attempts before the next one: more than the 5 after which it used to be dead-lettered.
 */
const EVERY_10_S = '*/10 * * * * *';
const LAST_SUCCESS = 'fleet_bucket_poll_last_success_timestamp_seconds';

let t: Awaited<ReturnType<typeof startOwnImportHarness>>;
let database: TestDatabase;
let h: ImportHarness;
const started: Component[] = [];

beforeAll(async () => {
  t = await startOwnImportHarness({ POLL_CRON: EVERY_10_S, RETRY_BACKOFF_SCALE: '0.01' });
  ({ database, h } = t);
  registerQueueDepth(h.ctx);
});
afterAll(() => t?.close(started));

async function statusOf(name: string) {
  const [r] = await database.sql`select status from fleet.patient_import_ledger where object_name = ${name}`;
  return (r as { status: string } | undefined)?.status;
}

/** A bucket-poll job its schedule produced that has ended failed. */
async function failedScheduledPoll(): Promise<Job | undefined> {
  const failed = await h.ctx.queues.queue('bucket-poll').getFailed(0, -1);
  return failed.find((j) => j.repeatJobKey === 'bucket-poll');
}

describe('a bucket outage longer than a poll', () => {
  it('the scheduled poll retries up to the next one and ends without a dead letter; the first poll after the outage imports; the last successful poll is exported', async () => {
    await h.startWorkers();
    // Nothing polled yet: no last success to export.
    expect(await metricValues(h.ctx.metrics.registry, LAST_SUCCESS)).toEqual({});
    // The poll due, by POLL_CRON (every 10 s): its last run at least 30 minutes ago.
    const before = Date.now();
    const due = (await metricValues(h.ctx.metrics.registry, 'fleet_bucket_poll_due_timestamp_seconds'))['']!;
    const after = Date.now();
    expect(due % 10).toBe(0);
    expect(due * 1000).toBeLessThanOrEqual(after - 30 * 60_000);
    expect(due * 1000).toBeGreaterThan(before - 30 * 60_000 - 10_000);

    h.standIn.fail({ kind: 'list', mode: { status: 503 }, times: Infinity });
    const doc = plainRegistration();
    const name = objectNameFor(doc, PREFIX);
    h.put(name, fileBytes(doc));
    for (const c of bucketPollerComponents(h.ctx)) {
      await c.start();
      started.push(c);
    }

    const job = await until(failedScheduledPoll, 60_000, 'a scheduled poll ended');
    // Retried past the old limit of 5 attempts, up to the next scheduled poll, which it names.
    expect(job.attemptsMade).toBeGreaterThan(5);
    const next = new Date(job.opts.prevMillis! + 10_000).toISOString();
    expect(job.failedReason).toMatch(new RegExp(`^superseded by the run scheduled for ${next} \\(a retry could not begin before it\\): gcs list failed`));
    // Nothing for an operator to discard: no dead letter, none counted.
    expect(await listDeadLetters(h.ctx.queues, { queue: 'bucket-poll' })).toEqual([]);
    expect(await metricValues(h.ctx.metrics.registry, 'fleet_jobs_dead_total', 'queue')).not.toHaveProperty('bucket-poll');
    expect(await statusOf(name)).toBeUndefined();
    expect(await metricValues(h.ctx.metrics.registry, LAST_SUCCESS)).toEqual({});

    // The bucket is back: a poll within seconds (a retry or the next scheduled one) imports the registration.
    const back = Date.now();
    h.standIn.clearFaults();
    await until(async () => (await statusOf(name)) === 'deleted', 60_000, 'the registration imported after the outage');
    // Recorded once that poll has also offered the unfinished imports again (after the enqueue).
    const lastSuccess = await until(async () => (await metricValues(h.ctx.metrics.registry, LAST_SUCCESS))[''], 20_000, 'a last successful poll exported');
    expect(lastSuccess * 1000).toBeGreaterThanOrEqual(back);
    expect(await listDeadLetters(h.ctx.queues, { queue: 'bucket-poll' })).toEqual([]);
  });
});
