import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendEvent } from '../../libs/events/index.js';
import { until } from '../../libs/testing/until.js';
import { startHeldRelayHarness, type HeldRelayHarness } from './int-harness.js';

/**
 * An event whose transaction commits late (its id was taken early, a long import) while the
 * relay drains a backlog, with the real PostgreSQL outbox and the real relay role: the next
 * event of the same key (written after the first one committed, as a change that locks the
 * entity row does) must not go out first. The publisher (the Kafka port) records what it is
 * given and holds the first batch until the test lets it go.
 */

let h: HeldRelayHarness;

beforeAll(async () => {
  h = await startHeldRelayHarness('latecommit');
});

afterAll(async () => {
  await h?.close();
});

describe('an event committed late, below ids the relay has read already', () => {
  it('goes out before the later event of its key', { timeout: 60_000 }, async () => {
    await h.append('patient.created', 'x0');
    // K's first event takes its id now, its transaction commits only later.
    let commitK1!: () => void;
    const k1Committable = new Promise<void>((resolve) => (commitK1 = resolve));
    let k1Inserted!: () => void;
    const k1InTx = new Promise<void>((resolve) => (k1Inserted = resolve));
    const k1 = h.db.db.transaction(async (tx) => {
      const e = await appendEvent(tx, { eventType: 'patient.updated', key: 'K', payload: { key: 'K' } });
      k1Inserted();
      await k1Committable;
      return e;
    });
    await k1InTx;
    for (let i = 1; i <= 6; i++) await h.append('patient.created', `x${i}`);

    await h.startRelay();
    await until('the first batch on its way to Kafka', () => h.calls() >= 1);

    // While the first batch is in flight: K's first event commits, then its second is written.
    commitK1();
    const k1Event = await k1;
    const k2 = await h.append('patient.updated', 'K');
    h.releaseFirst();

    await until('all published', async () => {
      const [row] = await h.db.sql<{ n: number }[]>`select count(*)::int as n from fleet.outbox where published_at is null`;
      return row!.n === 0;
    });
    const ofK = h.sent.filter((m) => m.key === 'K').map((m) => m.headers['event-id']);
    expect(ofK.filter((id, i) => ofK.indexOf(id) === i)).toEqual([k1Event.eventId, k2.eventId]);
  });
});
