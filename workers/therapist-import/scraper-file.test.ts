import { describe, expect, it } from 'vitest';
import { therapistLine } from './fixtures.js';
import { decodeScraperFile, FileFormatError, parseScraperFile, scraperTherapistSchema, wellFormedTherapist } from './scraper-file.js';

/** Values tried for each field: valid, edge (trimming, empty, null, missing) and invalid ones. */
const texts = [undefined, null, '', '  ', 'Text', '  padded  ', 42, true, ['x'], { a: 1 }, 'x'.repeat(14), 'x'.repeat(15), 'x'.repeat(51), 'x'.repeat(101), 'x'.repeat(241), 'x'.repeat(256), `${'q'.repeat(99)}\u0344`, '\ufb2c'.repeat(17), 'Dipl.-Psych. Dr. phil.'];
const variants: Array<[string[], unknown[]]> = [
  [['id'], [...texts, 7, 0]],
  [['status'], ['new', 'modified', 'unchanged', 'deleted', 'NEW', '', null, undefined, 3]],
  [['last_modified'], [undefined, null, '2025-07-02', 5]],
  [['basic_info'], [undefined, null, 'x', [], {}]],
  [['basic_info', 'salutation'], ['Herr', 'Frau', ' Frau ', 'herr', ' FRAU ', '', null, undefined, 'Divers', 'Herrn', 1]],
  [['basic_info', 'title'], texts],
  [['basic_info', 'first_name'], texts],
  [['basic_info', 'last_name'], texts],
  [['location'], [undefined, null, 'x', [], {}]],
  [['location', 'street'], texts],
  [['location', 'house_number'], texts],
  [['location', 'city'], texts],
  [['location', 'postal_code'], ['52066', ' 52066 ', '5206', '520661', 'abcde', 52066, 5206, null, undefined, '']],
  [['contact'], [undefined, null, 'x', [], {}, { phone: ' 0241 ' }]],
  [['contact', 'phone'], texts],
  [['contact', 'email'], [...texts, 'a@b.de', ' a@b.de ', 'info(at)praxis.de', 'a b@c.de', 'a@b', '@b.de']],
  [['contact', 'fax'], texts],
  [['languages'], [undefined, null, [], ['Englisch'], [' Englisch ', ''], [1], 'Englisch', {}]],
  [['therapy_methods'], [undefined, null, [], ['Verhaltenstherapie für Erwachsene'], ['  '], [null], 'x']],
  [
    ['telephone_hours'],
    [undefined, null, {}, { monday: ['10:00-12:00'] }, { monday: ' 10:00 ' }, { monday: '' }, { monday: null }, { monday: [' ', ''] }, { monday: [1] }, { monday: 5 }, [], 'x', { a: [], b: ['x'] }],
  ],
];

function withValue(path: string[], value: unknown): Record<string, unknown> {
  const line = structuredClone(therapistLine()) as Record<string, unknown>;
  let target = line;
  for (const key of path.slice(0, -1)) {
    if (typeof target[key] !== 'object' || target[key] === null) target[key] = {};
    target = target[key] as Record<string, unknown>;
  }
  const last = path[path.length - 1]!;
  if (value === undefined) delete target[last];
  else target[last] = value;
  return line;
}

describe('wellFormedTherapist (the fast path of the per-therapist validation)', () => {
  const cases = variants.flatMap(([path, values]) => values.map((v) => ({ name: `${path.join('.')} = ${JSON.stringify(v)}`, item: withValue(path, v) })));

  it('gives exactly what the zod schema gives, or leaves the line to zod', () => {
    let fast = 0;
    for (const c of cases) {
      const viaZod = scraperTherapistSchema.safeParse(c.item);
      const viaFast = wellFormedTherapist(c.item);
      if (viaFast === null) continue;
      fast++;
      expect(viaZod.success, c.name).toBe(true);
      expect(viaFast, c.name).toStrictEqual(viaZod.data);
    }
    // The fast path must really take the common shapes.
    expect(fast).toBeGreaterThan(cases.length / 3);
  });

  it('a file parses to the same lines with and without the fast path', () => {
    const items = cases.map((c) => c.item);
    const parsed = parseScraperFile(JSON.stringify({ metadata: {}, therapists: items }));
    for (const [i, line] of parsed.lines.entries()) {
      const z = scraperTherapistSchema.safeParse(JSON.parse(JSON.stringify(items[i])));
      expect(line.ok, cases[i]!.name).toBe(z.success);
      if (line.ok && z.success) expect(line.therapist, cases[i]!.name).toStrictEqual(z.data);
    }
  });
});

