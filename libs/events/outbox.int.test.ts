import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listOutbox, outboxLag } from '../db/repositories/outbox.js';
import { patienten } from '../db/schema/platform.js';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { appendEvent, topicFor } from './index.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
});

const patient = {
  anrede: 'Frau',
  geschlecht: 'weiblich',
  vorname: 'Erika',
  nachname: 'Musterfrau',
  zahlungsreferenz: 'abcd1234',
};

describe('appendEvent', () => {
  it('writes the event with the change in one transaction, in the DOMAIN envelope', async () => {
    const envelope = await db.db.transaction(async (tx) => {
      const [row] = await tx.insert(patienten).values(patient).returning({ id: patienten.id });
      return appendEvent(tx, { eventType: 'patient.created', key: row!.id, payload: { patientId: row!.id } });
    });
    expect(envelope).toMatchObject({ eventType: 'patient.created', version: 1, producer: 'curavani-fleet' });
    expect(envelope.eventId).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Date(envelope.timestamp).toISOString()).toBe(envelope.timestamp);
    const [row] = await listOutbox(db.db, { unpublishedOnly: true });
    expect(row).toMatchObject({ eventId: envelope.eventId, topic: 'patient-events', eventType: 'patient.created', publishedAt: null });
    expect(row!.key).toBe(String(envelope.payload.patientId));
    expect((await outboxLag(db.db)).pending).toBe(1);
  });

  it('a rolled-back change leaves no event behind', async () => {
    const before = (await listOutbox(db.db)).length;
    await expect(
      db.db.transaction(async (tx) => {
        const [row] = await tx.insert(patienten).values({ ...patient, zahlungsreferenz: 'rollback1' }).returning({ id: patienten.id });
        await appendEvent(tx, { eventType: 'patient.created', key: row!.id, payload: { patientId: row!.id } });
        throw new Error('crash before commit');
      }),
    ).rejects.toThrow('crash before commit');
    expect((await listOutbox(db.db)).length).toBe(before);
    expect(await db.db.select().from(patienten).where(eq(patienten.zahlungsreferenz, 'rollback1'))).toEqual([]);
  });

  it('routes event types to their topics', () => {
    expect(topicFor('patient.created')).toBe('patient-events');
    expect(topicFor('therapist.deactivated')).toBe('therapist-events');
    expect(topicFor('import.failed')).toBe('import-events');
    expect(topicFor('therapist_import.completed')).toBe('import-events');
  });
});
