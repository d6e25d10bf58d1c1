import type { UnpublishedEvent } from '../../libs/db/repositories/outbox-relay.js';
import { outgoingEvent, type EventPublisher } from '../../libs/events/kafka.js';
import type { Clock } from '../../libs/runtime/clock.js';

/** Where the relay reads unpublished events and stamps them (the leader's lease). */
export interface OutboxSource {
  fetchUnpublished(limit: number): Promise<UnpublishedEvent[]>;
  markPublished(ids: number[], at: Date): Promise<void>;
  recordFailure(ids: number[], error: string): Promise<void>;
}

export interface RelayBatchDeps {
  source: OutboxSource;
  publisher: EventPublisher;
  clock: Clock;
}

export interface RelayBatchResult {
  fetched: number;
  published: number;
  byTopic: Record<string, number>;
}

/** Kafka did not take the batch; the rows stay unpublished and are tried again. */
export class PublishFailedError extends Error {
  override name = 'PublishFailedError';
  constructor(
    readonly events: number,
    cause: unknown,
  ) {
    super(`publishing ${events} event(s) failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

/**
 * One relay step: the oldest unpublished events, in id order, go to Kafka as one ordered
 * batch and are stamped published once Kafka acknowledged all of them. If the process dies
 * between the two, the batch is published again later with the same event ids.
 */
export async function relayBatch(deps: RelayBatchDeps, opts: { batchSize: number }): Promise<RelayBatchResult> {
  const events = await deps.source.fetchUnpublished(opts.batchSize);
  if (events.length === 0) return { fetched: 0, published: 0, byTopic: {} };
  const ids = events.map((e) => e.id);
  try {
    await deps.publisher.publish(events.map(outgoingEvent));
  } catch (err) {
    const failure = new PublishFailedError(events.length, err);
    await deps.source.recordFailure(ids, failure.message).catch(() => {});
    throw failure;
  }
  await deps.source.markPublished(ids, deps.clock.now());
  const byTopic: Record<string, number> = {};
  for (const e of events) byTopic[e.topic] = (byTopic[e.topic] ?? 0) + 1;
  return { fetched: events.length, published: events.length, byTopic };
}
