import type { ParkRequest, ReadAhead, UnpublishedEvent } from '../../libs/db/repositories/outbox-relay.js';
import { outgoingEvent, refusalOf, type EventPublisher } from '../../libs/events/kafka.js';
import type { Clock } from '../../libs/runtime/clock.js';

/** Where the relay reads unpublished events and stamps them (the leader's lease). */
export interface OutboxSource {
  fetchUnpublished(limit: number, after?: ReadAhead): Promise<UnpublishedEvent[]>;
  markPublished(ids: number[], at: Date): Promise<void>;
  recordFailure(ids: number[], error: string): Promise<void>;
  /** Sets events aside until an operator retries them (never published, never deleted). */
  park(events: ParkRequest[], at: Date): Promise<void>;
}

export interface RelayBatchDeps {
  source: OutboxSource;
  publisher: EventPublisher;
  clock: Clock;
}

/** An event the relay set aside in this batch. */
export interface ParkedEvent {
  id: number;
  eventId: string;
  eventType: string;
  topic: string;
  /** Kafka's refusal (`MESSAGE_TOO_LARGE: …`), or `held behind <event id>`. */
  reason: string;
  /** Set when the event was not sent: an earlier event of its topic and key is parked. */
  heldBehind?: string;
}

export interface RelayBatchResult {
  fetched: number;
  published: number;
  byTopic: Record<string, number>;
  /** Events parked in this batch: refused by Kafka for good, or held behind one that was. */
  parked: ParkedEvent[];
}

