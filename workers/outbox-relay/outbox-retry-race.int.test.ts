import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retryParked } from '../../libs/db/repositories/outbox-parked.js';
import { PARKING_LOCK } from '../../libs/db/repositories/outbox-relay.js';
import { until } from '../../libs/testing/until.js';
import { startHeldRelayHarness, type HeldRelayHarness } from './int-harness.js';

/**
 * An operator puts a parked key back (`fleet events retry-parked`) while the relay is in the
 * middle of a drain, with the real PostgreSQL outbox and the real relay role. The publisher
 * (the Kafka port) records what it is given and holds the first batch until the test lets it go.
 */

let h: HeldRelayHarness;

/**
 * The operator's retry of the key of `eventId`, once it has reached the drain's parking lock and
 * waits for it (or is through): a fixed pause let a slower retry begin after the drain ended, and
 * a test passed without the lock. Returns the retry, still running (wrapped: awaiting a returned
 * promise would wait for the retry itself).
 */
async function retryWhileDraining(harness: HeldRelayHarness, eventId: string): Promise<{ retried: Promise<unknown> }> {
  let settled = false;
  const retried = retryParked(harness.db.db, { eventId }, { actor: 'test', reason: 'limit raised' }).finally(() => (settled = true));
  await until('the retry waiting for the drain (or done)', async () =>
    settled ||
    (await harness.db.sql`select 1 from pg_locks where locktype = 'advisory' and not granted and classid = ${PARKING_LOCK[0]} and objid = ${PARKING_LOCK[1]} and objsubid = 2
      and database = (select oid from pg_database where datname = current_database())`).length > 0);
  return { retried };
}

async function allPublished(harness: HeldRelayHarness, timeoutMs?: number): Promise<void> {
  await until('all published', async () => {
    const [row] = await harness.db.sql<{ n: number }[]>`select count(*)::int as n from fleet.outbox where published_at is null`;
    return row!.n === 0;
  }, timeoutMs);
}

beforeAll(async () => {
  h = await startHeldRelayHarness('retryrace');
});

afterAll(async () => {
  await h?.close();
});

describe('retry-parked while the relay drains a backlog', () => {
  it('the key goes back in order: no later event of it is published before the ones put back', { timeout: 60_000 }, async () => {
    // Key K: two events Kafka refused earlier (parked), then a backlog of other keys, then K's third event.
    const k1 = await h.append('patient.updated', 'K');
    const k2 = await h.append('patient.updated', 'K');
    await h.db.sql`update fleet.outbox set parked_at = now(), park_reason = 'MESSAGE_TOO_LARGE: test' where event_id in (${k1.eventId}, ${k2.eventId})`;
    for (let i = 0; i < 4; i++) await h.append('patient.created', `x${i}`);
    const k3 = await h.append('patient.updated', 'K');
    await h.append('patient.created', 'x9');

    await h.startRelay();
    await until('the first batch on its way to Kafka', () => h.calls() >= 1);

    // The cause is fixed; the operator puts K back while the first batch is in flight.
    const { retried } = await retryWhileDraining(h, k1.eventId);
    h.releaseFirst();
    await retried;
    await allPublished(h);

    const ofK = h.sent.filter((m) => m.key === 'K').map((m) => m.headers['event-id']);
    expect(ofK.filter((id, i) => ofK.indexOf(id) === i)).toEqual([k1.eventId, k2.eventId, k3.eventId]);
  });
});

describe('retry-parked while the drain is about to hold a later event behind the parked ones', () => {
  it('the later event goes back with them, not left parked behind events already put back', { timeout: 60_000 }, async () => {
    const h2 = await startHeldRelayHarness('retryhold');
    const holder = await h2.db.sql.reserve();
    try {
      h2.releaseFirst(); // no batch is held in flight here
      const k1 = await h2.append('patient.updated', 'K');
      const k2 = await h2.append('patient.updated', 'K');
      await h2.db.sql`update fleet.outbox set parked_at = now(), park_reason = 'MESSAGE_TOO_LARGE: test' where event_id in (${k1.eventId}, ${k2.eventId})`;
      const k3 = await h2.append('patient.updated', 'K');
      // The drain reads K3 as held behind K1, then parks it: the test holds K3's row, so the
      // drain waits in between, with K1 and K2 still parked as it read them.
      await holder`begin`;
      await holder`select 1 from fleet.outbox where event_id = ${k3.eventId} for update`;
      await h2.startRelay();
      await until('the drain waiting to hold K3 behind K1', async () =>
        (await h2.db.sql`select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like 'update fleet.outbox o set parked_at%'
          and datname = current_database()`).length > 0);

      // The operator puts K back meanwhile.
      const { retried } = await retryWhileDraining(h2, k1.eventId);
      await holder`commit`;
      await retried;
      // Without the wait, K1 and K2 went back and the drain then parked K3 behind K1: K3 stayed
      // parked for good, until someone put it back too.
      await allPublished(h2, 10_000);
      const ofK = h2.sent.filter((m) => m.key === 'K').map((m) => m.headers['event-id']);
      expect(ofK.filter((id, i) => ofK.indexOf(id) === i)).toEqual([k1.eventId, k2.eventId, k3.eventId]);
    } finally {
      await holder`rollback`.catch(() => {});
      holder.release();
      await h2.close();
    }
  });
});
