import { describe, expect, it } from 'vitest';
import { mayHoldUnstorableText, TRIMMED_WHITESPACE, unstorableText } from './index.js';

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
