import { describe, expect, it } from 'vitest';
import { therapistLine } from './fixtures.js';
import { parseScraperFile, scraperTherapistSchema, wellFormedTherapist } from './scraper-file.js';

/** Values tried for each field: valid, edge (trimming, empty, null, missing) and invalid ones. */
const texts = [undefined, null, '', '  ', 'Text', '  padded  ', 42, true, ['x'], { a: 1 }, 'x'.repeat(14), 'x'.repeat(15), 'x'.repeat(51), 'x'.repeat(101), 'x'.repeat(241), 'x'.repeat(256)];
const variants: Array<[string[], unknown[]]> = [
  [['id'], [...texts, 7, 0]],
  [['status'], ['new', 'modified', 'unchanged', 'deleted', 'NEW', '', null, undefined, 3]],
  [['last_modified'], [undefined, null, '2025-07-02', 5]],
  [['basic_info'], [undefined, null, 'x', [], {}]],
  [['basic_info', 'salutation'], ['Herr', 'Frau', ' Frau ', '', null, undefined, 'Divers', 1]],
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
  [['contact', 'email'], texts],
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
