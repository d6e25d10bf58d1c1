import { describe, expect, it } from 'vitest';
import { mayHoldUnstorableNumber, mayHoldUnstorableText, TRIMMED_WHITESPACE, unstorableNumber, unstorableText } from './index.js';

describe('unstorableText', () => {
  it('names the first string PostgreSQL cannot store, by its path', () => {
    expect(unstorableText({ a: { b: ['ok', 'x\u0000'] } }, '')).toBe('a.b.1: contains a NUL character (\\u0000), which cannot be stored');
    expect(unstorableText({ a: 'J\ud800' }, 'data')).toBe('data.a: contains an unpaired surrogate (not valid Unicode), which cannot be stored');
    expect(unstorableText({ a: '\udc00x' }, '')).toBe('a: contains an unpaired surrogate (not valid Unicode), which cannot be stored');
    expect(unstorableText({ a: { 'k\u0000': 1 } }, '')).toBe('a: a key: contains a NUL character (\\u0000), which cannot be stored');
    expect(unstorableText({ 'k\u0000': 1 }, '', '(file)')).toBe('(file): a key: contains a NUL character (\\u0000), which cannot be stored');
    // The value itself, or a list at the top: named by the root's word or the position, never an empty path.
    expect(unstorableText('x\u0000', '', '(metadata)')).toBe('(metadata): contains a NUL character (\\u0000), which cannot be stored');
    expect(unstorableText(['ok', 'x\u0000'], '', '(metadata)')).toBe('1: contains a NUL character (\\u0000), which cannot be stored');
  });

  it('searches a value nested 100,000 levels deep without overflowing the stack, and shortens its path', () => {
    const deep = (inner: unknown) => {
      let v = inner;
      for (let i = 0; i < 100_000; i++) v = [v];
      return v;
    };
    expect(unstorableText({ a: deep('ok') }, '')).toBeNull();
    const found = unstorableText({ a: deep('x\u0000') }, 'data');
    expect(found).toBe(`data.a.${'0.'.repeat(14)}….0.0.0.0: contains a NUL character (\\u0000), which cannot be stored`);
    // A key deep down, and the first of several in file order.
    expect(unstorableText({ a: [{ ok: 1 }, { b: { 'k\u0000': 1 } }], c: 'x\u0000' }, '')).toBe('a.1.b: a key: contains a NUL character (\\u0000), which cannot be stored');
  });

  it('accepts everything else, surrogate pairs (emoji) included', () => {
    expect(unstorableText({ a: 'Zoë 😀', b: [1, null, true, { c: 'ß' }], d: '\u0001\u2028' }, '')).toBeNull();
    expect(unstorableText('😀😀', 'x')).toBeNull();
    expect(unstorableText(42, 'x')).toBeNull();
  });
});

describe('mayHoldUnstorableText', () => {
  it('finds the escapes (and raw surrogates) that can bring such strings in', () => {
    expect(mayHoldUnstorableText(JSON.stringify({ a: 'x\u0000' }))).toBe(true);
    expect(mayHoldUnstorableText(JSON.stringify({ a: 'J\ud800' }))).toBe(true);
    expect(mayHoldUnstorableText('{"a":"\\uD83D\\uDE00"}')).toBe(true);
    expect(mayHoldUnstorableText('{"a":"J\ud800"}')).toBe(true);
    expect(mayHoldUnstorableText(JSON.stringify({ a: 'Zoë', b: '\u0001', c: 'ü' }))).toBe(false);
  });

  it('never misses what unstorableText finds in a parsed JSON text', () => {
    for (const s of ['\u0000', 'a\ud800', '\udfff', 'x\ud83d']) {
      const text = JSON.stringify({ v: s });
      expect(unstorableText(JSON.parse(text), '')).not.toBeNull();
      expect(mayHoldUnstorableText(text)).toBe(true);
    }
  });
});

describe('unstorableNumber', () => {
  it('names the first number JSON.parse read as infinity, by its path', () => {
    expect(unstorableNumber(JSON.parse('{"max_km": 1e400}'), 'patient_data.raeumliche_verfuegbarkeit')).toBe(
      'patient_data.raeumliche_verfuegbarkeit.max_km: a number too large to read (it reads as infinity), which cannot be stored',
    );
    expect(unstorableNumber(JSON.parse('{"a": [1, -1e999]}'), '')).toBe('a.1: a number too large to read (it reads as infinity), which cannot be stored');
    expect(unstorableNumber(JSON.parse(`{"a": ${'9'.repeat(400)}}`), '')).toMatch(/^a: a number too large/);
    expect(unstorableNumber(Infinity, '', '(file)')).toMatch(/^\(file\): a number too large/);
  });

  it('accepts every finite number, and strings that only look large', () => {
    expect(unstorableNumber(JSON.parse('{"a": 1.7e308, "b": -1e-400, "c": "1e400", "d": [0, 30, null]}'), '')).toBeNull();
  });
});

describe('mayHoldUnstorableNumber', () => {
  it('never misses what unstorableNumber finds in a parsed JSON text', () => {
    for (const text of [
      '{"v": 1e400}',
      '{"v": -2E+309}',
      '{"v": 1.5e0400}',
      `{"v": ${'9'.repeat(309)}}`,
      `{"v": -${'9'.repeat(320)}.5}`,
      // A long mantissa with a short exponent: 210 digits and e99, 300 digits and e10.
      `{"v": 2${'0'.repeat(209)}e99}`,
      `{"v": 1${'0'.repeat(299)}E+10}`,
      `{"v": -5${'0'.repeat(249)}.25e60}`,
    ]) {
      expect(unstorableNumber(JSON.parse(text), '')).not.toBeNull();
      expect(mayHoldUnstorableNumber(text)).toBe(true);
    }
    expect(mayHoldUnstorableNumber('{"max_km": 30, "t": "2025-07-05T14:33:55Z", "e": 1e30}')).toBe(false);
  });
});

describe('TRIMMED_WHITESPACE', () => {
  it('is exactly what String.prototype.trim removes', () => {
    const trimmed: string[] = [];
    for (let c = 0; c <= 0xffff; c++) {
      const ch = String.fromCharCode(c);
      if (`x${ch}`.trim() === 'x') trimmed.push(ch);
    }
    expect([...TRIMMED_WHITESPACE].sort()).toEqual(trimmed.sort());
  });
});