describe('parseScraperFile: text a file must not bring in', () => {
  const file = (therapists: unknown[], metadata: unknown = {}) => JSON.stringify({ metadata, therapists });

  it('a value of the wrong type is named by its kind, not as missing (and never quoted)', () => {
    const parsed = parseScraperFile(
      file([
        withValue(['basic_info', 'first_name'], 123),
        withValue(['basic_info', 'last_name'], undefined),
        withValue(['location'], 'Aachen Mitte'),
        withValue(['basic_info'], ['x']),
        withValue(['location', 'postal_code'], null),
      ]),
    );
    expect(parsed.lines.map((l) => (l.ok ? 'ok' : l.reason))).toEqual([
      'basic_info.first_name: expected text, got a number',
      'basic_info.last_name: missing',
      'location: expected an object, got text',
      'basic_info: expected an object, got a list',
      'location.postal_code: expected 5 digits, got null',
    ]);
  });

  it('a numeric id too large to read exactly fails that therapist alone; other numeric ids are kept as text', () => {
    // JSON.parse reads both as 12345678901234567000: two therapists would share one id.
    const text = file([therapistLine({ id: 'x1' }), therapistLine({ id: 'x2' }), therapistLine({ id: 'x3' })])
      .replace('"x1"', '12345678901234567890')
      .replace('"x2"', '12345678901234567891')
      .replace('"x3"', '4711');
    const parsed = parseScraperFile(text);
    expect(parsed.lines.map((l) => (l.ok ? `ok ${l.externalId}` : `${l.externalId}: ${l.reason}`))).toEqual([
      'null: id: expected text or a number, got a number too large to read exactly (write it as text)',
      'null: id: expected text or a number, got a number too large to read exactly (write it as text)',
      'ok 4711',
    ]);
  });

  it('a NUL character or an unpaired surrogate fails that therapist alone, naming the field', () => {
    const parsed = parseScraperFile(
      file([therapistLine({ id: 'a', first: 'Nils\u0000' }), therapistLine({ id: 'b', last: 'J\ud800' }), therapistLine({ id: 'c', hours: { 'mo\u0000': ['9-12'] } }), therapistLine({ id: 'd', first: 'Zoë 😀' })]),
    );
    expect(parsed.lines.map((l) => (l.ok ? 'ok' : l.reason))).toEqual([
      'basic_info.first_name: contains a NUL character (\\u0000), which cannot be stored',
      'basic_info.last_name: contains an unpaired surrogate (not valid Unicode), which cannot be stored',
      'telephone_hours: a key: contains a NUL character (\\u0000), which cannot be stored',
      'ok',
    ]);
    expect(parsed.lines[0]!.externalId).toBe('a');
  });

  it('a metadata count too large to read (1e400 reads as infinity) is named so, not as "got a number"', () => {
    const parsed = parseScraperFile('{"metadata": {"total_therapists": 1e400}, "therapists": []}');
    expect(parsed.fileErrors).toEqual(['"metadata": total_therapists: expected a whole number, got a number too large to read']);
  });

  it('metadata with such text is a file-level error and is not used', () => {
    const parsed = parseScraperFile(file([therapistLine()], { postcode_area: '52\u0000' }));
    expect(parsed.metadata).toBeNull();
    expect(parsed.fileErrors).toEqual(['"metadata": postcode_area: contains a NUL character (\\u0000), which cannot be stored (metadata not used)']);
    // Metadata that is itself text, or a list: named so, not by an empty path.
    expect(parseScraperFile('{"metadata": "a\\u0000b", "therapists": []}').fileErrors).toEqual([
      '"metadata": (metadata): contains a NUL character (\\u0000), which cannot be stored (metadata not used)',
    ]);
    expect(parseScraperFile('{"metadata": ["a\\u0000b"], "therapists": []}').fileErrors).toEqual([
      '"metadata": 0: contains a NUL character (\\u0000), which cannot be stored (metadata not used)',
    ]);
    expect(parsed.lines[0]!.ok).toBe(true);
  });

  it('a file that is not JSON is described by line and column, never by its text', () => {
    const text = '{\n  "therapists": [\n    {"basic_info": {"last_name": Vogelsang}}\n  ]\n}';
    expect(() => parseScraperFile(text)).toThrow(new FileFormatError('not valid JSON: line 3, column 34: unexpected character'));
    expect(() => parseScraperFile('{"therapists": [1,]}')).toThrow(new FileFormatError('not valid JSON: line 1, column 19: value expected'));
    expect(() => parseScraperFile('  ')).toThrow(new FileFormatError('not valid JSON: the file is empty'));
    try {
      parseScraperFile(text);
    } catch (err) {
      expect((err as Error).message).not.toContain('Vogelsang');
    }
  });

  it('a "therapists" that is not an array is named by what it is', () => {
    expect(() => parseScraperFile('{"metadata": {}, "therapists": null}')).toThrow(new FileFormatError('"therapists": expected a list, got null'));
    expect(() => parseScraperFile('{"metadata": {}, "therapists": {}}')).toThrow(new FileFormatError('"therapists": expected a list, got an object'));
    expect(() => parseScraperFile('{"metadata": {}}')).toThrow(new FileFormatError('"therapists": missing'));
  });

  it('bytes: a UTF-8 byte order mark is dropped; text in another encoding fails the file', () => {
    const json = file([therapistLine({ last: 'Müller' })]);
    const withBom = decodeScraperFile(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(json)]));
    const parsed = parseScraperFile(withBom);
    expect(parsed.lines[0]!.ok && parsed.lines[0]!.therapist.basic_info.last_name).toBe('Müller');
    expect(() => decodeScraperFile(Buffer.from(json, 'latin1'))).toThrow(/not UTF-8 text/);
  });

  it('salutation in any case; an email address must look like one', () => {
    const parsed = parseScraperFile(file([therapistLine({ salutation: 'herr' }), therapistLine({ salutation: ' FRAU ' }), therapistLine({ email: 'info(at)praxis.de' })]));
    expect(parsed.lines.map((l) => (l.ok ? l.therapist.basic_info.salutation : l.reason))).toEqual(['Herr', 'Frau', 'contact.email: not an email address']);
  });
});

describe('the street limit', () => {
  it('applies to the stored street with its house number (255 characters, the column), not to the street alone', () => {
    const reasonOf = (street: string, house: string | null) => {
      const [l] = parseScraperFile(JSON.stringify({ metadata: {}, therapists: [therapistLine({ street, house })] })).lines;
      return l!.ok ? null : l!.reason;
    };
    expect(reasonOf('x'.repeat(255), null)).toBeNull();
    expect(reasonOf('x'.repeat(250), '1234')).toBeNull();
    expect(reasonOf('x'.repeat(251), '1234')).toBe('location.street: longer than 255 characters with the house number');
    expect(reasonOf('x'.repeat(256), null)).toBe('location.street: longer than 255 characters');
  });
});
