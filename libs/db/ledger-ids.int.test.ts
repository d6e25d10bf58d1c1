import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertLedgerObjects } from './repositories/patient-import.js';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const object = (name: string, generation = '1') => ({ bucket: 'b', objectName: `registrations/${name}`, generation, sourceUri: `gs://b/registrations/${name}` });

describe('recording the objects a poll lists', () => {
  // A drill with several pollers: every poll listed the failed files kept in the bucket again,
  // and each took an id from the sequence though its row existed (1,900 rows, ids up to 6,366):
  // the import numbers staff see had gaps.
  it('takes no import number for objects recorded already, so the numbers stay without gaps', async () => {
    const first = await insertLedgerObjects(db.db, [object('A_B_20250705_aaaaaaaa.json'), object('C_D_20250705_bbbbbbbb.json')]);
    expect(first).toHaveLength(2);
    for (let poll = 0; poll < 5; poll++) {
      expect(await insertLedgerObjects(db.db, [object('A_B_20250705_aaaaaaaa.json'), object('C_D_20250705_bbbbbbbb.json')])).toEqual([]);
    }
    // A new one next to the recorded ones, and a new generation of a recorded name: the next numbers.
    const next = await insertLedgerObjects(db.db, [object('A_B_20250705_aaaaaaaa.json'), object('E_F_20250705_cccccccc.json'), object('C_D_20250705_bbbbbbbb.json', '2')]);
    expect(next).toEqual([first[1]! + 1, first[1]! + 2]);
    expect((await db.sql`select count(*)::int as n from fleet.patient_import_ledger`)[0]!.n).toBe(4);
  });

  it('records a new object once when two polls record it at the same time', async () => {
    const both = await Promise.all([insertLedgerObjects(db.db, [object('G_H_20250705_dddddddd.json')]), insertLedgerObjects(db.db, [object('G_H_20250705_dddddddd.json')])]);
    expect(both.flat()).toHaveLength(1);
    expect((await db.sql`select count(*)::int as n from fleet.patient_import_ledger where object_name like '%dddddddd%'`)[0]!.n).toBe(1);
  });
});
