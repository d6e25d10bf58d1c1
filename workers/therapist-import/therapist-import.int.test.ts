import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../libs/config/index.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';
import type { TestDatabase } from '../../libs/testing/db.js';
import { IMPORT_LOCK_PREFIX } from '../../libs/db/repositories/therapist-import-session.js';
import { startTherapistImportHarness } from './int-harness.js';
import { ADULT_TP, ADULT_VT, CHILD_VT, scraperFile, therapistLine, type TherapistLine } from './fixtures.js';
import { processTherapistFile } from './process-therapist-file.js';
import { closeTherapistRun } from './close-run.js';
import { importTherapistFileNow, TherapistFileError } from './import-file-now.js';
import { therapistImportRepo } from './index.js';
import type { FileReport } from './process-therapist-file.js';
import { therapistImportDeps } from './wiring.js';

let db: TestDatabase;
let ctx: FleetContext;
let dir: string;
let close: () => Promise<void>;
let fileNo = 0;

beforeAll(async () => {
  ({ db, ctx, dir, close } = await startTherapistImportHarness('therapist-import'));
});

afterAll(async () => {
  await close?.();
});

/** Writes a scraper file (a postcode name of its own) and imports it through the CLI pipeline. */
async function imp(lines: TherapistLine[], meta: Parameters<typeof scraperFile>[1] = {}, name?: string): Promise<FileReport> {
  const file = path.join(dir, name ?? `${String(10000 + ++fileNo)}.json`);
  await writeFile(file, scraperFile(lines, { postcode_area: 'XXXXX', ...meta }));
  return importTherapistFileNow(ctx, file);
}

interface Row {
  id: number;
  anrede: string;
  geschlecht: string;
  titel: string | null;
  vorname: string;
  nachname: string;
  strasse: string | null;
  plz: string;
  ort: string | null;
  telefon: string | null;
  fax: string | null;
  email: string | null;
  telefonische_erreichbarkeit: Record<string, string[]> | null;
  fremdsprachen: string[] | null;
  psychotherapieverfahren: string | null;
  status: string;
  sperrgrund: string | null;
  kassensitz: boolean;
  potenziell_verfuegbar: boolean;
  potenziell_verfuegbar_notizen: string | null;
  alter_min: number | null;
  arbeitszeiten: unknown;
  updated_at: Date;
}

async function byPlz(plz: string): Promise<Row[]> {
  return db.sql<Row[]>`select * from therapist_service.therapeuten where plz = ${plz} order by id`;
}

async function seed(v: Partial<Row> & { vorname: string; nachname: string; plz: string }): Promise<number> {
  const row = {
    anrede: 'Frau',
    geschlecht: 'weiblich',
    titel: null,
    strasse: 'Hauptstraße 15',
    ort: 'Aachen',
    telefon: '0241 999',
    email: null,
    ...v,
  };
  const values = Object.fromEntries(
    Object.entries(row).map(([k, x]) => [k, x !== null && typeof x === 'object' && !(x instanceof Date) ? JSON.stringify(x) : x]),
  );
  const [r] = await db.sql<Array<{ id: number }>>`insert into therapist_service.therapeuten ${db.sql(values as Record<string, never>)} returning id`;
  return r!.id;
}

const sum = (r: FileReport) => r.counts.created + r.counts.updated + r.counts.unchanged + r.counts.deactivated + r.counts.skipped + r.counts.failed;

describe('therapist import: mapping', () => {
  it('creates a new therapist with the mapped fields, defaults, external id and outbox events', async () => {
    const r = await imp([
      therapistLine({ id: 'm1', plz: '20001', title: 'Dr.', street: 'Pontstraße', house: '7a', languages: ['Englisch', 'Türkisch'], hours: { monday: ['10:00-12:00'], friday: ['08:00-09:00'] } }),
    ]);
    expect(r.status).toBe('imported');
    expect(r.counts).toMatchObject({ total: 1, created: 1, failed: 0, statusMismatches: 0 });
    const [t] = await byPlz('20001');
    expect(t).toMatchObject({
      anrede: 'Herr',
      geschlecht: 'männlich',
      titel: 'Dr.',
      vorname: 'Thomas',
      nachname: 'Zeevaert',
      strasse: 'Pontstraße 7a',
      ort: 'Aachen',
      telefon: '0241 12345',
      email: 'praxis@example.org',
      fremdsprachen: ['Englisch', 'Türkisch'],
      telefonische_erreichbarkeit: { monday: ['10:00-12:00'], friday: ['08:00-09:00'] },
      psychotherapieverfahren: 'tiefenpsychologisch_fundierte_Psychotherapie',
      status: 'aktiv',
      kassensitz: true,
      potenziell_verfuegbar: false,
    });
    const [map] = await db.sql`select therapist_id from fleet.therapist_external_ids where scope = ${path.basename(String(r.path), '.json')} and external_id = 'm1'`;
    expect(map?.therapist_id).toBe(t!.id);
    const events = await db.sql`select event_type, key, payload from fleet.outbox where key in (${String(t!.id)}, ${String(r.fileId)}) order by id`;
    expect(events.map((e) => e.event_type)).toEqual(expect.arrayContaining(['therapist.created', 'therapist_import.completed']));
    const created = events.find((e) => e.event_type === 'therapist.created')!;
    expect(JSON.stringify(created.payload)).not.toContain('Zeevaert');
  });

  it('salutation missing or empty -> Frau / weiblich; Frau -> weiblich', async () => {
    const missing = therapistLine({ id: 's1', first: 'Kim', plz: '20002' });
    delete (missing.basic_info as Record<string, unknown>).salutation;
    const r = await imp([missing, therapistLine({ id: 's2', first: 'Alex', plz: '20002', salutation: '' }), therapistLine({ id: 's3', first: 'Eva', plz: '20002', salutation: 'Frau' })]);
    expect(r.counts.created).toBe(3);
    const rows = await byPlz('20002');
    expect(rows.map((x) => [x.vorname, x.anrede, x.geschlecht])).toEqual([
      ['Kim', 'Frau', 'weiblich'],
      ['Alex', 'Frau', 'weiblich'],
      ['Eva', 'Frau', 'weiblich'],
    ]);
  });

  it('maps therapy methods: VT only, TP only, both, neither; only adult methods are imported', async () => {
    const r = await imp([
      therapistLine({ id: 'v1', first: 'Vera', plz: '20003', methods: [ADULT_VT] }),
      therapistLine({ id: 'v2', first: 'Tara', plz: '20003', methods: ['tiefenpsychologisch fundierte Psychotherapie für Erwachsene in Gruppentherapie'] }),
      therapistLine({ id: 'v3', first: 'Bea', plz: '20003', methods: [ADULT_VT, ADULT_TP] }),
      therapistLine({ id: 'v4', first: 'Nina', plz: '20003', methods: ['Systemische Therapie für Erwachsene'] }),
      therapistLine({ id: 'v5', first: 'Kai', plz: '20003', methods: [CHILD_VT] }),
      therapistLine({ id: 'v6', first: 'Ole', plz: '20003', methods: [] }),
    ]);
    expect(r.counts).toMatchObject({ total: 6, created: 4, skipped: 2 });
    const rows = await byPlz('20003');
    expect(Object.fromEntries(rows.map((x) => [x.vorname, x.psychotherapieverfahren]))).toEqual({
      Vera: 'Verhaltenstherapie',
      Tara: 'tiefenpsychologisch_fundierte_Psychotherapie',
      Bea: 'egal',
      Nina: 'egal',
    });
  });
});

