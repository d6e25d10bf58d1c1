import { describe, expect, it } from 'vitest';
import { isEmptyValue, sameValue } from './plan.js';

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
