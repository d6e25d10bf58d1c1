import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../libs/log/index.js';
import { SHORT_SIGNING_SECRET, UNCHECKED_SIGNATURES, warnIfSignaturesUnchecked } from './signing-warning.js';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { lines, log: createLogger({ level: 'info', pretty: 'false' }, stream) };
}

describe('the start of a process running the patient import', () => {
  // Signature checking was off by default without a word: REGISTRATION_SIGNING_SECRET is optional.
  it('warns once when no signing secret is set, and not when one is', () => {
    const unset = capture();
    expect(warnIfSignaturesUnchecked({ signingSecret: undefined }, unset.log)).toBe(true);
    expect(unset.lines).toHaveLength(1);
    expect(unset.lines[0]).toMatchObject({ level: 40, msg: UNCHECKED_SIGNATURES, variable: 'REGISTRATION_SIGNING_SECRET' });
    expect(UNCHECKED_SIGNATURES).toBe('registration signatures are not checked: REGISTRATION_SIGNING_SECRET is not set');
    const set = capture();
    expect(warnIfSignaturesUnchecked({ signingSecret: 'x'.repeat(32) }, set.log)).toBe(false);
    expect(set.lines).toEqual([]);
  });

  it('warns when the secret is short (under 32 characters), naming its length but never the secret', () => {
    const short = capture();
    expect(warnIfSignaturesUnchecked({ signingSecret: 's3cret-of-20-chars!!' }, short.log)).toBe(true);
    expect(short.lines).toHaveLength(1);
    expect(short.lines[0]).toMatchObject({ level: 40, msg: SHORT_SIGNING_SECRET, variable: 'REGISTRATION_SIGNING_SECRET', length: 20, minimum: 32 });
    expect(JSON.stringify(short.lines)).not.toContain('s3cret');
  });
});
