import { describe, expect, it } from 'vitest';
import { therapistLine } from './fixtures.js';
import {
  compactScraped,
  diffFields,
  holdsScraped,
  isEmptyValue,
  mapTherapist,
  norm,
  normFull,
  planFile,
  sameValue,
  scrapedRecord,
  type ExistingTherapist,
  type ExternalIdEntry,
  type ScrapedFields,
  type ScrapedRecord,
} from './plan.js';
import { wellFormedTherapist, type ParsedLine } from './scraper-file.js';

/** The rule as first written (every comparison through the canonical form). */
function canonical(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
const record = (fields: ScrapedFields): ScrapedRecord => ({ digest: scrapedRecord(fields).digest, fields });
const reference = (a: unknown, b: unknown) => (isEmptyValue(a) && isEmptyValue(b)) || canonical(a) === canonical(b);

describe('sameValue', () => {
  it('answers like the canonical comparison for every pair of typical field values', () => {
    const values: unknown[] = [null, undefined, '', ' ', 'a', 'A', ' a', 'null', '0', 0, [], ['a'], ['a', 'b'], ['b', 'a'], {}, { x: ['1'] }, { x: ['1'], y: [] }, { y: [], x: ['1'] }, { x: '1' }, { x: undefined }, { x: null }, { y: null }, { x: ['1', '2'] }, { x: { z: ['1'] } }, { x: { z: '1' } }, [null], [undefined], [[]], [{}], ['1'], [1], 1, true, 'true', { monday: ['10:00-12:00'], thursday: ['14:00-15:00'] }, { thursday: ['14:00-15:00'], monday: ['10:00-12:00'] }];
    for (const a of values) for (const b of values) expect(sameValue(a, b), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).toBe(reference(a, b));
  });
});

describe('norm', () => {
  it('the fast path gives what the full rule gives: every character below U+0300 alone and in words', () => {
    for (let c = 0; c < 0x300; c++) {
      const ch = String.fromCharCode(c);
      for (const s of [ch, `a${ch}b`, `${ch} x`, `Ab ${ch}${ch}`]) expect(norm(s), `U+${c.toString(16)} in ${JSON.stringify(s)}`).toBe(normFull(s));
    }
  });

  it('folds case, spaces and Unicode forms of real names alike', () => {
    const decomposed = 'Mu\u0308ller'; // u + combining diaeresis
    expect(norm(decomposed)).toBe(norm('Müller'));
    expect(norm('  Anna   Maria\tSchmidt ')).toBe('anna maria schmidt');
    expect(norm('STRAẞE 5')).toBe(normFull('STRAẞE 5'));
    expect(norm('Zoë')).toBe('zoë');
    expect(norm(null)).toBe('');
  });
});

describe('planFile: what holds whatever the order of the lines', () => {
  /** A small seeded generator, so a failure can be replayed. */
  function rng(seed: number) {
    let s = seed >>> 0;
    return () => {
      s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
      return s / 2 ** 32;
    };
  }
  const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const shuffle = <T>(r: () => number, xs: T[]): T[] => {
    const out = [...xs];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  };
  const firsts = ['Anna', 'Ben', 'Cem'] as const;
  const lasts = ['Alt', 'Berg', 'Crone', 'Dorn'] as const;
  const titles = [null, 'Dr.'] as const;
  const emails = [null, 'team@praxis.de', 'eigene@praxis.de'] as const;

  function randomFile(seed: number) {
    const r = rng(seed);
    const candidates: ExistingTherapist[] = [];
    const externalIds = new Map<string, ExternalIdEntry>();
    for (let id = 1; id <= 1 + Math.floor(r() * 6); id++) {
      candidates.push({
        id,
        status: pick(r, ['aktiv', 'aktiv', 'inaktiv']),
        anrede: 'Frau',
        geschlecht: 'weiblich',
        titel: pick(r, titles),
        vorname: pick(r, firsts),
        nachname: pick(r, lasts),
        strasse: 'Ring 3',
        plz: '52066',
        ort: 'Aachen',
        telefon: null,
        fax: null,
        email: pick(r, emails),
        telefonische_erreichbarkeit: null,
        fremdsprachen: null,
        psychotherapieverfahren: 'egal',
      });
      if (r() < 0.5) externalIds.set(`x${id}`, { therapistId: id, deleted: false });
      // Some carry what the scraper said before staff corrected the name.
      const c = candidates[candidates.length - 1]!;
      if (r() < 0.3) c.scraped = record(compactScraped({ ...c, vorname: pick(r, firsts), nachname: pick(r, lasts) }));
    }
    // Distinct scraper ids (some known, some new) or none.
    const ids = shuffle(r, ['x1', 'x2', 'x3', 'x4', 'x5', 'x6', 'n1', 'n2', 'n3', 'n4']);
    const lines: ParsedLine[] = [];
    for (let index = 0; index < 1 + Math.floor(r() * 6); index++) {
      const raw = therapistLine({
        id: r() < 0.8 ? ids[index]! : null,
        status: pick(r, ['new', 'modified', 'unchanged', 'unchanged', 'deleted']),
        salutation: 'Frau',
        first: pick(r, firsts),
        last: pick(r, lasts),
        title: pick(r, titles),
        email: pick(r, emails),
        street: 'Ring',
        house: '3',
        plz: '52066',
      });
      const therapist = wellFormedTherapist(raw)!;
      const odd = r();
      // Some `deleted` lines carry nothing but their id and status.
      if (therapist.status === 'deleted' && therapist.id !== null && odd < 0.4) {
        lines.push({ index, ok: false, externalId: therapist.id, statedStatus: 'deleted', reason: 'basic_info: missing; location: missing' });
      } else if (therapist.status !== 'deleted' && odd < 0.15) {
        // A listed therapist whose line is invalid (a bad email, say) ...
        lines.push({ index, ok: false, externalId: therapist.id, statedStatus: therapist.status, reason: 'contact.email: not an email address' });
      } else if (therapist.status !== 'deleted' && odd < 0.3) {
        // ... or offers only methods for children: still listed, so not another line's name change.
        lines.push({ index, ok: true, externalId: therapist.id, statedStatus: therapist.status, therapist: { ...therapist, therapy_methods: ['Verhaltenstherapie für Kinder und Jugendliche'] } });
      } else lines.push({ index, ok: true, externalId: therapist.id, statedStatus: therapist.status, therapist });
    }
    return { r, candidates, externalIds, lines };
  }

  it('a line takes the therapist its known scraper id names; no two lines take one therapist; the secondary rule never takes a therapist another line names by id', () => {
    for (let seed = 1; seed <= 400; seed++) {
      const f = randomFile(seed);
      for (let round = 0; round < 4; round++) {
        const order = round === 0 ? f.lines : shuffle(f.r, f.lines);
        const plan = planFile({ lines: order, candidates: f.candidates, externalIds: f.externalIds });
        const where = `seed ${seed}, order ${order.map((l) => l.index).join(',')}`;
        expect(plan.lines.map((l) => l.index), where).toEqual(order.map((l) => l.index));
        const taken = plan.lines.filter((l) => l.outcome !== 'failed' && l.therapistId !== null).map((l) => l.therapistId);
        expect(new Set(taken).size, where).toBe(taken.length);
        const namedById = new Map<number, string>();
        for (const l of order) {
          const known = l.externalId ? f.externalIds.get(l.externalId)?.therapistId : undefined;
          if (known != null) namedById.set(known, l.externalId!);
        }
        // Lines that never reach matching: invalid (but not `deleted`), or not for adults.
        const unmatchable = new Set(order.filter((l) => (!l.ok && l.statedStatus !== 'deleted') || (l.ok && l.therapist.status !== 'deleted' && !l.therapist.therapy_methods.some((m) => /erwachsene/i.test(m)))).map((l) => l.index));
        for (const res of plan.lines) {
          const known = res.externalId ? f.externalIds.get(res.externalId)?.therapistId : undefined;
          if (known != null && !unmatchable.has(res.index)) expect({ rule: res.rule, therapistId: res.therapistId }, where).toEqual({ rule: 'external_id', therapistId: known });
          if (res.rule === 'secondary' && namedById.has(res.therapistId!)) expect(namedById.get(res.therapistId!), where).toBe(res.externalId);
        }
      }
    }
  });

  const minimal = (index: number, id: string): ParsedLine => ({ index, ok: false, externalId: id, statedStatus: 'deleted', reason: 'basic_info: missing' });
  const candidate = (id: number, status = 'aktiv'): ExistingTherapist => ({ ...randomFile(1).candidates[0]!, id, status, vorname: `T${id}` });

  it('a deleted line of just id and status: deactivates by a known id, fails twice-named or unknown ids with the reason, tells when nothing is left', () => {
    const externalIds = new Map<string, ExternalIdEntry>([
      ['k1', { therapistId: 1, deleted: false }],
      ['k2', { therapistId: 2, deleted: false }],
      ['gone', { therapistId: 99, deleted: false }],
      ['tomb', { therapistId: null, deleted: true }],
    ]);
    const plan = planFile({
      lines: [minimal(0, 'k1'), minimal(1, 'k1'), minimal(2, 'k2'), minimal(3, 'gone'), minimal(4, 'tomb'), minimal(5, 'new')],
      candidates: [candidate(1), candidate(2, 'gesperrt')],
      externalIds,
    });
    expect(plan.lines.map((l) => [l.index, l.outcome, l.rule, l.therapistId, l.mismatch?.found ?? null])).toEqual([
      [0, 'deactivated', 'external_id', 1, null],
      [1, 'failed', 'external_id', 1, null],
      [2, 'unchanged', 'external_id', 2, 'gesperrt on the platform: status kept'],
      [3, 'unchanged', null, null, 'no longer on the platform'],
      [4, 'unchanged', null, null, 'not on the platform'],
      [5, 'failed', null, null, null],
    ]);
    expect(plan.lines[1]!.reason).toBe('same therapist as therapists[0] of this file (duplicate line)');
    expect(plan.lines[5]!.reason).toBe('basic_info: missing; status deleted: id "new" is not known in this postcode area, so the therapist can only be found by name and postcode');
    expect(plan.deactivations).toEqual([1]);
    expect(plan.creates).toEqual([]);
    expect(plan.updates).toEqual([]);
    expect(plan.tombstones).toEqual([
      { key: 'k1', therapistId: 1 },
      { key: 'k2', therapistId: 2 },
      { key: 'gone', therapistId: null },
      { key: 'tomb', therapistId: null },
    ]);
  });
});

describe('planFile: staff corrections survive (what the scraper said last time)', () => {
  const line = (over: Parameters<typeof therapistLine>[0]) => {
    const therapist = wellFormedTherapist(therapistLine({ salutation: 'Frau', first: 'Ana', last: 'Mueler', plz: '52066', phone: '0241 1', email: 'ana@praxis.de', ...over }))!;
    return { index: 0, ok: true as const, externalId: therapist.id, statedStatus: therapist.status, therapist };
  };
  /** Therapist 7 as imported from `scrapedFrom` (on record), then changed by `over`. */
  const platform = (over: Partial<ExistingTherapist>, scrapedFrom: ReturnType<typeof line>): ExistingTherapist => ({
    id: 7,
    status: 'aktiv',
    ...mapTherapist(scrapedFrom.therapist),
    scraped: record(compactScraped(mapTherapist(scrapedFrom.therapist))),
    ...over,
  });

  it('a field the scraper has not changed since is not written over a staff correction; one it changed is; with nothing on record the platform value is compared', () => {
    const before = line({ id: null, status: 'unchanged' });
    const staffCorrected = platform({ telefon: '0241 999', email: 'neu@praxis.de' }, before);
    // The scraper still gives the old phone and email: nothing to write.
    let plan = planFile({ lines: [before], candidates: [staffCorrected], externalIds: new Map() });
    expect(plan.lines[0]).toMatchObject({ outcome: 'unchanged', therapistId: 7, changedFields: [] });
    expect(plan.updates).toEqual([]);
    expect(plan.scraped).toEqual([]);
    // It changes the phone: the phone is written, the corrected email stays; the new fields go on
    // record, and the row does not hold them (it keeps the staff's email).
    const changed = line({ id: null, status: 'modified', phone: '0241 2' });
    plan = planFile({ lines: [changed], candidates: [staffCorrected], externalIds: new Map() });
    expect(plan.updates).toEqual([{ therapistId: 7, changes: { telefon: '0241 2' } }]);
    // Staff are told which correction the scraper's news replaced.
    expect(plan.lines[0]).toMatchObject({ outcome: 'updated', changedFields: ['telefon'], replacedCorrections: ['telefon'] });
    const fields = compactScraped(mapTherapist(changed.therapist));
    expect(plan.scraped).toEqual([{ therapistId: 7, ...scrapedRecord(fields), held: false }]);
    expect(JSON.parse(plan.scraped[0]!.json)).toMatchObject({ telefon: '0241 2', email: 'ana@praxis.de' });
    // Nothing on record (imported before it was kept, or entered by staff): the file's values as before.
    plan = planFile({ lines: [before], candidates: [{ ...staffCorrected, scraped: null }], externalIds: new Map() });
    expect(plan.updates).toEqual([{ therapistId: 7, changes: { telefon: '0241 1', email: 'ana@praxis.de' } }]);
    expect(plan.lines[0]!.replacedCorrections).toBeUndefined();
    expect(plan.scraped.map((x) => x.held)).toEqual([true]);
    // On record, the row untouched since (its fields not read): the row's values stand for them.
    const untouched = platform({ scraped: { digest: scrapedRecord(compactScraped(mapTherapist(before.therapist))).digest, fields: null } }, before);
    plan = planFile({ lines: [changed], candidates: [untouched], externalIds: new Map() });
    expect(plan.updates).toEqual([{ therapistId: 7, changes: { telefon: '0241 2' } }]);
    expect(plan.lines[0]!.replacedCorrections).toBeUndefined();
    expect(plan.scraped.map((x) => x.held)).toEqual([true]);
  });

  it('finds a therapist by the name the scraper gave before staff corrected it (no duplicate), by the primary and the secondary rule', () => {
    const old = line({ id: null, status: 'unchanged' });
    const corrected = platform({ vorname: 'Anna', nachname: 'Müller' }, old);
    let plan = planFile({ lines: [old], candidates: [corrected], externalIds: new Map() });
    expect(plan.lines[0]).toMatchObject({ outcome: 'unchanged', rule: 'primary', therapistId: 7 });
    expect(plan.creates).toEqual([]);
    // A surname change on the scraper's side: found by the old first name, street and email on record.
    const married = line({ id: null, status: 'modified', last: 'Schmidt' });
    plan = planFile({ lines: [married], candidates: [corrected], externalIds: new Map() });
    expect(plan.lines[0]).toMatchObject({ outcome: 'updated', rule: 'secondary', therapistId: 7, changedFields: ['nachname'] });
    expect(plan.creates).toEqual([]);
    // Without the record the corrected therapist is not found by the old name: a new one (as before).
    plan = planFile({ lines: [old], candidates: [{ ...corrected, scraped: null }], externalIds: new Map() });
    expect(plan.lines[0]).toMatchObject({ outcome: 'created' });
  });

  it('a row still holding its record plans the same without reading the record\'s fields (the shortcut of an untouched row), whatever the record, row and line', () => {
    let seed = 7;
    const r = () => {
      seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
      return seed / 2 ** 32;
    };
    const choice = <T,>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
    const phones = [null, '0241 1', '0241 2'] as const;
    const streets = [null, 'Ring', 'Ring 3', 'Markt 5'] as const;
    for (let i = 0; i < 2000; i++) {
      const lastTime = line({ id: 'h1', phone: choice(phones), email: choice([null, 'a@praxis.de', 'b@praxis.de']), city: choice(['Aachen', 'Köln']), street: choice(streets), house: null, languages: choice([[], ['Englisch']]) });
      const s = mapTherapist(lastTime.therapist);
      // The row as the import left it: the scraper's non-empty values (a street with the number
      // kept), and anything where the scraper gave nothing.
      const row: ExistingTherapist = {
        id: 7,
        status: 'aktiv',
        ...s,
        telefon: s.telefon ?? choice(phones),
        email: s.email ?? choice([null, 'c@praxis.de']),
        strasse: s.strasse === 'Ring' && r() < 0.5 ? 'Ring 3' : (s.strasse ?? choice(streets)),
        fremdsprachen: s.fremdsprachen ?? choice([null, ['Türkisch']]),
      };
      expect(holdsScraped(row, {}, s), `case ${i}`).toBe(true);
      const now = line({ id: 'h1', status: 'modified', phone: choice(phones), email: choice([null, 'a@praxis.de', 'b@praxis.de']), city: choice(['Aachen', 'Köln']), street: choice(streets), house: null, languages: choice([[], ['Englisch'], ['Polnisch']]) });
      const externalIds = new Map<string, ExternalIdEntry>([['h1', { therapistId: 7, deleted: false }]]);
      const full = planFile({ lines: [now], candidates: [{ ...row, scraped: record(compactScraped(s)) }], externalIds });
      const shortcut = planFile({ lines: [now], candidates: [{ ...row, scraped: { digest: record(compactScraped(s)).digest, fields: null } }], externalIds });
      expect(shortcut.lines, `case ${i}`).toEqual(full.lines);
      expect(shortcut.updates, `case ${i}`).toEqual(full.updates);
      expect(shortcut.scraped, `case ${i}`).toEqual(full.scraped);
    }
  });

  it('a line that leaves a field empty: the record keeps the earlier value (merged by the store), so the row holds the record only if it holds that value', () => {
    const before = line({ id: null, status: 'unchanged', phone: '0241 A' });
    const gap = line({ id: null, status: 'modified', phone: null });
    for (const [telefon, held] of [
      ['0241 STAFF', false],
      ['0241 A', true],
    ] as const) {
      const plan = planFile({ lines: [gap], candidates: [platform({ telefon }, before)], externalIds: new Map() });
      expect(plan.updates).toEqual([]);
      expect(plan.scraped.map((x) => [JSON.parse(x.json).telefon, x.held])).toEqual([[undefined, held]]);
    }
  });

  it('the record leaves empty values out; diffFields never writes them; holdsScraped allows what the import keeps', () => {
    const f = mapTherapist(wellFormedTherapist(therapistLine({ phone: null, email: '', languages: [], street: 'Marktplatz', house: null }))!);
    const stored = compactScraped(f);
    expect(Object.keys(stored)).not.toContain('telefon');
    expect(Object.keys(stored)).not.toContain('email');
    expect(Object.keys(stored)).not.toContain('fremdsprachen');
    expect(scrapedRecord(stored).digest).toBe(scrapedRecord(compactScraped({ ...f })).digest);
    expect(scrapedRecord(stored).digest).not.toBe(scrapedRecord(compactScraped({ ...f, telefon: '1' })).digest);
    // A phone staff added where the scraper has none, and the house number the platform keeps: held.
    expect(holdsScraped({ ...f, telefon: '0241 9', strasse: 'Marktplatz 3' }, {}, f)).toBe(true);
    expect(holdsScraped({ ...f, ort: 'Köln' }, {}, f)).toBe(false);
    expect(holdsScraped({ ...f, ort: 'Köln' }, { ort: 'Aachen' }, f)).toBe(true);
    expect(diffFields({ ...f, telefon: '0241 9' }, f, stored)).toEqual({});
    expect(diffFields({ ...f, ort: 'Köln' }, f, stored)).toEqual({});
    expect(diffFields({ ...f, ort: 'Köln' }, f, null)).toEqual({ ort: 'Aachen' });
    expect(diffFields({ ...f, ort: 'Köln' }, { ...f, ort: 'Bonn' }, stored)).toEqual({ ort: 'Bonn' });
  });
});

describe('mapTherapist: languages and hours are text like the other fields', () => {
  it('stores them NFC with folded spaces, so a line differing only in Unicode form or spacing is unchanged', () => {
    const nfc = mapTherapist(wellFormedTherapist(therapistLine({ id: 'l1', languages: ['Französisch'], hours: { monday: ['10:00 - 12:00'] } }))!);
    const nfd = mapTherapist(wellFormedTherapist(therapistLine({ id: 'l1', languages: ['Französisch'.normalize('NFD')], hours: { monday: ['10:00 -\u00a0 12:00'.normalize('NFD')] } }))!);
    expect(nfd.fremdsprachen).toEqual(['Französisch']);
    expect(nfd.telefonische_erreichbarkeit).toEqual({ monday: ['10:00 - 12:00'] });
    const existing: ExistingTherapist = { id: 3, status: 'aktiv', ...nfc, scraped: record(compactScraped(nfc)) };
    const line: ParsedLine = { index: 0, ok: true, externalId: 'l1', statedStatus: 'unchanged', therapist: wellFormedTherapist(therapistLine({ id: 'l1', status: 'unchanged', languages: ['Französisch'.normalize('NFD')], hours: { monday: ['10:00  -  12:00'] } }))! };
    const plan = planFile({ lines: [line], candidates: [existing], externalIds: new Map([['l1', { therapistId: 3, deleted: false }]]) });
    expect(plan.lines[0]).toMatchObject({ outcome: 'unchanged', changedFields: [] });
    expect(plan.updates).toEqual([]);
  });
});

describe('planFile: an email differing only in case', () => {
  it('is unchanged (matching ignores case too): the stored address stays, no update', () => {
    const lower = mapTherapist(wellFormedTherapist(therapistLine({ id: 'e1', email: 't@example.com' }))!);
    const line: ParsedLine = { index: 0, ok: true, externalId: 'e1', statedStatus: 'unchanged', therapist: wellFormedTherapist(therapistLine({ id: 'e1', status: 'unchanged', email: 'T@example.com' }))! };
    const externalIds = new Map([['e1', { therapistId: 3, deleted: false }]]);
    for (const scraped of [record(compactScraped(lower)), { digest: record(compactScraped(lower)).digest, fields: null }, null]) {
      const plan = planFile({ lines: [line], candidates: [{ id: 3, status: 'aktiv', ...lower, scraped }], externalIds });
      expect(plan.lines[0]).toMatchObject({ outcome: 'unchanged', changedFields: [] });
      expect(plan.updates).toEqual([]);
      expect(plan.scraped.map((x) => x.held)).toEqual([true]);
    }
  });
});
