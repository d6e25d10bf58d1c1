import { KafkaJSConnectionError, KafkaJSNonRetriableError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import type { RelayLease, UnpublishedEvent } from '../../libs/db/repositories/outbox-relay.js';
import { envelopeJson, TopicMissingError, type EventPublisher, type OutgoingEvent } from '../../libs/events/kafka.js';
import { createLogger, silentLogger } from '../../libs/log/index.js';
import { fixedClock } from '../../libs/runtime/clock.js';
import { backoffMs } from './backoff.js';
import { PublishFailedError, drainOutbox, relayBatch } from './process-batch.js';
import { createOutboxRelay, type RelaySettings } from './relay.js';

const event = (id: number, key = `k${id % 3}`): UnpublishedEvent => {
  const fields = {
    eventId: `00000000-0000-4000-8000-${String(id).padStart(12, '0')}`,
    eventType: 'patient.created',
    version: 1,
    producer: 'curavani-fleet',
    payload: { patientId: id },
    occurredAt: new Date('2026-01-05T10:00:00Z'),
  };
  return { id, ...fields, topic: 'patient-events', key, envelope: envelopeJson(fields), attempts: 0 };
};

type FakeRow = UnpublishedEvent & { publishedAt: Date | null; lastError: string | null; parkedAt: Date | null; parkReason: string | null };

/** An in-memory outbox behind a lease; `leader` decides who may hold it. Parks as PostgreSQL does (see outbox-relay.ts). */
function fakeOutbox(n: number, keyOf?: (id: number) => string) {
  const rows: FakeRow[] = Array.from({ length: n }, (_, i) => ({
    ...event(i + 1, keyOf?.(i + 1)),
    publishedAt: null,
    lastError: null,
    parkedAt: null,
    parkReason: null,
  }));
  let holder: object | null = null;
  const heldBy = (r: FakeRow) => rows.find((p) => p.parkedAt && !p.publishedAt && p.topic === r.topic && p.key === r.key && p.id < r.id)?.eventId ?? null;
  const lease = (owner: object): RelayLease => ({
    held: async () => holder === owner,
    fetchUnpublished: async (limit, after) =>
      rows
        .filter((r) => !r.publishedAt && !r.parkedAt && (r.id > (after?.afterId ?? 0) || !after?.inFlight.includes(r.id)))
        .slice(0, limit)
        .map((r) => ({ ...r, heldBy: heldBy(r) })),
    markPublished: async (ids, at) => {
      for (const r of rows) if (ids.includes(r.id)) r.publishedAt = at;
    },
    recordFailure: async (ids, error) => {
      for (const r of rows) {
        if (!ids.includes(r.id)) continue;
        r.lastError = error;
        r.attempts++;
      }
    },
    park: async (events, at) => {
      for (const p of events) {
        const r = rows.find((x) => x.id === p.id && !x.publishedAt);
        if (!r) continue;
        r.parkedAt = at;
        r.parkReason = p.reason;
        if (p.attempted) {
          r.attempts += 1;
          r.lastError = p.reason;
        }
      }
    },
    whileDraining: (drain) => drain(),
    release: async () => {
      if (holder === owner) holder = null;
    },
  });
  return {
    rows,
    acquire(owner: object) {
      if (holder && holder !== owner) return null;
      holder = owner;
      return lease(owner);
    },
    drop() {
      holder = null;
    },
  };
}

function fakePublisher(opts: { failFirst?: number } = {}) {
  const sent: OutgoingEvent[] = [];
  let failuresLeft = opts.failFirst ?? 0;
  let ok = false;
  let probes = 0;
  const publisher: EventPublisher & { sent: OutgoingEvent[]; probes(): number; disconnected: boolean } = {
    sent,
    disconnected: false,
    probes: () => probes,
    connect: async () => {},
    async publish(batch) {
      if (failuresLeft > 0) {
        failuresLeft--;
        ok = false;
        throw new Error('connect ECONNREFUSED 127.0.0.1:9092');
      }
      ok = true;
      sent.push(...batch);
    },
    async probe() {
      probes++;
      if (failuresLeft > 0) {
        ok = false;
        throw new Error('connect ECONNREFUSED');
      }
      ok = true;
    },
    async disconnect() {
      publisher.disconnected = true;
    },
    healthy: () => ok,
  };
  return publisher;
}

const settings: RelaySettings = {
  batchSize: 4,
  pollIntervalMs: 10,
  backoffMinMs: 100,
  backoffMaxMs: 1600,
  retentionDays: 7,
  pruneIntervalMs: 3_600_000,
  probeIntervalMs: 0,
};

/** Sleeps that only yield a tick, and remember what was asked for. */
function recordingSleep() {
  const asked: number[] = [];
  return { asked, sleep: (ms: number) => ((asked.push(ms), new Promise<void>((r) => setImmediate(r)))) };
}

async function until(fn: () => boolean | Promise<boolean>, what: string) {
  for (let i = 0; i < 5000; i++) {
    if (await fn()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never happened: ${what}`);
}

describe('backoffMs', () => {
  it('doubles from the minimum, stays within [half, all] of the step, and is capped', () => {
    const opts = { minMs: 100, maxMs: 1000 };
    expect([1, 2, 3, 4, 5, 10].map((n) => backoffMs(n, opts, () => 1))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect([1, 2, 3, 4, 5, 10].map((n) => backoffMs(n, opts, () => 0))).toEqual([50, 100, 200, 400, 500, 500]);
    expect(backoffMs(1000, opts, () => 0.5)).toBe(750);
  });
});

describe('relayBatch', () => {
  it('sends the oldest events in id order as one batch and stamps them only after Kafka took them', async () => {
    const outbox = fakeOutbox(6);
    const lease = outbox.acquire({})!;
    const publisher = fakePublisher();
    const clock = fixedClock('2026-01-05T10:00:05Z');
    const r = await relayBatch({ source: lease, publisher, clock }, { batchSize: 4 });
    expect(r).toEqual({ fetched: 4, published: 4, byTopic: { 'patient-events': 4 }, parked: [] });
    expect(publisher.sent.map((m) => m.headers['event-id'])).toEqual(outbox.rows.slice(0, 4).map((e) => e.eventId));
    const first = publisher.sent[0]!;
    expect(first.key).toBe('k1');
    expect(first.headers['event-type']).toBe('patient.created');
    expect(JSON.parse(first.value)).toEqual({
      eventId: outbox.rows[0]!.eventId,
      eventType: 'patient.created',
      version: 1,
      timestamp: '2026-01-05T10:00:00.000Z',
      producer: 'curavani-fleet',
      payload: { patientId: 1 },
    });
    expect(outbox.rows.map((e) => e.publishedAt?.toISOString() ?? null)).toEqual([...Array(4).fill('2026-01-05T10:00:05.000Z'), null, null]);
  });

  it('on a failed publish records the error, stamps nothing and throws PublishFailedError', async () => {
    const outbox = fakeOutbox(3);
    const publisher = fakePublisher({ failFirst: 1 });
    const err = await relayBatch({ source: outbox.acquire({})!, publisher, clock: fixedClock('2026-01-05T10:00:05Z') }, { batchSize: 10 }).catch((e) => e);
    expect(err).toBeInstanceOf(PublishFailedError);
    expect(err.events).toBe(3);
    expect(outbox.rows.every((e) => e.publishedAt === null && e.lastError?.includes('ECONNREFUSED'))).toBe(true);
  });
});

describe('drainOutbox', () => {
  it('publishes batch after batch in id order, stamping each only after Kafka took it', async () => {
    const outbox = fakeOutbox(10);
    const lease = outbox.acquire({})!;
    const stampedWhenPublished: number[] = [];
    const publisher = fakePublisher();
    const publish = publisher.publish;
    publisher.publish = async (batch) => {
      stampedWhenPublished.push(outbox.rows.filter((r) => r.publishedAt).length);
      await publish(batch);
    };
    const r = await drainOutbox({ source: lease, publisher, clock: fixedClock('2026-01-05T10:00:05Z') }, { batchSize: 4, maxBatches: 10 });
    expect(r).toEqual({ published: 10, batches: 3, caughtUp: true, parked: 0 });
    expect(publisher.sent.map((m) => m.headers['event-id'])).toEqual(outbox.rows.map((e) => e.eventId));
    expect(outbox.rows.every((e) => e.publishedAt)).toBe(true);
    // Stamps trail the publishes: never a batch stamped before Kafka acknowledged it.
    expect(stampedWhenPublished.every((n, i) => n <= i * 4)).toBe(true);
  });

  it('stops after maxBatches, and a failure stamps nothing from the failed batch on', async () => {
    const outbox = fakeOutbox(12);
    const lease = outbox.acquire({})!;
    const r = await drainOutbox({ source: lease, publisher: fakePublisher(), clock: fixedClock('2026-01-05T10:00:05Z') }, { batchSize: 4, maxBatches: 2 });
    expect(r).toEqual({ published: 8, batches: 2, caughtUp: false, parked: 0 });

    const failing = fakeOutbox(12);
    const publisher = fakePublisher();
    let calls = 0;
    const publish = publisher.publish;
    publisher.publish = async (batch) => {
      if (++calls === 2) throw new Error('broker gone');
      await publish(batch);
    };
    const err = await drainOutbox({ source: failing.acquire({})!, publisher, clock: fixedClock('2026-01-05T10:00:05Z') }, { batchSize: 4, maxBatches: 10 }).catch((e) => e);
    expect(err).toBeInstanceOf(PublishFailedError);
    expect(failing.rows.map((e) => (e.publishedAt ? 'p' : e.lastError ? 'f' : '-')).join('')).toBe('ppppffff----');
  });
});

describe('createOutboxRelay', () => {
  it('publishes the whole backlog in id order, then reports ready', async () => {
    const outbox = fakeOutbox(10);
    const publisher = fakePublisher();
    const { sleep } = recordingSleep();
    const owner = {};
    const relay = createOutboxRelay(
      { acquireLease: async () => outbox.acquire(owner), publisher, prunePublished: async () => 0, clock: fixedClock('2026-01-05T11:00:00Z'), log: silentLogger(), sleep },
      settings,
    );
    relay.start();
    await until(() => outbox.rows.every((r) => r.publishedAt), 'backlog published');
    expect(publisher.sent.map((m) => m.headers['event-id'])).toEqual(outbox.rows.map((r) => r.eventId));
    expect(relay.role()).toBe('leader');
    await until(async () => (await relay.ready()).ok, 'ready');
    await relay.stop(1000);
    expect(publisher.disconnected).toBe(true);
    expect(relay.role()).toBe('stopped');
  });

  it('Kafka down: backs off exponentially (capped), reports not ready, keeps the rows, then publishes when Kafka is back', async () => {
    const outbox = fakeOutbox(5);
    const publisher = fakePublisher({ failFirst: 7 });
    const { asked, sleep } = recordingSleep();
    const relay = createOutboxRelay(
      { acquireLease: async () => outbox.acquire(relay), publisher, prunePublished: async () => 0, clock: fixedClock('2026-01-05T11:00:00Z'), log: silentLogger(), sleep, random: () => 1 },
      settings,
    );
    relay.start();
    await until(async () => relay.kafkaUp() === false, 'Kafka seen down');
    expect((await relay.ready()).ok).toBe(false);
    expect((await relay.ready()).detail).toMatch(/kafka down since 2026-01-05T11:00:00.000Z: .*ECONNREFUSED.*events wait in the outbox/);
    await until(() => outbox.rows.every((r) => r.publishedAt), 'published after Kafka came back');
    expect(asked.slice(0, 7)).toEqual([100, 200, 400, 800, 1600, 1600, 1600]);
    expect(await relay.ready()).toEqual({ ok: true, detail: 'kafka reachable (relay leader)' });
    await relay.stop(1000);
  });

  it('a second relay stays on standby while the first holds the lease, and takes over when it is gone', async () => {
    const outbox = fakeOutbox(0);
    const a = fakePublisher();
    const b = fakePublisher();
    const { sleep } = recordingSleep();
    const common = { prunePublished: async () => 0, clock: fixedClock('2026-01-05T11:00:00Z'), log: silentLogger(), sleep };
    const ownerA = {};
    const ownerB = {};
    const relayA = createOutboxRelay({ ...common, acquireLease: async () => outbox.acquire(ownerA), publisher: a }, settings);
    relayA.start();
    await until(() => relayA.role() === 'leader', 'A leader');
    const relayB = createOutboxRelay({ ...common, acquireLease: async () => outbox.acquire(ownerB), publisher: b }, settings);
    relayB.start();
    await until(() => relayB.role() === 'standby', 'B standby');
    await relayA.stop(1000);
    await until(() => relayB.role() === 'leader', 'B takes over');
    await relayB.stop(1000);
  });

  it('a leader whose session lost the lock steps back to standby before publishing anything', async () => {
    const outbox = fakeOutbox(3);
    const publisher = fakePublisher();
    const { sleep } = recordingSleep();
    const owner = {};
    let calls = 0;
    const relay = createOutboxRelay(
      {
        acquireLease: async () => {
          calls++;
          const l = outbox.acquire(owner);
          if (calls === 1) outbox.drop(); // the session died right after locking
          return l;
        },
        publisher,
        prunePublished: async () => 0,
        clock: fixedClock('2026-01-05T11:00:00Z'),
        log: silentLogger(),
        sleep,
      },
      settings,
    );
    relay.start();
    await until(() => outbox.rows.every((r) => r.publishedAt), 'published by the second lease');
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(publisher.sent).toHaveLength(3);
    await relay.stop(1000);
  });

  it('prunes published rows older than the retention once per interval', async () => {
    const outbox = fakeOutbox(0);
    const cutoffs: string[] = [];
    const { sleep } = recordingSleep();
    const relay = createOutboxRelay(
      {
        acquireLease: async () => outbox.acquire(relay),
        publisher: fakePublisher(),
        prunePublished: async (d) => (cutoffs.push(d.toISOString()), 0),
        clock: fixedClock('2026-01-08T11:00:00Z'),
        log: silentLogger(),
        sleep,
      },
      { ...settings, retentionDays: 3 },
    );
    relay.start();
    await until(() => cutoffs.length > 0, 'pruned');
    await new Promise((r) => setTimeout(r, 20));
    await relay.stop(1000);
    expect(cutoffs).toEqual(['2026-01-05T11:00:00.000Z']); // fixed clock: the hour never passes
  });

  it('without a publisher (no brokers configured) it never takes the lease and says why it is idle', async () => {
    let asked = 0;
    const relay = createOutboxRelay(
      { acquireLease: async () => (asked++, null), publisher: null, prunePublished: async () => 0, clock: fixedClock('2026-01-05T11:00:00Z'), log: silentLogger() },
      settings,
    );
    relay.start();
    await new Promise((r) => setTimeout(r, 30));
    expect(asked).toBe(0);
    expect(relay.role()).toBe('disabled');
    expect(await relay.ready()).toEqual({ ok: true, detail: 'kafka not configured: events stay in the outbox' });
    await relay.stop(100);
  });
});

type ErrorClass = new (e: Error | string, metadata?: Record<string, unknown>) => Error;

/** A send that Kafka refused for good, as kafkajs reports it (its retrier wraps the broker's protocol error). */
function refusal(type = 'MESSAGE_TOO_LARGE', code = 10): Error {
  const e = new KafkaJSProtocolError(Object.assign(new Error('The request included a message larger than the max message size the server will accept'), { type, code, retriable: false }));
  return new (KafkaJSNonRetriableError as unknown as ErrorClass)(e, { cause: e });
}

/** A broker that stayed away through kafkajs's retries: non-retriable on the outside, an outage all the same. */
function outage(): Error {
  return new (KafkaJSNumberOfRetriesExceeded as unknown as ErrorClass)(new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092'), { retryCount: 2, retryTime: 800 });
}

/**
 * Like Kafka: a request holding a message it refuses fails as a whole; `refuse` decides per
 * message (event id) and can change over time. `down` makes every request an outage.
 */
function refusingPublisher(refuse: (eventId: string) => boolean) {
  const publisher = fakePublisher();
  const publish = publisher.publish;
  const requests: string[][] = [];
  const control = { down: false };
  publisher.publish = async (batch) => {
    requests.push(batch.map((m) => m.headers['event-id']!));
    if (control.down) throw outage();
    if (batch.some((m) => refuse(m.headers['event-id']!))) throw refusal();
    await publish(batch);
  };
  const probe = publisher.probe;
  publisher.probe = async () => {
    if (control.down) throw outage();
    await probe();
  };
  return Object.assign(publisher, { requests, control });
}

const idOf = (n: number) => event(n).eventId;
const sentIds = (p: { sent: OutgoingEvent[] }) => p.sent.map((m) => Number(m.headers['event-id']!.slice(-12)));
const state = (rows: Array<{ publishedAt: Date | null; parkedAt: Date | null; lastError: string | null }>) =>
  rows.map((r) => (r.publishedAt ? 'p' : r.parkedAt ? 'P' : r.lastError ? 'f' : '-')).join('');

describe('an event Kafka refuses for good', () => {
  // Keys: 1 A, 2 B, 3 A, 4 B, 5 C (therapist-events), 6 B, 7 D, 8 A
  const keys: Record<number, string> = { 1: 'A', 2: 'B', 3: 'A', 4: 'B', 5: 'C', 6: 'B', 7: 'D', 8: 'A' };
  const mixedOutbox = () => {
    const outbox = fakeOutbox(8, (id) => keys[id]!);
    outbox.rows[4]!.topic = 'therapist-events';
    return outbox;
  };

  it('is parked with its same-key followers; every other event is published, in order', async () => {
    const outbox = mixedOutbox();
    const publisher = refusingPublisher((id) => id === idOf(2));
    const clock = fixedClock('2026-01-05T10:00:05Z');
    const lease = outbox.acquire({})!;
    const r = await drainOutbox({ source: lease, publisher, clock }, { batchSize: 10, maxBatches: 10 });

    expect(sentIds(publisher)).toEqual([1, 3, 5, 7, 8]);
    expect(state(outbox.rows)).toEqual('pPpPpPpp');
    expect(r).toMatchObject({ published: 5, parked: 3, caughtUp: false });
    const [culprit, , held] = [outbox.rows[1]!, outbox.rows[2]!, outbox.rows[3]!];
    expect(culprit.parkReason).toMatch(/^MESSAGE_TOO_LARGE: The request included a message larger/);
    expect(culprit.attempts).toBe(1);
    expect(held.parkReason).toBe(`held behind ${idOf(2)}`);
    expect(held.attempts).toBe(0); // never sent
    expect(outbox.rows[5]!.parkReason).toBe(`held behind ${idOf(2)}`);
    // The followers of B were never offered to Kafka on their own.
    expect(publisher.requests.filter((q) => q.length === 1).flat()).not.toContain(idOf(4));

    // Nothing more is sent: parked rows are not read again.
    const again = await drainOutbox({ source: lease, publisher, clock }, { batchSize: 10, maxBatches: 10 });
    expect(again).toEqual({ published: 0, batches: 0, caughtUp: true, parked: 0 });
    expect(culprit.attempts).toBe(1);
  });

  it('holds later events of the parked key that arrive afterwards, across batches, and lets other keys pass', async () => {
    const outbox = mixedOutbox();
    const publisher = refusingPublisher((id) => id === idOf(2));
    const lease = outbox.acquire({})!;
    const clock = fixedClock('2026-01-05T10:00:05Z');
    // Small batches: the culprit's followers come in later batches and later drains.
    let drains = 0;
    while (outbox.rows.some((r) => !r.publishedAt && !r.parkedAt) && drains++ < 10) {
      await drainOutbox({ source: lease, publisher, clock }, { batchSize: 2, maxBatches: 10 });
    }
    expect(sentIds(publisher)).toEqual([1, 3, 5, 7, 8]);
    expect(state(outbox.rows)).toEqual('pPpPpPpp');

    // A new event of key B: held at once, never sent; one of key A goes out.
    outbox.rows.push({ ...event(9, 'B'), publishedAt: null, lastError: null, parkedAt: null, parkReason: null });
    outbox.rows.push({ ...event(10, 'A'), publishedAt: null, lastError: null, parkedAt: null, parkReason: null });
    const before = publisher.requests.length;
    const r = await drainOutbox({ source: lease, publisher, clock }, { batchSize: 10, maxBatches: 10 });
    expect(r).toMatchObject({ published: 1, parked: 1 });
    expect(publisher.requests.slice(before)).toEqual([[idOf(10)]]);
    expect(outbox.rows[8]!.parkReason).toBe(`held behind ${idOf(2)}`);
  });

  it('once the cause is fixed and the events are put back, the culprit and its followers go out in their order', async () => {
    const outbox = mixedOutbox();
    let refusing = true;
    const publisher = refusingPublisher((id) => refusing && id === idOf(2));
    const lease = outbox.acquire({})!;
    const clock = fixedClock('2026-01-05T10:00:05Z');
    await drainOutbox({ source: lease, publisher, clock }, { batchSize: 10, maxBatches: 10 });
    refusing = false;
    for (const r of outbox.rows) {
      // what fleet events retry-parked does
      r.parkedAt = null;
      r.parkReason = null;
    }
    await drainOutbox({ source: lease, publisher, clock }, { batchSize: 10, maxBatches: 10 });
    expect(sentIds(publisher)).toEqual([1, 3, 5, 7, 8, 2, 4, 6]);
    expect(outbox.rows.every((r) => r.publishedAt)).toBe(true);
  });

  it('a retriable failure (broker down) parks nothing: the whole batch is recorded as failed and retried whole', async () => {
    const outbox = mixedOutbox();
    const publisher = refusingPublisher(() => false);
    publisher.control.down = true;
    const lease = outbox.acquire({})!;
    const clock = fixedClock('2026-01-05T10:00:05Z');
    const err = await drainOutbox({ source: lease, publisher, clock }, { batchSize: 10, maxBatches: 10 }).catch((e) => e);
    expect(err).toBeInstanceOf(PublishFailedError);
    expect(publisher.requests).toHaveLength(1); // no event-by-event isolation for an outage
    expect(state(outbox.rows)).toBe('ffffffff');
    expect(outbox.rows.every((r) => r.attempts === 1 && r.parkedAt === null)).toBe(true);

    publisher.control.down = false;
    await drainOutbox({ source: lease, publisher, clock }, { batchSize: 10, maxBatches: 10 });
    expect(publisher.requests.slice(1)).toEqual([outbox.rows.map((r) => r.eventId)]); // retried whole, in order
    expect(state(outbox.rows)).toBe('pppppppp');
  });

  it('Kafka going away while the culprit is isolated: what was acknowledged is stamped, the culprit parked, the rest retried', async () => {
    const outbox = mixedOutbox();
    const publisher = refusingPublisher((id) => id === idOf(2));
    const publish = publisher.publish;
    publisher.publish = async (batch) => {
      if (batch.length === 1 && batch[0]!.headers['event-id'] === idOf(5)) publisher.control.down = true;
      await publish(batch);
    };
    const err = await drainOutbox({ source: outbox.acquire({})!, publisher, clock: fixedClock('2026-01-05T10:00:05Z') }, { batchSize: 10, maxBatches: 10 }).catch((e) => e);
    expect(err).toBeInstanceOf(PublishFailedError);
    // 6 (key B) was not reached: the next drain reads it held behind the parked 2.
    expect(state(outbox.rows)).toBe('pPpPf-ff');
    expect(outbox.rows[1]!.parkReason).toMatch(/^MESSAGE_TOO_LARGE/);
  });

  it('relayBatch: the same isolation for a single step', async () => {
    const outbox = mixedOutbox();
    const publisher = refusingPublisher((id) => id === idOf(2));
    const r = await relayBatch({ source: outbox.acquire({})!, publisher, clock: fixedClock('2026-01-05T10:00:05Z') }, { batchSize: 4 });
    expect(r.published).toBe(2);
    expect(r.byTopic).toEqual({ 'patient-events': 2 });
    expect(r.parked.map((p) => [p.eventId, p.heldBehind ?? null])).toEqual([
      [idOf(2), null],
      [idOf(4), idOf(2)],
    ]);
    expect(state(outbox.rows)).toBe('pPpP----');
  });

  it('the relay keeps publishing the other events and says Kafka is up (the reported defect: nothing moved, "kafka down")', async () => {
    // 4 events on two topics; Kafka refuses the first one for good.
    const outbox = fakeOutbox(4, (id) => (id === 3 ? 'T' : `K${id}`));
    outbox.rows[2]!.topic = 'therapist-events';
    const publisher = refusingPublisher((id) => id === idOf(1));
    const { asked, sleep } = recordingSleep();
    const batches: Array<{ published: number; parked: number }> = [];
    const relay = createOutboxRelay(
      {
        acquireLease: async () => outbox.acquire(relay),
        publisher,
        prunePublished: async () => 0,
        clock: fixedClock('2026-01-05T11:00:00Z'),
        log: silentLogger(),
        sleep,
        random: () => 1,
        onBatch: (b) => batches.push({ published: b.published, parked: b.parked.length }),
      },
      settings,
    );
    relay.start();
    await until(() => outbox.rows.every((r) => r.publishedAt || r.parkedAt), 'every event published or parked');
    await until(() => asked.length > 5, 'a few more polls');
    await relay.stop(1000);
    expect(sentIds(publisher)).toEqual([2, 3, 4]);
    expect(state(outbox.rows)).toBe('Pppp');
    expect(outbox.rows[0]!.attempts).toBe(1); // not climbing
    expect(relay.kafkaUp()).toBe(true);
    expect(asked.every((ms) => ms === settings.pollIntervalMs)).toBe(true); // no backoff: Kafka is not down
    expect(batches).toContainEqual({ published: 3, parked: 1 });
  });

  it('the relay: a batch that is only held behind a parked event does not tell readiness that Kafka is up', async () => {
    const outbox = fakeOutbox(3, () => 'B');
    outbox.rows[0]!.parkedAt = new Date('2026-01-05T10:00:00Z');
    const publisher = refusingPublisher(() => false);
    publisher.control.down = true;
    const { sleep } = recordingSleep();
    const relay = createOutboxRelay(
      { acquireLease: async () => outbox.acquire(relay), publisher, prunePublished: async () => 0, clock: fixedClock('2026-01-05T11:00:00Z'), log: silentLogger(), sleep },
      settings,
    );
    relay.start();
    await until(() => outbox.rows.every((r) => r.parkedAt), 'followers held');
    await until(() => relay.kafkaUp() === false, 'probe says Kafka is down');
    await relay.stop(1000);
    expect(publisher.sent).toHaveLength(0);
  });
});

describe('a topic missing on Kafka', () => {
  /** Fails every publish that has an event for a topic in `missing` (as kafkajsPublisher reports it); `down`: the broker is gone. */
  function topicCheckingPublisher() {
    const control = { missing: new Set<string>(), down: false };
    const publisher = fakePublisher();
    const publish = publisher.publish;
    publisher.publish = async (batch) => {
      if (control.down) throw new Error('connect ECONNREFUSED 127.0.0.1:9092');
      const absent = [...new Set(batch.map((m) => m.topic))].filter((t) => control.missing.has(t));
      if (absent.length) throw new TopicMissingError(absent, new Error('This server does not host this topic-partition'));
      await publish(batch);
    };
    return Object.assign(publisher, { control });
  }

  function recordingLogger() {
    const lines: Array<{ level: number; msg: string; topics?: string[] }> = [];
    return { lines, log: createLogger({ level: 'info', pretty: 'false' }, { write: (l: string) => void lines.push(JSON.parse(l)) }) };
  }

  it('says which topic to create (once), counts Kafka as up, keeps the events in order and publishes them once the topic exists', async () => {
    const outbox = fakeOutbox(6);
    outbox.rows[1]!.topic = 'import-events';
    const publisher = topicCheckingPublisher();
    publisher.control.missing.add('import-events');
    const { sleep } = recordingSleep();
    const { lines, log } = recordingLogger();
    const reported: string[][] = [];
    const kafkaChanges: boolean[] = [];
    const relay = createOutboxRelay(
      {
        acquireLease: async () => outbox.acquire(relay),
        publisher,
        prunePublished: async () => 0,
        clock: fixedClock('2026-01-05T11:00:00Z'),
        log,
        sleep,
        random: () => 1,
        onTopicsMissing: (t) => reported.push(t),
        onKafkaChange: (up) => kafkaChanges.push(up),
      },
      settings,
    );
    relay.start();
    await until(() => outbox.rows[0]!.attempts >= 4, 'a few tries');
    expect(relay.kafkaUp()).toBe(true);
    expect(relay.missingTopics()).toEqual(['import-events']);
    expect(await relay.ready()).toEqual({
      ok: false,
      detail: 'kafka reachable, but has no topic import-events (since 2026-01-05T11:00:00.000Z): create it: fleet events setup; events wait in the outbox',
    });
    expect(reported).toEqual([['import-events']]);
    expect(kafkaChanges).toEqual([true]);
    expect(lines.filter((l) => l.level === 40).map((l) => [l.msg, l.topics])).toEqual([
      ['kafka has no topic for these events: they wait in the outbox, in order; create it: fleet events setup', ['import-events']],
    ]);
    expect(outbox.rows.every((r) => !r.publishedAt && !r.parkedAt)).toBe(true);
    expect(outbox.rows[0]!.lastError).toMatch(/no topic import-events on Kafka \(create it: fleet events setup\)/);

    publisher.control.missing.clear();
    await until(() => outbox.rows.every((r) => r.publishedAt), 'published once the topic exists');
    expect(sentIds(publisher)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(relay.missingTopics()).toEqual([]);
    expect(reported).toEqual([['import-events'], []]);
    expect(lines.some((l) => l.level === 30 && l.msg === 'kafka topics exist now: publishing the backlog')).toBe(true);
    await until(async () => (await relay.ready()).ok, 'ready');
    await relay.stop(1000);
  });

  it('a broker that goes away meanwhile is Kafka down again; a relay that stops leading forgets the missing topic', async () => {
    const outbox = fakeOutbox(3);
    outbox.rows[0]!.topic = 'import-events';
    const publisher = topicCheckingPublisher();
    publisher.control.missing.add('import-events');
    const { sleep } = recordingSleep();
    const reported: string[][] = [];
    const relay = createOutboxRelay(
      {
        acquireLease: async () => outbox.acquire(relay),
        publisher,
        prunePublished: async () => 0,
        clock: fixedClock('2026-01-05T11:00:00Z'),
        log: silentLogger(),
        sleep,
        onTopicsMissing: (t) => reported.push(t),
      },
      settings,
    );
    relay.start();
    await until(() => relay.missingTopics().length === 1, 'topic missing');
    publisher.control.down = true;
    await until(() => relay.kafkaUp() === false, 'Kafka down');
    expect(relay.missingTopics()).toEqual([]);
    expect((await relay.ready()).detail).toMatch(/^kafka down since .*ECONNREFUSED/);
    publisher.control.down = false;
    await until(() => relay.missingTopics().length === 1, 'topic missing again');
    outbox.drop();
    outbox.acquire({}); // another relay took over
    await until(() => relay.role() === 'standby', 'standby');
    expect(relay.missingTopics()).toEqual([]);
    expect(reported).toEqual([['import-events'], [], ['import-events'], []]);
    await relay.stop(1000);
  });
});
