import type { UnpublishedEvent } from '../../libs/db/repositories/outbox-relay.js';
import { outgoingEvent, type EventPublisher } from '../../libs/events/kafka.js';
import type { Clock } from '../../libs/runtime/clock.js';

/** Where the relay reads unpublished events and stamps them (the leader's lease). */
export interface OutboxSource {
  fetchUnpublished(limit: number, afterId?: number): Promise<UnpublishedEvent[]>;
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

export interface DrainResult {
  published: number;
  batches: number;
  /** The last read found less than a full batch: nothing more waits right now. */
  caughtUp: boolean;
}

/**
 * Publishes up to `maxBatches` batches back to back, overlapping PostgreSQL with Kafka:
 * while batch n is on its way to Kafka, batch n+1 is read (ids above batch n's last) and
 * batch n-1's "published" stamp is written. Batches still go to Kafka one after another in
 * id order, and a batch is stamped only after Kafka acknowledged it. Each drain starts again
 * from the oldest unpublished row, so rows committed late with a lower id are not skipped.
 */
export async function drainOutbox(
  deps: RelayBatchDeps & { onBatch?(result: RelayBatchResult): void; keepGoing?(): boolean },
  opts: { batchSize: number; maxBatches: number },
): Promise<DrainResult> {
  const { source, publisher, clock } = deps;
  let batch = await source.fetchUnpublished(opts.batchSize);
  let marking: Promise<void> = Promise.resolve();
  let published = 0;
  let batches = 0;
  let caughtUp = batch.length < opts.batchSize;
  try {
    while (batch.length > 0) {
      const last = batch[batch.length - 1]!.id;
      const more = !caughtUp && batches + 1 < opts.maxBatches && (deps.keepGoing?.() ?? true);
      const next = more ? source.fetchUnpublished(opts.batchSize, last) : null;
      next?.catch(() => {}); // awaited below; a failure surfaces there
      const ids = batch.map((e) => e.id);
      try {
        await publisher.publish(batch.map(outgoingEvent));
      } catch (err) {
        const failure = new PublishFailedError(batch.length, err);
        await source.recordFailure(ids, failure.message).catch(() => {});
        throw failure;
      }
      await marking;
      marking = source.markPublished(ids, clock.now());
      marking.catch(() => {}); // awaited before the next stamp and at the end
      published += batch.length;
      batches++;
      const byTopic: Record<string, number> = {};
      for (const e of batch) byTopic[e.topic] = (byTopic[e.topic] ?? 0) + 1;
      deps.onBatch?.({ fetched: batch.length, published: batch.length, byTopic });
      if (!next) break;
      batch = await next;
      caughtUp = batch.length < opts.batchSize;
    }
  } finally {
    await marking;
  }
  return { published, batches, caughtUp };
}
