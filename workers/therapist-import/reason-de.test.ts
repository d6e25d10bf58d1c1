import { describe, expect, it } from 'vitest';
import { therapistLine } from './fixtures.js';
import { mapTherapist, planFile } from './plan.js';
import { reasonDe } from './reason-de.js';
import { decodeScraperFile, FileFormatError, jsonErrors, parseScraperFile, wellFormedTherapist } from './scraper-file.js';

/** Words of the parser's English messages; none may be left in a German reason (field paths hold none of them). */
const ENGLISH = /\b(house number|not applied|match several|staff must|expected|got|missing|empty|longer|characters|not an|contains|cannot|line \d|column|same therapist|duplicate|none of them|is given|is not known|Invalid|Too|list|object|text|number|digits|import failed|abandoned|metadata not used|JSON input)\b|\((therapist|metadata|value)\)/;

const base = { id: 'a', status: 'new', basic_info: { first_name: 'A', last_name: 'B' }, location: { postal_code: '52074' } };

/** One of each kind of wrong value for every field of a therapist (DOMAIN.md section 2). */
const badTherapists: unknown[] = [
  'x',
  5,
  null,
  [],
  { ...base, id: { a: 1 } },
  { ...base, id: true },
  { ...base, id: Number('12345678901234567890') }, // beyond 2^53: not read exactly
  { ...base, status: 'x' },
  { ...base, status: 5 },
  { ...base, status: undefined },
  { ...base, basic_info: 'x' },
  { ...base, basic_info: undefined },
  { ...base, basic_info: { first_name: 5, last_name: '' } },
  { ...base, basic_info: { first_name: 'a'.repeat(101), last_name: 'b', salutation: 'Dr', title: ['x'] } },
  { ...base, basic_info: { first_name: 'a', last_name: 'b', salutation: 5 } },
  { ...base, location: { postal_code: '5207' } },
  { ...base, location: { postal_code: null } },
  { ...base, location: {} },
  { ...base, location: 7 },
  { ...base, location: { postal_code: '52074', city: {}, street: 'x'.repeat(256) } },
  { ...base, location: { postal_code: '52074', street: 'x'.repeat(250), house_number: '123456' } },
  { ...base, contact: 'x' },
  { ...base, contact: { email: 'nope', phone: [1], fax: false } },
  { ...base, languages: 'de' },
  { ...base, languages: [1] },
  { ...base, therapy_methods: {} },
  { ...base, telephone_hours: 'x' },
  { ...base, telephone_hours: { mo: 5 } },
  { ...base, telephone_hours: { mo: [5] } },
  { ...base, basic_info: { first_name: 'a\u0000', last_name: 'b' } },
  { ...base, basic_info: { first_name: 'a\ud800', last_name: 'b' } },
  { ...base, 'x\u0000': 1 },
];

const badMetadata: unknown[] = ['x', { scrape_date: 5, total_therapists: -1, new_therapists: 1.5, deleted_therapists: 'x' }, { postcode_area: 'a\u0000' }];

const badFiles = ['', '   ', '{', '{"a": 1,}', '{"a": 1} x', '// c\n{}', '{"a": "\\x"}', '{"a": 01}', '{"a" 1}', '[1]', '{"metadata": {}}', '{"metadata": {}, "therapists": 5}', '{"metadata": {}, "therapists": null}'];

function formatError(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    if (err instanceof FileFormatError) return err.message;
    throw err;
  }
  throw new Error('expected a FileFormatError');
}

