import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileBytes, objectNameFor, plainRegistration } from './fixtures.js';
import { BUCKET, PREFIX, startOwnImportHarness, until } from './int-harness.js';

/**
 * The bucket delete retried inside the storage call (GCS_MAX_RETRIES > 0, the production
 * default): when a delete request got no answer, GCS may have carried it out, and the retry
 * then finds the generation gone. That is the fleet's own delete, not an object removed by
 * someone else, and the ledger must say so.
 */
let own: Awaited<ReturnType<typeof startOwnImportHarness>>;
/** Runs after the import's commit, before its delete (set by a test for its one import). */
let afterCommit: (() => Promise<void>) | undefined;

beforeAll(async () => {
  own = await startOwnImportHarness({ GCS_MAX_RETRIES: '2', GCS_TIMEOUT_MS: '1000', GCS_TOTAL_TIMEOUT_MS: '20000' });
  await own.h.startWorkers({ afterCommit: () => afterCommit?.() });
});
afterAll(async () => {
  await own?.close([]);
});

async function importOne(prepare: (name: string) => void) {
  const reg = plainRegistration();
  const name = objectNameFor(reg, PREFIX);
  const { generation } = own.h.standIn.putObject(BUCKET, name, fileBytes(reg));
  prepare(name);
  await own.h.poll();
  const row = await until(async () => {
    const [r] = await own.database.sql`select * from fleet.patient_import_ledger where object_name = ${name} and generation = ${generation}`;
    return r && ['deleted', 'superseded', 'failed'].includes(r.status as string) ? r : undefined;
  }, 30_000, 'ledger row settled');
  const patients = await own.database.sql`select id from patient_service.patienten where email = ${(reg.patient_data as { email: string }).email}`;
  return { row, name, patients };
}

describe('bucket delete retried by the storage call', () => {
  it('the answer of the delete lost (carried out, connection dropped): the retry finds it gone, recorded as deleted_earlier', async () => {
    const { row, name, patients } = await importOne((n) => own.h.standIn.fail({ kind: 'delete', mode: 'lost-answer', object: n }));
    expect(row).toMatchObject({ status: 'deleted', delete_outcome: 'deleted_earlier', attempts: 1 });
    expect(own.h.standIn.getObject(BUCKET, name)).toBeUndefined();
    expect(patients).toHaveLength(1);
    expect(own.h.standIn.pendingFaults()).toBe(0);
  });

  it('a 503, then the retry deletes it: deleted', async () => {
    const { row, patients } = await importOne((n) => own.h.standIn.fail({ kind: 'delete', mode: { status: 503 }, object: n }));
    expect(row).toMatchObject({ status: 'deleted', delete_outcome: 'deleted', attempts: 1 });
    expect(patients).toHaveLength(1);
  });

  it('the delete is sent only once its request is recorded: a process killed between them leaves deleted_earlier, never not_found', async () => {
    /** undefined: no delete arrived; null: it arrived before its request was recorded. */
    let recordedWhenSent: string | null | undefined;
    const { row } = await importOne((n) => {
      afterCommit = async () => {
        // Another session holds the row for half a second: the record of the delete request waits for it.
        const c = await own.database.sql.reserve();
        await c`begin`;
        await c`select id from fleet.patient_import_ledger where object_name = ${n} for update`;
        setTimeout(() => void c`commit`.finally(() => c.release()), 500);
      };
      own.h.standIn.before('delete', async (req) => {
        if (req.object !== n) return;
        const [r] = await own.database.sql`select delete_requested_at from fleet.patient_import_ledger where object_name = ${n}`;
        recordedWhenSent = r?.delete_requested_at ? String(r.delete_requested_at) : null;
      });
    });
    afterCommit = undefined;
    // Sent together with the record, the delete arrived while the record waited (null): a kill then
    // left a row whose retry found the object gone and recorded not_found (removed by someone else).
    expect(recordedWhenSent).toEqual(expect.any(String));
    expect(row).toMatchObject({ status: 'deleted', delete_outcome: 'deleted' });
  });

  it('removed by someone else before the fleet sent its delete: still not_found', async () => {
    const { row, patients } = await importOne((n) => own.h.standIn.before('delete', (_req, s) => void s.removeObject(BUCKET, n)));
    expect(row).toMatchObject({ status: 'deleted', delete_outcome: 'not_found' });
    expect(patients).toHaveLength(1);
  });
});