describe('therapist import: matching', () => {
  it('1. external id: the same scraper id matches even after a name change and a move', async () => {
    await imp([therapistLine({ id: 'ext-1', first: 'Jana', last: 'Alt', plz: '20010' })], {}, '20010.json');
    const [before] = await byPlz('20010');
    const r = await imp([therapistLine({ id: 'ext-1', first: 'Janina', last: 'Neu', plz: '20011', status: 'modified', street: 'Ring', house: '1' })], {}, '20010.json');
    expect(r.counts).toMatchObject({ updated: 1, created: 0 });
    expect(await byPlz('20010')).toHaveLength(0);
    const [after] = await byPlz('20011');
    expect(after).toMatchObject({ id: before!.id, vorname: 'Janina', nachname: 'Neu', strasse: 'Ring 1' });
  });

  it('2. primary: same vorname + nachname + plz matches, a new title is written', async () => {
    const id = await seed({ vorname: 'Paul', nachname: 'Prim', plz: '20020', anrede: 'Herr', geschlecht: 'männlich' });
    const r = await imp([therapistLine({ id: null, first: 'Paul', last: 'Prim', plz: '20020', title: 'Dr.', status: 'modified' })]);
    expect(r.counts).toMatchObject({ updated: 1, created: 0 });
    const rows = await byPlz('20020');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ id, titel: 'Dr.' });
    const [ev] = await db.sql`select payload from fleet.outbox where event_type = 'therapist.updated' and key = ${String(id)}`;
    expect((ev!.payload as { changedFields: string[] }).changedFields).toContain('titel');
  });

  it('3. secondary: a name change matches on vorname, plz, ort, strasse, titel and the email', async () => {
    const id = await seed({ vorname: 'Sara', nachname: 'Ledig', plz: '20030', titel: 'Dr.', email: 'sara@praxis.de' });
    const r = await imp([therapistLine({ id: null, salutation: 'Frau', first: 'Sara', last: 'Verheiratet', plz: '20030', title: 'Dr.', email: 'sara@praxis.de', status: 'modified' })]);
    expect(r.counts).toMatchObject({ updated: 1, created: 0 });
    const rows = await byPlz('20030');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ id, nachname: 'Verheiratet' });
    // A file without an email matches on the rest (the email is compared only when the file has one), and keeps the platform's.
    const other = await seed({ vorname: 'Rita', nachname: 'Ledig', plz: '20031', titel: 'Dr.', email: 'rita@praxis.de' });
    const noEmail = await imp([therapistLine({ id: null, salutation: 'Frau', first: 'Rita', last: 'Verheiratet', plz: '20031', title: 'Dr.', email: null, status: 'modified' })]);
    expect(noEmail.counts).toMatchObject({ updated: 1, created: 0 });
    expect(await byPlz('20031')).toEqual([expect.objectContaining({ id: other, nachname: 'Verheiratet', email: 'rita@praxis.de' })]);
  });

  it('must NOT match: same name in a different postcode is another therapist', async () => {
    await seed({ vorname: 'Otto', nachname: 'Ort', plz: '20040' });
    const r = await imp([therapistLine({ id: null, first: 'Otto', last: 'Ort', plz: '20041' })]);
    expect(r.counts).toMatchObject({ created: 1, updated: 0 });
    expect(await byPlz('20040')).toHaveLength(1);
    expect(await byPlz('20041')).toHaveLength(1);
  });

  it('must NOT match: colleagues sharing a practice email but with different titles stay two', async () => {
    await seed({ vorname: 'Anna', nachname: 'Schmidt', plz: '20050', titel: 'Dr.', email: 'team@praxis.de' });
    const r = await imp([therapistLine({ id: null, salutation: 'Frau', first: 'Anna', last: 'Schulz', plz: '20050', title: null, email: 'team@praxis.de' })]);
    expect(r.counts).toMatchObject({ created: 1, updated: 0 });
    const rows = await byPlz('20050');
    expect(rows.map((x) => [x.nachname, x.titel])).toEqual([
      ['Schmidt', 'Dr.'],
      ['Schulz', null],
    ]);
  });

  it('must NOT match: the secondary rule with a different email creates a new therapist', async () => {
    await seed({ vorname: 'Lena', nachname: 'Erst', plz: '20060', email: 'lena@erst.de' });
    const r = await imp([therapistLine({ id: null, salutation: 'Frau', first: 'Lena', last: 'Zweit', plz: '20060', email: 'lena@zweit.de' })]);
    expect(r.counts).toMatchObject({ created: 1, updated: 0 });
    expect(await byPlz('20060')).toHaveLength(2);
  });

  it('colleagues of one practice listed in one file stay two, whatever the order of the lines', async () => {
    const practice = { plz: '20110', title: 'Dr.', salutation: 'Frau', email: 'praxis@gemeinsam.de', street: 'Ring', house: '3' } as const;
    const schmidt = (status = 'new') => therapistLine({ ...practice, id: 's1', first: 'Anna', last: 'Schmidt', status });
    const meyer = (status = 'new') => therapistLine({ ...practice, id: 'm1', first: 'Anna', last: 'Meyer', status });
    const first = await imp([schmidt(), meyer()], {}, '20110.json');
    expect(first.counts).toMatchObject({ created: 2, failed: 0 });
    // Meyer first now: the secondary rule would take Schmidt's row, but Schmidt is listed (by her id).
    const again = await imp([meyer('unchanged'), schmidt('unchanged')], { scrape_id: 'again' }, '20110.json');
    expect(again.counts).toMatchObject({ unchanged: 2, updated: 0, failed: 0 });
    expect((await byPlz('20110')).map((r) => r.nachname)).toEqual(['Schmidt', 'Meyer']);

    // The same without scraper ids, the colleague first: the primary rule goes before the secondary one.
    await seed({ vorname: 'Berta', nachname: 'Alt', plz: '20111', titel: 'Dr.', strasse: 'Ring 3', email: 'team@ring.de' });
    const noIds = { plz: '20111', title: 'Dr.', salutation: 'Frau', email: 'team@ring.de', street: 'Ring', house: '3', status: 'unchanged' } as const;
    const r = await imp([therapistLine({ ...noIds, id: null, first: 'Berta', last: 'Neu' }), therapistLine({ ...noIds, id: null, first: 'Berta', last: 'Alt' })]);
    expect(r.counts).toMatchObject({ created: 1, failed: 0 });
    expect((await byPlz('20111')).map((x) => x.nachname)).toEqual(['Alt', 'Neu']);
  });

  it('must NOT match: a colleague still listed (her line invalid, or for children only) is not renamed to the other colleague by the secondary rule', async () => {
    const practice = { salutation: 'Frau', first: 'Anna', title: 'Dr.', street: 'Ring', house: '3' } as const;
    const cases: Array<[string, Parameters<typeof therapistLine>[0]]> = [
      ['20115', { email: 'kein email' }],
      ['20116', { methods: [CHILD_VT] }],
    ];
    for (const [plz, schmidtNow] of cases) {
      const schmidt = (over: Parameters<typeof therapistLine>[0]) => therapistLine({ ...practice, id: 's1', last: 'Schmidt', plz, email: 'team@praxis.de', ...over });
      await imp([schmidt({})], {}, `${plz}.json`);
      // Schmidt is listed under her id (her line now invalid, or for children only); Meyer joins the practice.
      const r = await imp([schmidt({ status: 'unchanged', ...schmidtNow }), therapistLine({ ...practice, id: 'm1', last: 'Meyer', plz, email: 'team@praxis.de' })], { scrape_id: 'joined' }, `${plz}.json`);
      expect(r.counts, plz).toMatchObject({ created: 1, updated: 0 });
      expect((await byPlz(plz)).map((x) => x.nachname), plz).toEqual(['Schmidt', 'Meyer']);
    }
  });

  it('must NOT match: a colleague whose line failed validation and has no scraper id is kept from the secondary rule by her name', async () => {
    const roth = (over: Parameters<typeof therapistLine>[0]) => therapistLine({ id: null, salutation: 'Frau', title: 'Dr.', first: 'Anna', last: 'Roth', plz: '20117', street: 'Marktplatz', house: '3', email: 'praxis@x.de', methods: [ADULT_VT], ...over });
    await imp([roth({})], {}, '20117.json');
    const r = await imp([roth({ status: 'unchanged', phone: '0'.repeat(51) }), roth({ last: 'Weiss', status: 'new' })], { scrape_id: 'joined' }, '20117.json');
    expect(r.counts).toMatchObject({ failed: 1, created: 1, updated: 0 });
    expect((await byPlz('20117')).map((x) => x.nachname)).toEqual(['Roth', 'Weiss']);
  });

  it('two people of one name in one postcode area with their own scraper ids stay two', async () => {
    const lines = (status: string) => [
      therapistLine({ id: 'h1', first: 'Thomas', last: 'Zeevaert', title: 'Dr.', plz: '20120', email: 'vater@praxis.de', status }),
      therapistLine({ id: 'h2', first: 'Thomas', last: 'Zeevaert', title: null, plz: '20120', email: 'sohn@praxis.de', status }),
    ];
    expect((await imp(lines('new'), {}, '20120.json')).counts).toMatchObject({ created: 2, failed: 0 });
    expect((await imp(lines('unchanged'), { scrape_id: 'again' }, '20120.json')).counts).toMatchObject({ unchanged: 2, failed: 0 });
    expect((await byPlz('20120')).map((x) => [x.titel, x.email])).toEqual([
      ['Dr.', 'vater@praxis.de'],
      [null, 'sohn@praxis.de'],
    ]);
    // Without an id, a second line of the same name is a duplicate line (nobody can tell them apart).
    const dup = await imp([therapistLine({ id: null, first: 'Tom', last: 'Twin', plz: '20121' }), therapistLine({ id: null, first: 'Tom', last: 'Twin', plz: '20121', phone: '2' })]);
    expect(dup.counts).toMatchObject({ created: 1, failed: 1 });
    expect(dup.failures[0]!.reason).toBe('same therapist as therapists[0] of this file (duplicate line)');
  });

  it('two of one name in one postcode, a line without a known id: the one whose address agrees is updated; when none agrees better, the line fails and nothing is written', async () => {
    const x3 = (over: Parameters<typeof therapistLine>[0]) => therapistLine({ first: 'X3', last: 'Zeevaert', plz: '20161', street: 'Marktplatz', house: '3', ...over });
    await imp([x3({ id: 'd3' }), x3({ id: 'd4', street: 'Other' })], {}, '20161.json');
    const [a, b] = await byPlz('20161');
    // Another scope: the ids d3 and d4 are not known there.
    const r = await imp([x3({ id: null, street: 'Other', phone: '777', status: 'modified' })], {}, '20162.json');
    expect(r.counts).toMatchObject({ updated: 1, failed: 0, created: 0 });
    expect((await byPlz('20161')).map((x) => [x.id, x.strasse, x.telefon])).toEqual([
      [a!.id, 'Marktplatz 3', '0241 12345'],
      [b!.id, 'Other 3', '777'],
    ]);
    // Two rows that agree with the line equally well: staff must say which one it is.
    await db.sql`update therapist_service.therapeuten set strasse = 'Marktplatz 3', telefon = '0241 12345' where id = ${b!.id}`;
    const amb = await imp([x3({ id: null, street: 'Neu', phone: '888', status: 'modified' })], {}, '20163.json');
    expect(amb.counts).toMatchObject({ failed: 1, updated: 0, created: 0 });
    expect(amb.failures[0]!.reason).toBe(`name and postcode match several therapists (ids ${a!.id}, ${b!.id}) and nothing else tells them apart: not imported, staff must resolve which one this line is`);
    expect((await byPlz('20161')).map((x) => x.strasse)).toEqual(['Marktplatz 3', 'Marktplatz 3']);
  });

  it('a scraper id given to two different people in one file imports neither, whatever the order; the same person twice is imported once', async () => {
    const carl = (status: string) => therapistLine({ id: 'dup', salutation: 'Herr', first: 'Carl', last: 'Corn', plz: '20130', email: 'c@x.de', status });
    const dana = (status: string) => therapistLine({ id: 'dup', salutation: 'Frau', first: 'Dana', last: 'Dorn', plz: '20130', email: 'd@x.de', status });
    expect((await imp([carl('new')], {}, '20130.json')).counts).toMatchObject({ created: 1 });
    for (const lines of [
      [carl('unchanged'), dana('new')],
      [dana('new'), carl('unchanged')],
    ]) {
      const r = await imp(lines, { scrape_id: `${lines[0]!.basic_info!.first_name}` }, '20130.json');
      expect(r.counts).toMatchObject({ failed: 2, created: 0, updated: 0, unchanged: 0 });
      expect(r.failures.map((f) => f.reason)).toEqual([
        'id: "dup" is given to different therapists in this file (therapists[0], therapists[1]): none of them is imported',
        'id: "dup" is given to different therapists in this file (therapists[0], therapists[1]): none of them is imported',
      ]);
    }
    expect((await byPlz('20130')).map((x) => [x.vorname, x.nachname, x.email])).toEqual([['Carl', 'Corn', 'c@x.de']]);

    const twice = await imp([carl('unchanged'), therapistLine({ id: 'dup', salutation: 'Herr', first: 'Carl', last: 'Corn', plz: '20130', phone: '2', status: 'unchanged' })], { scrape_id: 'twice' }, '20130.json');
    expect(twice.counts).toMatchObject({ unchanged: 1, failed: 1 });
    expect(twice.failures[0]).toMatchObject({ index: 1, reason: 'same therapist as therapists[0] of this file (duplicate line with the same id)' });
  });
});