/** Every reason the parser and the planner write, from real bad input. */
function allReasons(): string[] {
  const therapistReasons = parseScraperFile(JSON.stringify({ metadata: {}, therapists: badTherapists })).lines.map((l) => (l.ok ? '' : l.reason));
  const metadataErrors = [
    ...badMetadata.flatMap((metadata) => parseScraperFile(JSON.stringify({ metadata, therapists: [] })).fileErrors),
    // Reads as infinity (JSON.stringify would write it as null).
    ...parseScraperFile('{"metadata": {"total_therapists": 1e400}, "therapists": []}').fileErrors,
  ];
  const fileErrors = [...badFiles.map((t) => formatError(() => parseScraperFile(t))), formatError(() => decodeScraperFile(Buffer.from([0x7b, 0xff, 0x7d])))];
  const twice = therapistLine({ id: 'dup', first: 'Anna', last: 'Berg' });
  const plan = planFile({
    lines: parseScraperFile(
      JSON.stringify({
        metadata: {},
        therapists: [
          twice,
          twice,
          therapistLine({ id: 'x; y', first: 'Carl' }),
          therapistLine({ id: 'x; y', first: 'Dora' }),
          therapistLine({ id: null, first: 'Emil', last: 'Frey' }),
          therapistLine({ id: null, first: 'Emil', last: 'Frey' }),
          { ...therapistLine({ id: 'gone: "x"; y', status: 'deleted' }), basic_info: undefined },
          { ...therapistLine({ id: null, status: 'deleted' }), basic_info: undefined },
        ],
      }),
    ).lines,
    candidates: [],
    externalIds: new Map(),
  });
  // Two therapists of one name and postcode that nothing else tells apart.
  const twin = (id: number) => ({ id, status: 'aktiv', ...mapTherapist(wellFormedTherapist(therapistLine({ first: 'Gina', last: 'Hahn' }))!) });
  const ambiguous = planFile({ lines: parseScraperFile(JSON.stringify({ metadata: {}, therapists: [therapistLine({ id: null, first: 'Gina', last: 'Hahn' })] })).lines, candidates: [twin(1), twin(2)], externalIds: new Map() });
  const planReasons = [...plan.lines, ...ambiguous.lines].filter((l) => l.outcome === 'failed').map((l) => l.reason!);
  expect(planReasons).toHaveLength(7);
  return [...therapistReasons, ...metadataErrors, ...fileErrors, ...planReasons, 'import failed after retries: connect ECONNREFUSED', 'import abandoned: job stalled more than allowable limit'];
}

describe('reasonDe', () => {
  it('leaves no English message in any reason the parser and the planner write', () => {
    const reasons = allReasons();
    expect(reasons.filter((r) => r === '')).toEqual([]);
    for (const r of reasons) {
      const de = reasonDe(r);
      // The technical cause of an internal failure stays as the system gave it.
      const own = de.replace(/^(Import nach allen Versuchen aufgegeben|Import abgebrochen): .*$/, '$1');
      expect(own, `${r}\n-> ${de}`).not.toMatch(ENGLISH);
    }
  });

  it('words every JSON syntax error the parser can name, not only those the bad files above run into', () => {
    for (const w of [...Object.values(jsonErrors), 'syntax error']) {
      const de = reasonDe(`not valid JSON: line 1, column 1: ${w}`);
      expect(de).toMatch(/^kein gültiges JSON: Zeile 1, Spalte 1: /);
      expect(de).not.toContain(w);
    }
  });

  it('keeps field paths as written in the file, and ids and counts as they are', () => {
    expect(reasonDe('basic_info.first_name: expected text, got a number; basic_info.last_name: empty')).toBe('basic_info.first_name: erwartet: Text, gefunden: eine Zahl; basic_info.last_name: leer');
    expect(reasonDe('(therapist): expected an object, got a list')).toBe('(Eintrag): erwartet: ein Objekt, gefunden: eine Liste');
    expect(reasonDe('"metadata": scrape_date: expected text, got a number; total_therapists: expected 0 or more, got a negative number')).toBe(
      '"metadata": scrape_date: erwartet: Text, gefunden: eine Zahl; total_therapists: erwartet: 0 oder mehr, gefunden: eine negative Zahl',
    );
    expect(reasonDe('not valid JSON: line 3, column 14: comma expected')).toBe('kein gültiges JSON: Zeile 3, Spalte 14: Komma erwartet');
    expect(reasonDe('id: "x; y: z" is given to different therapists in this file (therapists[2], therapists[3]): none of them is imported')).toBe(
      'id: "x; y: z" gehört in dieser Datei verschiedenen Therapeuten (therapists[2], therapists[3]): keiner von ihnen wird importiert',
    );
    expect(reasonDe('basic_info: missing; status deleted: id "a; b" is not known in this postcode area, so the therapist can only be found by name and postcode')).toBe(
      'basic_info: fehlt; status deleted: id "a; b" ist in diesem Postleitzahlbereich nicht bekannt, der Therapeut ist daher nur über Name und Postleitzahl zu finden',
    );
    expect(reasonDe('location.city: longer than 100 characters')).toBe('location.city: länger als 100 Zeichen');
  });

  it('keeps what it does not know in English instead of guessing', () => {
    expect(reasonDe('not valid JSON: Unexpected end of JSON input')).toBe('not valid JSON: Unexpected end of JSON input');
    expect(reasonDe('expected a unicorn, got text')).toBe('expected a unicorn, got text');
    expect(reasonDe('')).toBe('');
  });
});
