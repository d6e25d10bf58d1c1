import { describe, expect, it } from 'vitest';
import { isEmptyValue, norm, normFull, sameValue } from './plan.js';

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