describe('therapist import: updates', () => {
  it('never overwrites the protected fields (every one DOMAIN.md lists), neither by an update of every import field nor by a deactivation', async () => {
    const staff = {
      sperrgrund: 'beschwert sich',
      sperrdatum: '2025-06-01',
      kassensitz: false,
      potenziell_verfuegbar: true,
      potenziell_verfuegbar_notizen: 'ab Herbst',
      ueber_curavani_informiert: true,
      naechster_kontakt_moeglich: '2025-09-01',
      bevorzugte_diagnosen: ['F32'],
      alter_min: 18,
      alter_max: 65,
      geschlechtspraeferenz: 'weiblich',
      arbeitszeiten: { mo: '9-12' },
      bevorzugt_gruppentherapie: true,
      letzter_kontakt_email: '2025-05-02',
      letzter_kontakt_telefon: '2025-05-03',
    };
    const protectedOf = async (id: number) =>
      (
        await db.sql`select status, sperrgrund, sperrdatum::text, kassensitz, potenziell_verfuegbar, potenziell_verfuegbar_notizen, ueber_curavani_informiert,
          naechster_kontakt_moeglich::text, bevorzugte_diagnosen, alter_min, alter_max, geschlechtspraeferenz, arbeitszeiten, bevorzugt_gruppentherapie,
          letzter_kontakt_email::text, letzter_kontakt_telefon::text from therapist_service.therapeuten where id = ${id}`
      )[0];
    const blocked = await seed({ vorname: 'Gesa', nachname: 'Gesperrt', plz: '20070', status: 'gesperrt', ...staff } as never);
    const active = await seed({ vorname: 'Anke', nachname: 'Aktiv', plz: '20070', status: 'aktiv', ...staff } as never);
    const r = await imp([
      // Every import field differs from the seeded row.
      therapistLine({ id: 'g1', salutation: 'Herr', title: 'Dr.', first: 'Gesa', last: 'Gesperrt', plz: '20070', street: 'Ring', house: '9', city: 'Würselen', phone: '0241 4711', email: 'g@praxis.de', fax: '0241 4712', languages: ['Polnisch'], hours: { friday: ['08:00-09:00'] }, methods: [ADULT_VT], status: 'modified' }),
      therapistLine({ id: 'g2', first: 'Anke', last: 'Aktiv', plz: '20070', status: 'deleted' }),
    ]);
    expect(r.counts).toMatchObject({ updated: 1, deactivated: 1 });
    const [t] = await db.sql`select anrede, titel, strasse, ort, telefon, email, fax, fremdsprachen, psychotherapieverfahren from therapist_service.therapeuten where id = ${blocked}`;
    expect(t).toEqual({ anrede: 'Herr', titel: 'Dr.', strasse: 'Ring 9', ort: 'Würselen', telefon: '0241 4711', email: 'g@praxis.de', fax: '0241 4712', fremdsprachen: ['Polnisch'], psychotherapieverfahren: 'Verhaltenstherapie' });
    expect(await protectedOf(blocked)).toEqual({ status: 'gesperrt', ...staff });
    expect(await protectedOf(active)).toEqual({ status: 'inaktiv', ...staff });
  });

  it('an empty email, phone, languages or hours never replaces a value; an unchanged line writes nothing', async () => {
    const id = await seed({
      vorname: 'Emil',
      nachname: 'Leer',
      plz: '20080',
      anrede: 'Herr',
      geschlecht: 'männlich',
      email: 'emil@leer.de',
      telefon: '0241 1',
      strasse: 'Hauptstraße 15',
      psychotherapieverfahren: 'tiefenpsychologisch_fundierte_Psychotherapie',
      fremdsprachen: ['Englisch'],
      telefonische_erreichbarkeit: { monday: ['10:00-12:00'] },
    } as never);
    const [before] = await byPlz('20080');
    const r = await imp([
      therapistLine({ id: null, first: 'Emil', last: 'Leer', plz: '20080', email: '', phone: null, languages: [], hours: {}, street: null, house: null, status: 'unchanged' }),
    ]);
    expect(r.counts).toMatchObject({ unchanged: 1, updated: 0 });
    const [t] = await byPlz('20080');
    expect(t).toMatchObject({ id, email: 'emil@leer.de', telefon: '0241 1', fremdsprachen: ['Englisch'], strasse: 'Hauptstraße 15', telefonische_erreichbarkeit: { monday: ['10:00-12:00'] } });
    expect(String(t!.updated_at)).toBe(String(before!.updated_at));
  });

  it('a value staff corrected stays while the scraper keeps listing the old one; a value the scraper changes is written', async () => {
    const line = (over: Parameters<typeof therapistLine>[0]) => therapistLine({ id: 'korr-1', first: 'Kora', last: 'Korrekt', plz: '20700', phone: '0241 111', email: 'kora@praxis.de', ...over });
    await imp([line({})], {}, '20700.json');
    const [t] = await byPlz('20700');
    const held = async () =>
      (await db.sql`select s.row_version = t.xmin::text as held, s.row_version is null as kept, s.fields from fleet.therapist_scraped s join therapist_service.therapeuten t on t.id = s.therapist_id where s.therapist_id = ${t!.id}`)[0]!;
    const rec = await held();
    expect(rec.fields).toMatchObject({ vorname: 'Kora', telefon: '0241 111', email: 'kora@praxis.de' });
    expect(Object.keys(rec.fields as object)).not.toContain('fax');
    // The row holds the record at the version the import left: a re-import does not read the fields.
    expect(rec.held).toBe(true);
    // Staff correct the phone and the email on the platform.
    await db.sql`update therapist_service.therapeuten set telefon = '0241 999', email = 'kora.neu@praxis.de' where id = ${t!.id}`;
    const again = await imp([line({ status: 'unchanged' })], { scrape_date: '2025-07-09T03:00:00' }, '20700.json');
    expect(again.counts).toMatchObject({ unchanged: 1, updated: 0 });
    expect((await byPlz('20700'))[0]).toMatchObject({ id: t!.id, telefon: '0241 999', email: 'kora.neu@praxis.de' });
    expect(await held()).toMatchObject({ held: false, kept: false });
    // The scraper's phone changes: it is written (and only it); the corrected email stays.
    const moved = await imp([line({ status: 'modified', phone: '0241 222' })], { scrape_date: '2025-07-16T03:00:00' }, '20700.json');
    expect(moved.counts).toMatchObject({ updated: 1 });
    expect(moved.replacedCorrections).toEqual([{ index: 0, externalId: 'korr-1', therapistId: t!.id, fields: ['telefon'] }]);
    expect(again.replacedCorrections).toEqual([]);
    expect((await byPlz('20700'))[0]).toMatchObject({ id: t!.id, telefon: '0241 222', email: 'kora.neu@praxis.de' });
    // The row keeps the staff's email: the record's fields are read from now on.
    expect(await held()).toMatchObject({ kept: true, fields: expect.objectContaining({ telefon: '0241 222', email: 'kora@praxis.de' }) });
    const still = await imp([line({ status: 'unchanged', phone: '0241 222' })], { scrape_date: '2025-07-23T03:00:00' }, '20700.json');
    expect(still.counts).toMatchObject({ unchanged: 1, updated: 0 });
    expect((await byPlz('20700'))[0]).toMatchObject({ telefon: '0241 222', email: 'kora.neu@praxis.de' });
    const [ev] = await db.sql`select payload from fleet.outbox where event_type = 'therapist.updated' and key = ${String(t!.id)} order by id desc limit 1`;
    expect((ev!.payload as { changedFields: string[] }).changedFields).toEqual(['telefon']);
  });

  it('a week in which the scraper leaves a field empty does not lose what it said before: a staff correction stays when the old value comes back', async () => {
    const line = (status: string, over: Parameters<typeof therapistLine>[0]) =>
      therapistLine({ id: null, first: 'Rita', last: 'Lux', plz: '20172', phone: '0241 A', email: 'rita@lux.de', languages: ['Englisch'], hours: { monday: ['10:00-12:00'] }, status, ...over });
    await imp([line('new', {})]);
    const [t] = await byPlz('20172');
    await db.sql`update therapist_service.therapeuten set telefon = '0241 STAFF', email = 'staff@lux.de', fremdsprachen = '["Polnisch"]'::jsonb, telefonische_erreichbarkeit = '{"friday": ["08:00-09:00"]}'::jsonb, strasse = 'Staffweg 1' where id = ${t!.id}`;
    const staff = { telefon: '0241 STAFF', email: 'staff@lux.de', fremdsprachen: ['Polnisch'], telefonische_erreichbarkeit: { friday: ['08:00-09:00'] }, strasse: 'Staffweg 1' };
    expect((await imp([line('unchanged', {})])).counts).toMatchObject({ unchanged: 1 });
    const empty = await imp([line('modified', { phone: null, email: null, languages: [], hours: {}, street: null, house: null })]);
    expect(empty.counts).toMatchObject({ unchanged: 1, updated: 0 });
    expect((await byPlz('20172'))[0]).toMatchObject(staff);
    // The old values again: the scraper did not change them, so the corrections stay.
    const back = await imp([line('modified', {})]);
    expect(back.counts).toMatchObject({ unchanged: 1, updated: 0 });
    expect(back.replacedCorrections).toEqual([]);
    expect((await byPlz('20172'))[0]).toMatchObject(staff);
    // A new value after the gap is written, and named as replacing the staff's correction.
    const news = await imp([line('modified', { phone: null, email: null, languages: [], hours: {}, street: null, house: null })]);
    expect(news.counts).toMatchObject({ unchanged: 1 });
    const changed = await imp([line('modified', { phone: '0241 B' })]);
    expect(changed.counts).toMatchObject({ updated: 1 });
    expect(changed.replacedCorrections).toEqual([{ index: 0, externalId: null, therapistId: t!.id, fields: ['telefon'] }]);
    expect((await byPlz('20172'))[0]).toMatchObject({ ...staff, telefon: '0241 B' });
  });

  it('a name staff corrected on a therapist without a scraper id: the old name in the file still finds it, no duplicate is created', async () => {
    const line = (status: string) => therapistLine({ id: null, first: 'Ana', last: 'Mueler', plz: '20710', status });
    await imp([line('new')]);
    const [t] = await byPlz('20710');
    await db.sql`update therapist_service.therapeuten set vorname = 'Anna', nachname = 'Müller' where id = ${t!.id}`;
    const r = await imp([line('unchanged')]);
    expect(r.counts).toMatchObject({ unchanged: 1, created: 0 });
    const rows = await byPlz('20710');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ id: t!.id, vorname: 'Anna', nachname: 'Müller' });
  });

  it('a postcode staff corrected on a therapist without a scraper id: the old postcode in the file still finds it, no duplicate is created', async () => {
    const line = (status: string) => therapistLine({ id: null, first: 'Paul', last: 'Plz', plz: '20173', status });
    await imp([line('new')], {}, '20173.json');
    const [t] = await byPlz('20173');
    await db.sql`update therapist_service.therapeuten set plz = '20174' where id = ${t!.id}`;
    const r = await imp([line('unchanged')], { scrape_id: 'again' }, '20173.json');
    expect(r.counts).toMatchObject({ unchanged: 1, created: 0 });
    expect(r.statusMismatches).toEqual([]);
    expect(await byPlz('20173')).toHaveLength(0);
    expect((await byPlz('20174')).map((x) => [x.id, x.vorname])).toEqual([[t!.id, 'Paul']]);
  });

  it('a house number without its street, or a street without its number, never shortens the address', async () => {
    await seed({ vorname: 'Hugo', nachname: 'Haus', plz: '20140', strasse: 'Hauptstraße 15' });
    await seed({ vorname: 'Mara', nachname: 'Markt', plz: '20140', strasse: 'Marktplatz 3' });
    const r = await imp([
      therapistLine({ id: null, first: 'Hugo', last: 'Haus', plz: '20140', street: null, house: '15', status: 'unchanged' }),
      therapistLine({ id: null, first: 'Mara', last: 'Markt', plz: '20140', street: 'Marktplatz', house: '', status: 'unchanged' }),
    ]);
    expect(r.failures).toEqual([]);
    expect((await byPlz('20140')).map((x) => x.strasse)).toEqual(['Hauptstraße 15', 'Marktplatz 3']);
    // A real move is still written.
    await imp([therapistLine({ id: null, first: 'Mara', last: 'Markt', plz: '20140', street: 'Domplatz', house: null, status: 'modified' })]);
    expect((await byPlz('20140')).map((x) => x.strasse)).toEqual(['Hauptstraße 15', 'Domplatz']);
  });

  it('names are stored in one Unicode form with single spaces; a line differing only in those is unchanged', async () => {
    const nfd = (s: string) => s.normalize('NFD');
    const created = await imp([therapistLine({ id: 'u1', first: nfd('Jörg\u00a0 Peter'), last: nfd(' Jäger '), city: nfd('Düren'), plz: '20150' })], {}, '20150.json');
    expect(created.counts.created).toBe(1);
    const [row] = await byPlz('20150');
    expect([row!.vorname, row!.nachname, row!.ort]).toEqual(['Jörg Peter', 'Jäger', 'Düren']);
    expect(row!.vorname).toBe(row!.vorname.normalize('NFC'));
    const again = await imp([therapistLine({ id: null, first: 'Jörg Peter', last: 'Jäger', city: 'Düren', plz: '20150', status: 'unchanged' })]);
    expect(again.counts).toMatchObject({ unchanged: 1, updated: 0, created: 0 });
  });

  it('an existing therapist keeps its salutation when the file has none', async () => {
    await seed({ vorname: 'Hans', nachname: 'Herr', plz: '20090', anrede: 'Herr', geschlecht: 'männlich' });
    const r = await imp([therapistLine({ id: null, salutation: '', first: 'Hans', last: 'Herr', plz: '20090', status: 'unchanged' })]);
    expect(r.counts.failed).toBe(0);
    const [t] = await byPlz('20090');
    expect(t).toMatchObject({ anrede: 'Herr', geschlecht: 'männlich' });
  });

  it('deleted -> inaktiv (never a hard delete); a later unchanged keeps it inactive; unknown + unchanged -> created as a mismatch', async () => {
    await imp([therapistLine({ id: 'd1', first: 'Dora', plz: '20100' })], {}, '20100.json');
    const del = await imp([therapistLine({ id: 'd1', first: 'Dora', plz: '20100', status: 'deleted' })], {}, '20100.json');
    expect(del.counts).toMatchObject({ deactivated: 1, total: 1 });
    let [t] = await byPlz('20100');
    expect(t!.status).toBe('inaktiv');
    const again = await imp([therapistLine({ id: 'd1', first: 'Dora', plz: '20100', status: 'unchanged', phone: '0241 2' })], {}, '20100.json');
    expect(again.counts.created).toBe(0);
    const rows = await byPlz('20100');
    expect(rows).toHaveLength(1);
    [t] = rows;
    expect(t!.status).toBe('inaktiv');
    const [ev] = await db.sql`select count(*)::int as n from fleet.outbox where event_type = 'therapist.deactivated' and key = ${String(t!.id)}`;
    expect(ev!.n).toBe(1);

    // unchanged for a therapist we do not have: created and counted as a status mismatch
    const unknown = await imp([therapistLine({ id: 'u1', first: 'Uwe', plz: '20101', status: 'unchanged' })]);
    expect(unknown.counts).toMatchObject({ created: 1, statusMismatches: 1 });
    expect(unknown.statusMismatches[0]).toMatchObject({ stated: 'unchanged', externalId: 'u1' });

    // deleted for a therapist we never had: nothing created, and a later unchanged does not re-create it
    const gone = await imp([therapistLine({ id: 'x9', first: 'Xaver', plz: '20102', status: 'deleted' })], {}, '20102.json');
    expect(gone.counts).toMatchObject({ unchanged: 1, statusMismatches: 1, created: 0 });
    const back = await imp([therapistLine({ id: 'x9', first: 'Xaver', plz: '20102', status: 'unchanged', phone: '1' })], {}, '20102.json');
    expect(back.counts).toMatchObject({ created: 0, unchanged: 1, statusMismatches: 1 });
    expect(await byPlz('20102')).toHaveLength(0);
    // ... nor under another scraper id (the same name and postcode)
    const otherId = await imp([therapistLine({ id: 'x10', first: 'Xaver', plz: '20102', status: 'unchanged' })], { scrape_id: 'other id' }, '20102.json');
    expect(otherId.counts).toMatchObject({ created: 0, unchanged: 1, statusMismatches: 1 });
    expect(otherId.statusMismatches[0]).toMatchObject({ externalId: 'x10', found: 'deleted by the scraper earlier: not re-created' });
    expect(await byPlz('20102')).toHaveLength(0);
  });

  it('a deleted line with only its id (or unusable details) deactivates the therapist its known id names; with an unknown id it fails and says why', async () => {
    await imp([therapistLine({ id: 'm1', first: 'Mia', plz: '20106' }), therapistLine({ id: 'm2', first: 'Max', plz: '20106' }), therapistLine({ id: 'm3', first: 'Mona', plz: '20106' })], {}, '20106.json');
    const del = await imp(
      [
        { id: 'm1', status: 'deleted' },
        { ...therapistLine({ id: 'm2', first: 'Max', plz: '20106', status: 'deleted', email: 'not an address' }) },
        { id: 'zz', status: 'deleted' },
        { id: 'm3', status: 'unchanged' },
      ],
      { scrape_id: 'minimal' },
      '20106.json',
    );
    expect(del.counts).toMatchObject({ total: 4, deactivated: 2, failed: 2, created: 0 });
    expect(sum(del)).toBe(4);
    const failed = del.failures.map((f) => [f.externalId, f.reason]);
    expect(failed).toHaveLength(2);
    expect(failed[0]![0]).toBe('zz');
    expect(failed[0]![1]).toMatch(/basic_info: missing.*id "zz" is not known in this postcode area/);
    expect(failed[1]![0]).toBe('m3');
    expect(failed[1]![1]).toMatch(/^basic_info: missing/);
    expect((await byPlz('20106')).map((x) => [x.vorname, x.status])).toEqual([
      ['Mia', 'inaktiv'],
      ['Max', 'inaktiv'],
      ['Mona', 'aktiv'],
    ]);
    const events = await db.sql`select count(*)::int as n from fleet.outbox o join therapist_service.therapeuten t on o.key = t.id::text where o.event_type = 'therapist.deactivated' and t.plz = '20106'`;
    expect(events[0]!.n).toBe(2);
    // Deleted for good: a later full line does not re-create or reactivate them.
    const back = await imp([therapistLine({ id: 'm1', first: 'Mia', plz: '20106', status: 'unchanged' })], { scrape_id: 'back' }, '20106.json');
    expect(back.counts).toMatchObject({ created: 0, unchanged: 1, statusMismatches: 1 });
    expect((await byPlz('20106')).filter((x) => x.status === 'inaktiv')).toHaveLength(2);
  });

  it('a deleted line without a scraper id needs only the name and postcode: a bad email does not keep the therapist active; without a name it fails saying the deletion was not applied', async () => {
    await imp([therapistLine({ id: null, first: 'Nora', last: 'Nid', plz: '20171' }), therapistLine({ id: null, first: 'Olaf', last: 'Nid', plz: '20171' })], {}, '20171.json');
    const del = await imp(
      [therapistLine({ id: null, first: 'Nora', last: 'Nid', plz: '20171', status: 'deleted', email: 'not an address' }), therapistLine({ id: null, first: 'Olaf', last: null, plz: '20171', status: 'deleted' })],
      { scrape_id: 'deleted' },
      '20171.json',
    );
    expect(del.counts).toMatchObject({ deactivated: 1, failed: 1 });
    expect(del.failures.map((f) => f.reason)).toEqual(['basic_info.last_name: missing; status deleted: not applied (no scraper id, and no name and postcode to find the therapist by)']);
    expect((await byPlz('20171')).map((x) => [x.vorname, x.status])).toEqual([
      ['Nora', 'inaktiv'],
      ['Olaf', 'aktiv'],
    ]);
  });

  it('a file over SCRAPER_FILE_MAX_MB is not read: the CLI refuses it naming size and limit; a queued one is skipped, and imported once the limit allows', async () => {
    const withLimit = (maxFileBytes: number): FleetContext => ({ ...ctx, config: { ...ctx.config, therapistImport: { ...ctx.config.therapistImport, maxFileBytes } } });
    const file = path.join(dir, '20107.json');
    await writeFile(file, scraperFile([therapistLine({ id: 'g1', first: 'Greta', plz: '20107' }), therapistLine({ id: 'g2', first: 'Gerd', plz: '20107' })]));
    const size = (await readFile(file)).length;
    const small = withLimit(size - 1);
    const refused = await importTherapistFileNow(small, file).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TherapistFileError);
    const message = (refused as Error).message;
    expect(message.startsWith(`${file}: not read: 0.0 MB, more than SCRAPER_FILE_MAX_MB=0.`)).toBe(true);
    expect(message.endsWith(' allows (an import needs ~10 MB of memory per MB of file; on a machine with 210 MB to spare, SCRAPER_FILE_MAX_MB=1 imports it)')).toBe(true);
    expect(await byPlz('20107')).toHaveLength(0);

    // Registered by a watcher with a higher limit, taken by a worker with a lower one: skipped, content not judged.
    const runId = await therapistImportRepo.openRun(db.db, 'watcher', 'sealed');
    const contentHash = createHash('sha256').update(await readFile(file)).digest('hex');
    const { file: row } = await therapistImportRepo.registerFile(db.db, { runId, path: '20107.json', postcode: '20107', dateFolder: null, urgent: false, contentHash, sizeBytes: size });
    const skipped = await processTherapistFile({ fileId: row.id }, therapistImportDeps(small), { isFinalAttempt: true });
    expect(skipped).toMatchObject({ status: 'skipped', counts: { total: 0 } });
    expect(skipped.reason).toMatch(/^too large to import: 0\.0 MB, more than SCRAPER_FILE_MAX_MB=0\.\d+ allows/);
    expect(await byPlz('20107')).toHaveLength(0);
    // The same content is imported once the limit allows it (a skipped row does not hold its hash).
    const imported = await importTherapistFileNow(withLimit(size), file);
    expect(imported).toMatchObject({ status: 'imported', counts: { created: 2 } });
    expect(await byPlz('20107')).toHaveLength(2);
  });

  it('a run left without files closes without a staff summary', async () => {
    const runId = await therapistImportRepo.openRun(db.db, 'watcher', 'sealed');
    expect(await closeTherapistRun(ctx, runId)).toBeNull();
    expect(await therapistImportRepo.getRun(db.db, runId)).toMatchObject({ state: 'closed', fileCount: 0 });
    expect(await db.sql`select 1 from fleet.deliveries where idempotency_key = ${`therapist-import.run.${runId}`}`).toHaveLength(0);
  });

  it('a therapist the scraper deleted and lists again stays inactive, and the report says so (a status mismatch per line)', async () => {
    await imp([therapistLine({ id: 'w1', first: 'Wanda', plz: '20105' }), therapistLine({ id: 'w2', first: 'Willi', plz: '20105' })], {}, '20105.json');
    await imp([therapistLine({ id: 'w1', first: 'Wanda', plz: '20105', status: 'deleted' }), therapistLine({ id: 'w2', first: 'Willi', plz: '20105', status: 'deleted' })], { scrape_id: 'del' }, '20105.json');
    const back = await imp(
      [therapistLine({ id: 'w1', first: 'Wanda', plz: '20105', status: 'new', phone: '0241 5' }), therapistLine({ id: 'w2', first: 'Willi', plz: '20105', status: 'unchanged' })],
      { scrape_id: 'back' },
      '20105.json',
    );
    expect(back.counts).toMatchObject({ total: 2, created: 0, updated: 1, unchanged: 1, statusMismatches: 2 });
    expect(back.statusMismatches.map((m) => [m.externalId, m.stated, m.found])).toEqual([
      ['w1', 'new', 'deleted by the scraper earlier: stays inactive'],
      ['w2', 'unchanged', 'deleted by the scraper earlier: stays inactive'],
    ]);
    expect((await byPlz('20105')).map((x) => [x.status, x.telefon])).toEqual([
      ['inaktiv', '0241 5'],
      ['inaktiv', '0241 12345'],
    ]);
    // Reactivated by staff: listed again is no mismatch.
    await db.sql`update therapist_service.therapeuten set status = 'aktiv' where plz = '20105'`;
    const later = await imp([therapistLine({ id: 'w1', first: 'Wanda', plz: '20105', status: 'unchanged', phone: '0241 5' })], { scrape_id: 'later' }, '20105.json');
    expect(later.counts).toMatchObject({ unchanged: 1, statusMismatches: 0 });
  });

  it('a therapist without a scraper id that the scraper deleted and lists again: stays inactive, and the report says so too', async () => {
    await imp([therapistLine({ id: null, first: 'Nina', plz: '20109' }), therapistLine({ id: null, first: 'Nils', plz: '20109' })], {}, '20109.json');
    const del = await imp([therapistLine({ id: null, first: 'Nina', plz: '20109', status: 'deleted' }), therapistLine({ id: null, first: 'Nils', plz: '20109', status: 'unchanged' })], { scrape_id: 'del' }, '20109.json');
    expect(del.counts).toMatchObject({ total: 2, deactivated: 1, unchanged: 1, statusMismatches: 0 });
    const back = await imp([therapistLine({ id: null, first: 'Nina', plz: '20109', status: 'unchanged' }), therapistLine({ id: null, first: 'Nils', plz: '20109', status: 'unchanged' })], { scrape_id: 'back' }, '20109.json');
    expect(back.counts).toMatchObject({ total: 2, created: 0, unchanged: 2, statusMismatches: 1 });
    expect(back.statusMismatches.map((m) => [m.index, m.stated, m.found])).toEqual([[0, 'unchanged', 'deleted by the scraper earlier: stays inactive']]);
    expect((await byPlz('20109')).map((x) => [x.vorname, x.status])).toEqual([
      ['Nina', 'inaktiv'],
      ['Nils', 'aktiv'],
    ]);
    // Reactivated by staff: listed again is no mismatch.
    await db.sql`update therapist_service.therapeuten set status = 'aktiv' where plz = '20109'`;
    const later = await imp([therapistLine({ id: null, first: 'Nina', plz: '20109', status: 'unchanged', phone: '0241 7' })], { scrape_id: 'later' }, '20109.json');
    expect(later.counts).toMatchObject({ updated: 1, statusMismatches: 0 });
  });

  it('a therapist staff blocked (gesperrt) stays blocked when the scraper deletes it: no status written, no deactivation counted', async () => {
    await imp([therapistLine({ id: 'b1', first: 'Berta', plz: '20104' })], {}, '20104.json');
    await db.sql`update therapist_service.therapeuten set status = 'gesperrt', sperrgrund = 'Beschwerde', sperrdatum = '2025-06-01' where plz = '20104'`;
    const del = await imp([therapistLine({ id: 'b1', first: 'Berta', plz: '20104', status: 'deleted' })], {}, '20104.json');
    expect(del.counts).toMatchObject({ total: 1, deactivated: 0, unchanged: 1, statusMismatches: 1 });
    expect(del.statusMismatches.map((m) => [m.externalId, m.stated, m.found])).toEqual([['b1', 'deleted', 'gesperrt on the platform: status kept']]);
    const [t] = await byPlz('20104');
    expect(t).toMatchObject({ status: 'gesperrt', sperrgrund: 'Beschwerde' });
    const [ev] = await db.sql`select count(*)::int as n from fleet.outbox where event_type = 'therapist.deactivated' and key = ${String(t!.id)}`;
    expect(ev!.n).toBe(0);
    // Still not re-created or reactivated by a later line.
    const back = await imp([therapistLine({ id: 'b1', first: 'Berta', plz: '20104', status: 'unchanged' })], { scrape_id: 'back' }, '20104.json');
    expect(back.counts.created).toBe(0);
    expect((await byPlz('20104')).map((x) => x.status)).toEqual(['gesperrt']);
  });
});

