import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../libs/testing/db.js';
import { testQueuePrefix } from '../../libs/testing/redis.js';
import { GcsStandIn } from '../../libs/testing/gcs-stand-in.js';
import { fileBytes, objectNameFor, plainRegistration } from './fixtures.js';
import { BUCKET, PREFIX, startImportHarness, until, type ImportHarness } from './int-harness.js';

let database: TestDatabase;
let standIn: GcsStandIn;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  database = await createTestDatabase();
  standIn = await new GcsStandIn({ recordRequests: false }).start();
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await standIn?.close();
  await database?.drop();
});

async function harness(): Promise<ImportHarness> {
  const q = testQueuePrefix();
  const h = await startImportHarness({ databaseUrl: database.url, queuePrefix: q.prefix, standIn });
  cleanups.push(q.cleanup, () => h.close());
  return h;
}

describe('patient import: concurrency', () => {
  it('two pollers and two workers at once over 200 files: each file imported exactly once', async () => {
    const a = await harness();
    // The second process shares the queue prefix of the first: same queues, other connections.
    const b = await startImportHarness({ databaseUrl: database.url, queuePrefix: a.env.QUEUE_PREFIX!, standIn });
    cleanups.push(() => b.close());
    await Promise.all([a.startWorkers(), b.startWorkers()]);
    const prefix = `${PREFIX}batch/`;
    const tokens: string[] = [];
    for (let i = 0; i < 200; i++) {
      const token = `ba7c${String(i).padStart(4, '0')}${'0'.repeat(8)}`;
      tokens.push(token);
      const reg = plainRegistration({ token, vorname: `Vor${String.fromCharCode(97 + (i % 26))}`, nachname: `Nach${String.fromCharCode(97 + ((i / 26) | 0))}` });
      standIn.putObject(BUCKET, objectNameFor(reg, prefix), fileBytes(reg));
    }
    // Both pollers list at once, several times, while both workers import.
    for (let round = 0; round < 3; round++) await Promise.all([a.poll(), b.poll(), a.poll()]);
    await until(async () => standIn.listObjects(BUCKET, prefix).length === 0 || undefined, 45_000, 'bucket emptied');
    // The last deletes are recorded just after they went through.
    await until(async () => {
      const [open] = await database.sql`select count(*)::int as n from fleet.patient_import_ledger where object_name like ${`${prefix}%`} and status in ('imported', 'duplicate')`;
      return open!.n === 0 || undefined;
    }, 10_000, 'the last deletes recorded');
    const rows = await database.sql`select status, count(*)::int as n from fleet.patient_import_ledger where object_name like ${`${prefix}%`} group by status`;
    expect(rows).toEqual([{ status: 'deleted', n: 200 }]);
    const [patients] = await database.sql`select count(*)::int as n, count(distinct zahlungsreferenz)::int as refs from patient_service.patienten where zahlungsreferenz like 'ba7c%'`;
    expect(patients).toEqual({ n: 200, refs: 200 });
    const [mails] = await database.sql`select count(*)::int as n from fleet.deliveries d join fleet.patient_import_ledger l on d.idempotency_key = 'patient-import.staff.ledger.' || l.id where l.object_name like ${`${prefix}%`}`;
    expect(mails!.n).toBe(200);
    const [events] = await database.sql`select count(*)::int as n from fleet.outbox o join patient_service.patienten p on o.key = p.id::text where o.event_type = 'patient.created' and p.zahlungsreferenz like 'ba7c%'`;
    expect(events!.n).toBe(200);
  });
});
