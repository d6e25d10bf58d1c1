import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/db.js';
import { sameEmailSql } from './repositories/patient-import.js';

/**
 * The patient import's duplicate check by email reads the patients through the two indexes on
 * `patienten` (migration drizzle/platform/0001), not all of them: the full comparison (trim,
 * NFC, lower case, a ~600-letter `translate` for capitals beyond ASCII under any collation) cost
 * ~20 µs per patient and ran on every patient at every import (the patient-import benchmark fell
 * from ~200 to ~60 files/s at 1,000 patients; ~35 ms per import at 50,000 even without the
 * `translate`). Fails when the condition and the indexes drift apart (a changed expression on
 * either side leaves the index unused).
 */

const PATIENTS = 20_000;
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  // Every 100th address holds letters beyond ASCII; one is stored in capitals, one with a no-break space.
  await db.sql.unsafe(`
    insert into patient_service.patienten (anrede, geschlecht, vorname, nachname, email, zahlungsreferenz)
    select 'Frau', 'weiblich', 'Test', 'Person', case when g % 100 = 0 then 'jörg.' || g || '@example.org' else 'person.' || g || '@example.org' end, 'REF' || g
      from generate_series(1, ${PATIENTS}) g`);
  await db.sql`update patient_service.patienten set email = 'JÖRG.500@EXAMPLE.ORG' where zahlungsreferenz = 'REF500'`;
  await db.sql`update patient_service.patienten set email = ${'\u00a0person.77@example.org'} where zahlungsreferenz = 'REF77'`;
  await db.sql`update patient_service.patienten set email = ${'PERSON.78@Example.Org\t'} where zahlungsreferenz = 'REF78'`;
  await db.sql`analyze patient_service.patienten`;
}, 60_000);

afterAll(async () => {
  await db?.drop();
});

const lookup = `select zahlungsreferenz from patient_service.patienten p where $1::text is not null and ${sameEmailSql('p.email', '$1::text')} order by id`;

describe('the duplicate check by email', () => {
  it('finds the same address in any case, with whitespace around it, with letters beyond ASCII', async () => {
    const find = async (email: string) => (await db.sql.unsafe<Array<{ zahlungsreferenz: string }>>(lookup, [email])).map((r) => r.zahlungsreferenz);
    expect(await find('person.42@example.org')).toEqual(['REF42']);
    expect(await find('person.78@example.org')).toEqual(['REF78']);
    expect(await find('person.77@example.org')).toEqual(['REF77']);
    expect(await find('jörg.500@example.org')).toEqual(['REF500']);
    expect(await find('jörg.600@example.org')).toEqual(['REF600']);
    expect(await find('nobody@example.org')).toEqual([]);
  });

  it('reads the patients through the indexes, not all of them', async () => {
    const [row] = await db.sql.unsafe<Array<{ 'QUERY PLAN': unknown }>>(`explain (format json) ${lookup}`, ['person.42@example.org']);
    const plan = JSON.stringify(row!['QUERY PLAN']);
    expect(plan).not.toContain('Seq Scan');
    expect(plan).toContain('patienten_email_ascii_key_idx');
    expect(plan).toContain('patienten_email_full_key_idx');
  });
});
