import type { QueueSet } from './queue-set.js';
import { previousScheduledRun } from './schedulers.js';

/** How long a scheduled poll may keep failing (retried meanwhile) before it needs a look. */
export const POLL_GRACE_SECONDS = 30 * 60;

/**
 * When the registration bucket was last polled successfully (listed to its end, new files
 * enqueued, unfinished imports offered again) by any process: one Redis key under the fleet's
 * prefix. A poll that keeps failing is retried up to the next scheduled poll and then left to it,
 * without a dead letter; this time is what tells operators that polling keeps failing (`fleet
 * status`, the gauge `fleet_bucket_poll_last_success_timestamp_seconds`, the alert
 * `FleetRegistrationsNotPolled`). Lost with Redis's data until the next poll succeeds.
 */
function lastPollKey(queues: QueueSet): string {
  return `${queues.prefix}:bucket-poll-last-success`;
}

export async function recordBucketPollSuccess(queues: QueueSet, at: Date): Promise<void> {
  await (await queues.redis()).set(lastPollKey(queues), String(at.getTime()));
}

/**
 * The scheduled poll (POLL_CRON in POLL_TZ) that a last successful poll older than it has
 * missed: the last one at least POLL_GRACE_SECONDS before `now`. The daily view and the alert
 * FleetRegistrationsNotPolled (through the gauge fleet_bucket_poll_due_timestamp_seconds) say so.
 */
export function bucketPollDueBy(schedule: { pattern: string; timeZone: string }, now: Date): Date {
  return previousScheduledRun(schedule, new Date(now.getTime() - POLL_GRACE_SECONDS * 1000));
}

/** The last successful poll; null when none is recorded (none yet, or Redis lost its data since). */
export async function lastBucketPollSuccess(queues: QueueSet): Promise<Date | null> {
  const v = await (await queues.redis()).get(lastPollKey(queues));
  return v && Number.isFinite(Number(v)) ? new Date(Number(v)) : null;
}