/** Kafka did not take the batch (an outage); the rows stay unpublished and are tried again. */
export class PublishFailedError extends Error {
  override name = 'PublishFailedError';
  constructor(
    readonly events: number,
    cause: unknown,
  ) {
    super(`publishing ${events} event(s) failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

const message = (err: unknown) => (err as Error)?.message ?? String(err);
/** Kafka keeps order per topic partition, and the key picks the partition: order is per topic and key. */
const orderKey = (e: UnpublishedEvent) => `${e.topic}\u0000${e.key}`;

/**
 * Sends one batch (ids ascending) and returns what Kafka acknowledged. Stamping those is the
 * caller's job; parking is done here.
 *
 * 1. Events held behind a parked event of their topic and key (`heldBy`, found when the rows
 *    are read) are parked at once and never sent.
 * 2. The rest go to Kafka as one ordered request: the normal case, one round trip.
 * 3. If that fails with a refusal (`refusalOf`: Kafka will never take some message of it, e.g.
 *    MESSAGE_TOO_LARGE, INVALID_RECORD, TOPIC_AUTHORIZATION_FAILED), the batch is sent again one
 *    event at a time, in id order, to isolate the culprit(s): a refused event is parked, and so
 *    is every later event of its topic and key ("held behind" it), so a consumer never sees
 *    event n+1 of an entity without event n; events of other keys and topics are published.
 *    Slow (a round trip per event) but rare, and only for the batch that met the refusal.
 * 4. Any other failure is an outage (broker down, timeouts, authentication): nothing is parked,
 *    the unsent rows get `attempts`/`last_error` and PublishFailedError is thrown, so the relay
 *    backs off and retries them whole, as before. Events already acknowledged one by one in
 *    step 3 are stamped first.
 */
async function sendBatch(deps: RelayBatchDeps, batch: UnpublishedEvent[]): Promise<{ published: UnpublishedEvent[]; parked: ParkedEvent[]; refused: boolean }> {
  const { source, publisher, clock } = deps;
  const heldBehind = new Map<string, string>(); // topic+key -> event id of the parked event it waits for
  const parked: Array<ParkedEvent & { attempted: boolean }> = [];
  const hold = (e: UnpublishedEvent, behind: string) => {
    heldBehind.set(orderKey(e), behind);
    parked.push({ id: e.id, eventId: e.eventId, eventType: e.eventType, topic: e.topic, reason: `held behind ${behind}`, heldBehind: behind, attempted: false });
  };
  const writeParked = async (from: number) => {
    const fresh = parked.slice(from);
    if (fresh.length) await source.park(fresh.map((p) => ({ id: p.id, reason: p.reason, attempted: p.attempted })), clock.now());
  };
  const strip = () => parked.map(({ attempted: _, ...p }) => p);

  const toSend: UnpublishedEvent[] = [];
  for (const e of batch) {
    const behind = e.heldBy ?? heldBehind.get(orderKey(e));
    if (behind) hold(e, behind);
    else toSend.push(e);
  }
  await writeParked(0);
  if (toSend.length === 0) return { published: [], parked: strip(), refused: false };

  try {
    await publisher.publish(toSend.map(outgoingEvent));
    return { published: toSend, parked: strip(), refused: false };
  } catch (err) {
    if (!refusalOf(err)) {
      const failure = new PublishFailedError(toSend.length, err);
      await source.recordFailure(toSend.map((e) => e.id), failure.message).catch(() => {});
      throw failure;
    }
  }

  // A refusal: find the culprit(s) one event at a time.
  const alreadyParked = parked.length;
  const published: UnpublishedEvent[] = [];
  for (const [i, e] of toSend.entries()) {
    const behind = heldBehind.get(orderKey(e));
    if (behind) {
      hold(e, behind);
      continue;
    }
    try {
      await publisher.publish([outgoingEvent(e)]);
      published.push(e);
    } catch (err) {
      const code = refusalOf(err);
      if (code) {
        heldBehind.set(orderKey(e), e.eventId);
        parked.push({ id: e.id, eventId: e.eventId, eventType: e.eventType, topic: e.topic, reason: `${code}: ${message(err)}`, attempted: true });
        continue;
      }
      // Kafka went away in the middle: keep what was learnt, retry the rest later.
      const rest = toSend.slice(i).filter((r) => !heldBehind.has(orderKey(r)));
      const failure = new PublishFailedError(rest.length, err);
      await source.markPublished(published.map((p) => p.id), clock.now());
      await writeParked(alreadyParked);
      await source.recordFailure(rest.map((r) => r.id), failure.message).catch(() => {});
      throw failure;
    }
  }
  await writeParked(alreadyParked);
  return { published, parked: strip(), refused: true };
}

function countByTopic(events: UnpublishedEvent[]): Record<string, number> {
  const byTopic: Record<string, number> = {};
  for (const e of events) byTopic[e.topic] = (byTopic[e.topic] ?? 0) + 1;
  return byTopic;
}

/**
 * One relay step: the oldest unpublished events, in id order, go to Kafka as one ordered
 * batch and are stamped published once Kafka acknowledged all of them. If the process dies
 * between the two, the batch is published again later with the same event ids. Events Kafka
 * refuses for good are parked (see sendBatch).
 */
export async function relayBatch(deps: RelayBatchDeps, opts: { batchSize: number }): Promise<RelayBatchResult> {
  const events = await deps.source.fetchUnpublished(opts.batchSize);
  if (events.length === 0) return { fetched: 0, published: 0, byTopic: {}, parked: [] };
  const { published, parked } = await sendBatch(deps, events);
  await deps.source.markPublished(published.map((e) => e.id), deps.clock.now());
  return { fetched: events.length, published: published.length, byTopic: countByTopic(published), parked };
}

export interface DrainResult {
  published: number;
  batches: number;
  /** The last read found less than a full batch: nothing more waits right now. */
  caughtUp: boolean;
  /** Events parked during this drain. */
  parked: number;
}

/**
 * Publishes up to `maxBatches` batches back to back, overlapping PostgreSQL with Kafka:
 * while batch n is on its way to Kafka, batch n+1 is read (the oldest unpublished rows apart
 * from batches n-1 and n, whose stamps are not written yet) and batch n-1's "published" stamp
 * is written. Batches still go to Kafka one after another in id order, and a batch is stamped
 * only after Kafka acknowledged it. A row committed late with an id below batch n's is read
 * with batch n+1, in id order, so it goes out before any later event of its key.
 * A batch in which Kafka refused an event ends the drain (the batch read ahead may hold
 * followers of the parked event that do not know it yet): the next drain reads them again and
 * finds them held.
 */
export async function drainOutbox(
  deps: RelayBatchDeps & { onBatch?(result: RelayBatchResult): void; keepGoing?(): boolean },
  opts: { batchSize: number; maxBatches: number },
): Promise<DrainResult> {
  const { source, publisher, clock } = deps;
  let batch = await source.fetchUnpublished(opts.batchSize);
  let marking: Promise<void> = Promise.resolve();
  let published = 0;
  let parked = 0;
  let batches = 0;
  let caughtUp = batch.length < opts.batchSize;
  let stamping: number[] = []; // ids of the batch before, stamp not awaited yet
  try {
    while (batch.length > 0) {
      const ids = batch.map((e) => e.id);
      const last = Math.max(ids[ids.length - 1]!, stamping[stamping.length - 1] ?? 0);
      const more = !caughtUp && batches + 1 < opts.maxBatches && (deps.keepGoing?.() ?? true);
      const next = more ? source.fetchUnpublished(opts.batchSize, { afterId: last, inFlight: [...stamping, ...ids] }) : null;
      next?.catch(() => {}); // awaited below; a failure surfaces there
      const sent = await sendBatch({ source, publisher, clock }, batch);
      await marking;
      marking = source.markPublished(sent.published.map((e) => e.id), clock.now());
      marking.catch(() => {}); // awaited before the next stamp and at the end
      stamping = ids;
      published += sent.published.length;
      parked += sent.parked.length;
      batches++;
      deps.onBatch?.({ fetched: batch.length, published: sent.published.length, byTopic: countByTopic(sent.published), parked: sent.parked });
      if (sent.refused) {
        caughtUp = false;
        break;
      }
      if (!next) break;
      batch = await next;
      caughtUp = batch.length < opts.batchSize;
    }
  } finally {
    await marking;
  }
  return { published, batches, caughtUp, parked };
}