describe('therapist import: files and reports', () => {
  it('report numbers add up on a file with every category, a missing last name and wrong metadata counts', async () => {
    await seed({ vorname: 'Uli', nachname: 'Update', plz: '20200', telefon: 'alt' });
    await seed({ vorname: 'Ute', nachname: 'Gleich', plz: '20200', anrede: 'Frau', geschlecht: 'weiblich', titel: null, strasse: 'Hauptstraße 15', ort: 'Aachen', telefon: '0241 12345', email: 'praxis@example.org', fremdsprachen: ['Englisch'], telefonische_erreichbarkeit: { monday: ['10:00-12:00'] }, psychotherapieverfahren: 'tiefenpsychologisch_fundierte_Psychotherapie' } as never);
    await seed({ vorname: 'Doro', nachname: 'Weg', plz: '20200' });
    const lines = [
      therapistLine({ id: 'r1', first: 'Neo', last: 'Neu', plz: '20200' }), // created
      therapistLine({ id: 'r2', salutation: 'Frau', first: 'Uli', last: 'Update', plz: '20200', phone: 'neu', status: 'modified' }), // updated
      therapistLine({ id: 'r3', salutation: 'Frau', first: 'Ute', last: 'Gleich', plz: '20200', status: 'unchanged' }), // unchanged
      therapistLine({ id: 'r4', first: 'Doro', last: 'Weg', plz: '20200', status: 'deleted' }), // deactivated
      therapistLine({ id: 'r5', first: 'Kira', last: 'Kind', plz: '20200', methods: [CHILD_VT] }), // skipped
      therapistLine({ id: 'r6', first: 'Max', last: null, plz: '20200' }), // failed: missing last name
      therapistLine({ id: 'r7', first: 'Pia', last: 'Plz', plz: '2020' }), // failed: bad postcode
      therapistLine({ id: 'r8', first: 'Udo', last: 'Unbekannt', plz: '20200', status: 'unchanged' }), // created, a status mismatch
    ];
    const r = await imp(lines, { total_therapists: 100, new_therapists: 0, modified_therapists: 1, deleted_therapists: 0 });
    expect(r.counts).toEqual({ total: 8, created: 2, updated: 1, unchanged: 1, deactivated: 1, skipped: 1, failed: 2, statusMismatches: 1, metadataDisagreements: 3, fileErrors: 0 });
    expect(r.statusMismatches).toEqual([{ index: 7, externalId: 'r8', therapistId: expect.any(Number), stated: 'unchanged', found: 'not on the platform: created' }]);
    expect(sum(r)).toBe(r.counts.total);
    expect(r.status).toBe('partial');
    expect(r.failures).toEqual([
      { index: 5, externalId: 'r6', reason: expect.stringContaining('basic_info.last_name') },
      { index: 6, externalId: 'r7', reason: expect.stringContaining('location.postal_code') },
    ]);
    // Reported, not trusted: the counts above are what the file holds (modified_therapists 1 is right).
    expect(r.metadataDisagreements).toEqual([
      { field: 'total_therapists', stated: 100, found: 8 },
      { field: 'new_therapists', stated: 0, found: 4 },
      { field: 'deleted_therapists', stated: 0, found: 1 },
    ]);
    // stored on the tracking row as well, and the run (of this file alone) has the same totals
    const [row] = await db.sql`select status, counts from fleet.therapist_import_files where id = ${r.fileId}`;
    expect(row).toMatchObject({ status: 'partial', counts: r.counts });
    const [run] = await db.sql`select state, counts from fleet.therapist_import_runs where id = ${r.runId}`;
    expect(run).toMatchObject({ state: 'closed', counts: r.counts });
  });

  it('a file that is not JSON fails at file level (counted apart from therapists); the run still closes with a summary', async () => {
    const file = path.join(dir, '20300.json');
    await writeFile(file, '{"metadata": {}, "therapists": [ {"id": "a"');
    const r = await importTherapistFileNow(ctx, file);
    expect(r.status).toBe('failed');
    expect(r.counts).toMatchObject({ total: 0, fileErrors: 1, failed: 0 });
    expect(r.reason).toContain('not valid JSON');
    const events = await db.sql`select topic, key, payload from fleet.outbox where event_type = 'import.failed' and key = ${String(r.fileId)}`;
    expect(events).toEqual([{ topic: 'import-events', key: String(r.fileId), payload: { kind: 'therapist', fileId: r.fileId, runId: r.runId, errorCode: 'file_unreadable' } }]);
    const [run] = await db.sql`select state, summary_delivery_id from fleet.therapist_import_runs where id = ${r.runId}`;
    expect(run).toMatchObject({ state: 'closed' });
    const [d] = await db.sql`select subject, text from fleet.deliveries where id = ${run!.summary_delivery_id}`;
    expect(d!.text).toContain('Fehler auf Dateiebene');
    expect(d!.text).toContain('1');
  });

  it('a therapist with a NUL character fails alone (not the file, not a retried database error); a file in another encoding fails with a clear reason', async () => {
    const r = await imp([therapistLine({ id: 'n1', first: 'Nils\u0000', plz: '20310' }), therapistLine({ id: 'n2', first: 'Nora', plz: '20310' })]);
    expect(r.status).toBe('partial');
    expect(r.counts).toMatchObject({ total: 2, created: 1, failed: 1 });
    expect(r.failures).toEqual([{ index: 0, externalId: 'n1', reason: 'basic_info.first_name: contains a NUL character (\\u0000), which cannot be stored' }]);
    expect((await byPlz('20310')).map((x) => x.vorname)).toEqual(['Nora']);
    expect(await db.sql`select 1 from fleet.outbox where event_type = 'import.failed' and key = ${String(r.fileId)}`).toHaveLength(0);

    const latin1 = path.join(dir, '20311.json');
    await writeFile(latin1, Buffer.from(scraperFile([therapistLine({ last: 'Müller', plz: '20311' })]), 'latin1'));
    const bad = await importTherapistFileNow(ctx, latin1);
    expect(bad.status).toBe('failed');
    expect(bad.fileErrors).toEqual([`file 20311.json: not UTF-8 text (the scraper writes UTF-8; was the file saved in another encoding?)`]);
    expect(await byPlz('20311')).toHaveLength(0);
  });

  it('a line nested thousands of levels deep in a file that holds a \\u escape is judged like any other (no stack overflow retried until the job gives up)', async () => {
    // A \u escape anywhere (an emoji written escaped, as json_encode does by default) makes the
    // import search every line for unstorable text: that search recursed once per level and
    // overflowed the stack, so the CLI said only "Maximum call stack size exceeded" and a worker
    // retried the file until it recorded "import failed after retries", naming neither file nor field.
    const deep = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;
    const deepWithNul = `${'['.repeat(10_000)}"x\\u0000"${']'.repeat(10_000)}`;
    const lines = [
      therapistLine({ id: 'd1', first: 'Dirk', plz: '20313' }),
      therapistLine({ id: 'd2', first: 'Doris', plz: '20313' }),
      therapistLine({ id: 'd3', first: 'Dana', plz: '20313' }),
    ];
    const text = scraperFile(lines, { postcode_area: 'XXXXX' })
      .replace('"id": "d1",', `"id": "d1", "extra": ${deep},`)
      .replace('"id": "d2",', `"id": "d2", "extra": ${deepWithNul},`)
      .replace('"scrape_id": "52XXX_20250702",', `"scrape_id": "Praxis \\ud83d\\ude00", "nested": ${deep},`);
    expect(text).toContain('"extra": [[[');
    expect(text).toContain('"nested": [[[');
    expect(text).toContain('Praxis \\ud83d\\ude00');
    const file = path.join(dir, '20313.json');
    await writeFile(file, text);
    const r = await importTherapistFileNow(ctx, file);
    expect(r.status).toBe('partial');
    expect(r.counts).toMatchObject({ total: 3, created: 2, failed: 1, fileErrors: 0 });
    expect(r.failures).toHaveLength(1);
    expect(r.failures[0]).toMatchObject({ index: 1, externalId: 'd2' });
    expect(r.failures[0]!.reason).toMatch(/^extra\.0\.0\..*: contains a NUL character \(\\u0000\), which cannot be stored$/);
    expect((await byPlz('20313')).map((x) => x.vorname)).toEqual(['Dirk', 'Dana']);
  });

  it('a name longer than its column once in its stored Unicode form fails that therapist alone, naming the field (not the file as a database error)', async () => {
    // U+0344 is one character in the file and two once normalised (NFC), as stored: 101 for a column of 100.
    const r = await imp([therapistLine({ id: 'l1', first: `${'q'.repeat(99)}\u0344`, plz: '20312' }), therapistLine({ id: 'l2', first: 'Lea', plz: '20312' })]);
    expect(r.status).toBe('partial');
    expect(r.counts).toMatchObject({ total: 2, created: 1, failed: 1, fileErrors: 0 });
    expect(r.failures).toEqual([{ index: 0, externalId: 'l1', reason: 'basic_info.first_name: longer than 100 characters' }]);
    expect((await byPlz('20312')).map((x) => x.vorname)).toEqual(['Lea']);
  });

  it('the same file twice is imported once; a changed file is re-imported and only changed therapists count as updated', async () => {
    const lines = Array.from({ length: 5 }, (_, i) => therapistLine({ id: `c${i}`, first: `Name${i}`, plz: '20400' }));
    const first = await imp(lines, {}, '20400.json');
    expect(first.counts.created).toBe(5);
    const twice = await importTherapistFileNow(ctx, path.join(dir, '20400.json'));
    expect(twice.alreadyDone).toBe(true);
    expect(twice.fileId).toBe(first.fileId);
    const [n] = await db.sql`select count(*)::int as n from fleet.therapist_import_files where content_hash is not null and path = '20400.json'`;
    expect(n!.n).toBe(1);

    const changed = lines.map((l, i) => (i === 2 ? therapistLine({ id: 'c2', first: 'Name2', plz: '20400', phone: '0800 NEU', status: 'modified' }) : { ...l, status: 'unchanged' }));
    const second = await imp(changed, { scrape_date: '2025-07-09T03:00:00' }, '20400.json');
    expect(second.fileId).not.toBe(first.fileId);
    expect(second.counts).toMatchObject({ total: 5, updated: 1, unchanged: 4, created: 0 });
    const [ev] = await db.sql`select count(*)::int as n from fleet.outbox where event_type = 'therapist.updated' and payload->>'fileId' = ${String(second.fileId)}`;
    expect(ev!.n).toBe(1);
  });

  it('a re-import whose lines differ only in last_modified (and the scrape date) writes nothing: last_modified is ignored', async () => {
    const lines = (lastModified: string, status: string) => Array.from({ length: 3 }, (_, i) => therapistLine({ id: `lm${i}`, first: `Lm${i}`, plz: '20410', lastModified, status }));
    expect((await imp(lines('2025-07-02T03:13:24', 'new'), {}, '20410.json')).counts.created).toBe(3);
    const before = await byPlz('20410');
    const again = await imp(lines('2025-07-09T03:13:24', 'unchanged'), { scrape_date: '2025-07-09T03:13:24' }, '20410.json');
    expect(again.counts).toMatchObject({ total: 3, unchanged: 3, updated: 0, created: 0 });
    expect((await byPlz('20410')).map((t) => String(t.updated_at))).toEqual(before.map((t) => String(t.updated_at)));
    const [ev] = await db.sql`select count(*)::int as n from fleet.outbox where event_type = 'therapist.updated' and payload->>'fileId' = ${String(again.fileId)}`;
    expect(ev!.n).toBe(0);
  });

  it('two files with the same therapists imported at the same time create each therapist once', async () => {
    const a = path.join(dir, '20600.json');
    const b = path.join(dir, 'urgent-20600.json');
    const lines = Array.from({ length: 20 }, (_, i) => therapistLine({ id: null, first: `Par${i}`, plz: '20600' }));
    await writeFile(a, scraperFile(lines, { scrape_id: 'a' }));
    await writeFile(b, scraperFile(lines, { scrape_id: 'b' }));
    const [ra, rb] = await Promise.all([importTherapistFileNow(ctx, a), importTherapistFileNow(ctx, b)]);
    expect(ra.counts.created + rb.counts.created).toBe(20);
    expect(ra.counts.unchanged + rb.counts.unchanged).toBe(20);
    expect(await byPlz('20600')).toHaveLength(20);
  });

  it('one staff summary per run, also when all went well, with exact counts', async () => {
    const r = await imp([therapistLine({ id: 'ok1', first: 'Olga', plz: '20500' })]);
    const [run] = await db.sql`select state, counts, summary_delivery_id from fleet.therapist_import_runs where id = ${r.runId}`;
    expect(run!.state).toBe('closed');
    const ds = await db.sql`select subject, text, to_address from fleet.deliveries where idempotency_key = ${`therapist-import.run.${r.runId}`}`;
    expect(ds).toHaveLength(1);
    expect(ds[0]!.subject).toContain('ohne Fehler');
    expect(ds[0]!.text).toContain('1 von 1 (100%)');
    expect(ds[0]!.text).toContain(`https://fleet.example/therapist-imports/runs/${r.runId}`);
    expect(ds[0]!.to_address).toBe(ctx.config.mail.staffEmail);
  });

  /** Writes `<plz>.json` with `lines` into the drop folder and registers it in `runId` (as the watcher does). */
  async function registerDropped(runId: number, plz: string, lines: Parameters<typeof scraperFile>[0]) {
    const file = path.join(dir, `${plz}.json`);
    await writeFile(file, scraperFile(lines));
    const buf = await readFile(file);
    const { file: row } = await therapistImportRepo.registerFile(ctx.database.db, {
      runId,
      path: file,
      postcode: plz,
      dateFolder: null,
      urgent: false,
      contentHash: createHash('sha256').update(buf).digest('hex'),
      sizeBytes: buf.length,
    });
    return row;
  }

  it('a file written half and then completed within one run: the summary names the failed half as replaced by the complete one, no problem of the run', async () => {
    const runId = await therapistImportRepo.openRun(ctx.database.db, 'watcher', 'collecting');
    const full = scraperFile([therapistLine({ id: 'hw1', first: 'Hanna', plz: '20570' })]);
    const file = path.join(dir, '20570.json');
    await writeFile(file, full.slice(0, Math.floor(full.length / 2)));
    const buf = await readFile(file);
    const { file: half } = await therapistImportRepo.registerFile(ctx.database.db, {
      runId, path: file, postcode: '20570', dateFolder: null, urgent: false, contentHash: createHash('sha256').update(buf).digest('hex'), sizeBytes: buf.length,
    });
    const deps = therapistImportDeps(ctx);
    expect((await processTherapistFile({ fileId: half.id }, deps)).status).toBe('failed');
    const complete = await registerDropped(runId, '20570', [therapistLine({ id: 'hw1', first: 'Hanna', plz: '20570' })]);
    await therapistImportRepo.sealRun(ctx.database.db, runId);
    expect((await processTherapistFile({ fileId: complete.id }, deps)).status).toBe('imported');
    const [d] = await db.sql<Array<{ subject: string; text: string }>>`select subject, text from fleet.deliveries where idempotency_key = ${`therapist-import.run.${runId}`}`;
    expect(d!.subject).toBe(`Therapeuten-Import Lauf ${runId}: 2 Dateien, 1 Therapeut, nichts offen (1 Datei inzwischen ersetzt)`);
    expect(d!.text).toContain(`(#${half.id}): nicht importiert, inzwischen ersetzt durch #${complete.id} (${file}, importiert): nichts zu tun`);
  });

  it('on the last attempt, a failure carried through an outage (retried anyway, OUTAGE_CARRY_HOURS) is not recorded: the file is not failed, and is imported by the next attempt', async () => {
    const runId = await therapistImportRepo.openRun(ctx.database.db, 'cli', 'sealed');
    const row = await registerDropped(runId, '20541', [therapistLine({ id: 'pd1', first: 'Paula', plz: '20541' })]);
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const deps = { ...therapistImportDeps(ctx), readFile: () => Promise.reject(refused) };
    await expect(processTherapistFile({ fileId: row.id }, deps, { isFinalAttempt: true, carried: (err) => err === refused })).rejects.toBe(refused);
    expect(await therapistImportRepo.getFile(ctx.database.db, row.id)).toMatchObject({ status: 'importing', errorCode: null });
    const report = await processTherapistFile({ fileId: row.id }, therapistImportDeps(ctx), { isFinalAttempt: true });
    expect(report).toMatchObject({ status: 'imported', counts: { total: 1, created: 1 } });
    // Not carried: the last attempt records the failure, as before.
    const otherRow = await registerDropped(runId, '20542', [therapistLine({ id: 'pe1', first: 'Peter', plz: '20542' })]);
    await expect(processTherapistFile({ fileId: otherRow.id }, deps, { isFinalAttempt: true, carried: () => false })).rejects.toBe(refused);
    expect(await therapistImportRepo.getFile(ctx.database.db, otherRow.id)).toMatchObject({ status: 'failed', errorCode: 'gave_up' });
  });

  it('a failure after the commit (the summary email cannot be queued: Redis away) on the last attempt does not turn the imported file into a failed one', async () => {
    const runId = await therapistImportRepo.openRun(ctx.database.db, 'cli', 'sealed');
    const row = await registerDropped(runId, '20540', [therapistLine({ id: 'pc1', first: 'Paula', plz: '20540' }), therapistLine({ id: 'pc2', first: 'Peter', plz: '20540' })]);
    const deps = { ...therapistImportDeps(ctx), sendEmail: () => Promise.reject(new Error('redis not reachable')) };
    await expect(processTherapistFile({ fileId: row.id }, deps, { isFinalAttempt: true })).rejects.toThrow('redis not reachable');
    // The therapists went in, and the record says so: not "failed, 0 therapists".
    expect(await byPlz('20540')).toHaveLength(2);
    const after = await therapistImportRepo.getFile(ctx.database.db, row.id);
    expect(after).toMatchObject({ status: 'imported', errorCode: null });
    expect(after!.counts).toMatchObject({ total: 2, created: 2, fileErrors: 0 });
    expect(await db.sql`select 1 from fleet.outbox where event_type = 'import.failed' and key = ${String(row.id)}`).toHaveLength(0);
    const completed = await db.sql<Array<{ status: string }>>`select payload->>'status' as status from fleet.outbox where event_type = 'therapist_import.completed' and key = ${String(row.id)}`;
    expect(completed.map((e) => e.status)).toEqual(['imported']);
    // The summary is queued with the run (the email sweep sends it) and counts the file as imported.
    const [run] = await db.sql`select state, counts, file_status_counts from fleet.therapist_import_runs where id = ${runId}`;
    expect(run).toMatchObject({ state: 'closed', file_status_counts: { imported: 1 } });
  });

  it('fleet import therapist-file with Redis away: the import is reported as done (its summary waits in the database for the email sweep), not as a failure', async () => {
    const noRedis = openContext(loadConfig({ DATABASE_URL: db.url, REDIS_URL: 'redis://127.0.0.1:1', QUEUE_PREFIX: 'rv-unused', SCRAPER_DROP_DIR: dir, LOG_LEVEL: 'silent' }), silentLogger(), { redisRole: 'command' });
    try {
      const file = path.join(dir, '20550.json');
      await writeFile(file, scraperFile([therapistLine({ id: 'nr1', first: 'Rosa', plz: '20550' })]));
      const r = await importTherapistFileNow(noRedis, file);
      expect(r).toMatchObject({ status: 'imported', counts: { total: 1, created: 1 } });
      expect(r.alreadyDone).toBeUndefined();
      const [d] = await db.sql`select d.status from fleet.deliveries d join fleet.therapist_import_runs r on r.summary_delivery_id = d.id where r.id = ${r.runId}`;
      expect(d).toMatchObject({ status: 'pending' });
    } finally {
      await noRedis.close();
    }
  });

  it('one file imported by two processes at once (the CLI on a file a worker is importing): imported once, its report kept', async () => {
    const file = path.join(dir, '20560.json');
    await writeFile(file, scraperFile(Array.from({ length: 3 }, (_, i) => therapistLine({ id: `tw${i}`, first: `Twice${i}`, plz: '20560' }))));
    const buf = await readFile(file);
    const runId = await therapistImportRepo.openRun(ctx.database.db, 'cli', 'sealed');
    const { file: row } = await therapistImportRepo.registerFile(ctx.database.db, {
      runId,
      path: file,
      postcode: '20560',
      dateFolder: null,
      urgent: false,
      contentHash: createHash('sha256').update(buf).digest('hex'),
      sizeBytes: buf.length,
    });
    // Both claim the file, then wait for its postcode area's lock: the second imports after the first committed.
    const locker = await db.sql.reserve();
    await locker`select pg_advisory_lock(hashtext(${IMPORT_LOCK_PREFIX} || 'scope:20560'))`;
    const deps = therapistImportDeps(ctx);
    const first = processTherapistFile({ fileId: row.id }, deps);
    while ((await therapistImportRepo.getFile(ctx.database.db, row.id))!.attempts < 1) await new Promise((r) => setTimeout(r, 10));
    const second = processTherapistFile({ fileId: row.id }, deps);
    while ((await therapistImportRepo.getFile(ctx.database.db, row.id))!.attempts < 2) await new Promise((r) => setTimeout(r, 10));
    await locker`select pg_advisory_unlock(hashtext(${IMPORT_LOCK_PREFIX} || 'scope:20560'))`;
    locker.release();
    const reports = await Promise.all([first, second]);
    expect(reports.map((r) => r.counts.created).sort()).toEqual([3, 3]);
    expect(reports.filter((r) => r.alreadyDone)).toHaveLength(1);
    expect(await byPlz('20560')).toHaveLength(3);
    expect((await therapistImportRepo.getFile(ctx.database.db, row.id))!.counts).toMatchObject({ total: 3, created: 3, unchanged: 0 });
    const completed = await db.sql`select 1 from fleet.outbox where event_type = 'therapist_import.completed' and key = ${String(row.id)}`;
    expect(completed).toHaveLength(1);
  });

  it('a file none of whose therapists went in is not called partly imported in the staff summary', async () => {
    const none = await imp([therapistLine({ id: 'f1', last: null, plz: '20510' }), therapistLine({ id: 'f2', first: 'Fritz', plz: '2051' })]);
    expect(none.status).toBe('partial');
    expect(none.counts).toMatchObject({ total: 2, failed: 2 });
    const childOnly = await imp([therapistLine({ id: 'f3', last: null, plz: '20520' }), therapistLine({ id: 'f4', first: 'Frida', plz: '20520', methods: [CHILD_VT] })]);
    expect(childOnly.counts).toMatchObject({ total: 2, failed: 1, skipped: 1 });
    const some = await imp([therapistLine({ id: 'f5', last: null, plz: '20530' }), therapistLine({ id: 'f6', first: 'Fanny', plz: '20530' })]);
    expect(some.counts).toMatchObject({ total: 2, failed: 1, created: 1 });
    const textOf = async (r: FileReport) => {
      const [d] = await db.sql<Array<{ text: string }>>`select d.text from fleet.deliveries d join fleet.therapist_import_runs r on r.summary_delivery_id = d.id where r.id = ${r.runId}`;
      return d!.text;
    };
    expect(await textOf(none)).toContain(`(#${none.fileId}): nicht importiert, alle Therapeuten fehlgeschlagen`);
    expect(await textOf(childOnly)).toContain(`(#${childOnly.fileId}): nicht importiert, kein Therapeut übernommen`);
    expect(await textOf(some)).toContain(`(#${some.fileId}): teilweise importiert`);
    expect(await textOf(none)).not.toContain('teilweise importiert');
    // Nor does the table of files count it as partly imported.
    expect(await textOf(none)).toMatch(/Dateien: +1 \(importiert 0, teilweise 0, ohne übernommene Therapeuten 1, fehlgeschlagen 0, übersprungen 0\)/);
    expect(await textOf(some)).toMatch(/Dateien: +1 \(importiert 0, teilweise 1, fehlgeschlagen 0, übersprungen 0\)/);
  });
});

