/**
 * Text from files that PostgreSQL must be able to store. PostgreSQL rejects a NUL character
 * (`\u0000`) in `text` and `jsonb`, and JSON holding half of a UTF-16 surrogate pair (no valid
 * Unicode): such an insert fails on every retry. Importers check the parsed file with
 * `unstorableText` and fail it permanently, naming the field.
 */

/**
 * `\u0000` or a surrogate escape in JSON text, or a raw surrogate code unit: the only ways a
 * JSON text can bring in what `unstorableText` looks for (JSON forbids a raw NUL). A cheap
 * scan of the whole text; only a text it matches needs to be searched value by value.
 */
const SUSPECT = /\\u(?:0000|[dD][89a-fA-F])|[\ud800-\udfff]/;

/** Whether the JSON `text` may hold a string `unstorableText` rejects (false: it holds none). */
export function mayHoldUnstorableText(text: string): boolean {
  return SUSPECT.test(text);
}

const UNPAIRED = /[\ud800-\udbff](?![\udc00-\udfff])|(?:^|[^\ud800-\udbff])[\udc00-\udfff]/;

/** Paths longer than this many steps are shortened in a reason (a value nested thousands of levels deep). */
const SHOWN_STEPS = 24;

/** A value met while searching, with the step that led to it (its key or position) and its parent. */
interface Visit {
  v: unknown;
  step: string;
  up: Visit | null;
  /** `v` is the key `step` of `up`, not a value. */
  key: boolean;
}

/** The path of a visit in zod's form (`a.b.0`), `prefix` first; a very deep one shortened in the middle. */
function pathOf(visit: Visit | null, prefix: string): string {
  const steps: string[] = [];
  for (let n = visit; n && n.up; n = n.up) steps.push(n.step);
  steps.reverse();
  if (prefix) steps.unshift(prefix);
  // The steps left out are one `…` (no words: the path stays the same in German reasons).
  if (steps.length > SHOWN_STEPS) return [...steps.slice(0, SHOWN_STEPS - 8), '…', ...steps.slice(-4)].join('.');
  return steps.join('.');
}

/** Why `x` (a string, a key or a number met in the search) cannot be stored; null if it can. */
type Judge = (x: string | number) => string | null;

/** The first value in `v` (keys included, in file order) that `judge` rejects, named by its path; null if none. */
function firstRejected(v: unknown, path: string, root: string, judge: Judge): string | null {
  const stack: Visit[] = [{ v, step: '', up: null, key: false }];
  while (stack.length) {
    const n = stack.pop()!;
    const x = n.v;
    if (typeof x === 'string' || typeof x === 'number') {
      const why = judge(x);
      if (why) return `${n.key ? `${pathOf(n.up, path) || root}: a key` : pathOf(n, path) || root}: ${why}`;
    } else if (typeof x === 'object' && x !== null) {
      // Pushed last to first, so that they are searched first to last (keys before their values).
      if (Array.isArray(x)) {
        for (let i = x.length - 1; i >= 0; i--) stack.push({ v: x[i], step: String(i), up: n, key: false });
      } else {
        const entries = Object.entries(x);
        for (let i = entries.length - 1; i >= 0; i--) {
          const [k, y] = entries[i]!;
          stack.push({ v: y, step: k, up: n, key: false }, { v: k, step: k, up: n, key: true });
        }
      }
    }
  }
  return null;
}

const textJudge: Judge = (x) =>
  typeof x !== 'string'
    ? null
    : x.includes('\u0000')
      ? 'contains a NUL character (\\u0000), which cannot be stored'
      : UNPAIRED.test(x)
        ? 'contains an unpaired surrogate (not valid Unicode), which cannot be stored'
        : null;

/**
 * The first string (or key) in `v` PostgreSQL cannot store as text or JSON: a NUL character
 * or half of a surrogate pair (no valid Unicode). Its path, in the form zod uses
 * (`patient_data.telefon`, `symptome.0`), and why; null when everything can be stored.
 * A key directly under `path` '' is named `<root>: a key`, the value itself `<root>`, and the
 * entries of a list at the top by their position (`0`).
 *
 * Searched with a stack of its own, not by recursion: a value nested thousands of levels deep
 * (JSON.parse reads any depth) overflowed the call stack, which a file import then retried until
 * it gave up, naming neither the file nor the field. A path deeper than 24 steps is shortened.
 */
export function unstorableText(v: unknown, path: string, root = '(value)'): string | null {
  return firstRejected(v, path, root, textJudge);
}

/** What `unstorableNumber` says of a number JSON.parse read as infinity. */
export const NUMBER_TOO_LARGE = 'a number too large to read (it reads as infinity), which cannot be stored';

/**
 * The first number in `v` that JSON.parse read as infinity (`1e400`, 309 digits and more, or a
 * long number with a short exponent),
 * named by its path as `unstorableText` names a string; null if there is none. Stored in a JSON
 * column such a number would become `null`: the import would change what the file said without
 * a word. For values an importer stores as the file carried them.
 */
export function unstorableNumber(v: unknown, path: string, root = '(value)'): string | null {
  return firstRejected(v, path, root, (x) => (typeof x === 'number' && !Number.isFinite(x) ? NUMBER_TOO_LARGE : null));
}

/**
 * An exponent of three digits or a run of 210 digits in JSON text: the only ways it can hold a
 * number JSON.parse reads as infinity (1.8e308 and more). With an exponent of two digits at most
 * (e99) the digits before the point must reach 1.8e209, i.e. 210 of them (`2` and 209 zeros `e99`
 * is infinity; a run of 309 digits alone missed it). A cheap scan; only a text it matches needs
 * `unstorableNumber`.
 */
const LARGE_NUMBER = /\d[eE]\+?\d{3}|\d{210}/;

/** Whether the JSON `text` may hold a number `unstorableNumber` rejects (false: it holds none). */
export function mayHoldUnstorableNumber(text: string): boolean {
  return LARGE_NUMBER.test(text);
}

/**
 * Every character JavaScript's `String.prototype.trim` removes (ECMAScript WhiteSpace and
 * LineTerminator: tab, line feed, vertical tab, form feed, carriage return, space, no-break
 * space, U+1680, U+2000-U+200A, line and paragraph separator, U+202F, U+205F, U+3000, the
 * byte order mark), for trimming in SQL exactly as the code does (`btrim(x, <these>)`).
 */
export const TRIMMED_WHITESPACE =
  '\t\n\u000b\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff';

/**
 * An email address, internationalised ones included (`jörg@müller.de`, `max@example.xn--p1ai`):
 * a dot-atom local part of letters, digits and the RFC 5322 specials (at most 64 characters);
 * a domain of at least two labels of letters and digits, hyphens only inside a label, the last
 * label letters or an `xn--` (punycode) label. No quoted local parts, no IP literals. zod's
 * default pattern is ASCII only, `z.regexes.unicodeEmail` takes `max@example-.de` and `a@b`.
 * Patient registrations and therapist scraper files use it (the weekly emails' send check in
 * libs/weekly is looser on purpose: it must also run in SQL).
 */
const ATOM = "[\\p{L}\\p{M}\\p{N}!#$%&'*+/=?^_`{|}~-]+";
const LABEL = '[\\p{L}\\p{M}\\p{N}](?:[\\p{L}\\p{M}\\p{N}-]{0,61}[\\p{L}\\p{M}\\p{N}])?';
const TLD = '(?:\\p{L}[\\p{L}\\p{M}]+|[xX][nN]--[A-Za-z0-9-]{0,58}[A-Za-z0-9])';
export const EMAIL_ADDRESS = new RegExp(`^(?=[^@]{1,64}@)${ATOM}(?:\\.${ATOM})*@(?:${LABEL}\\.)+${TLD}$`, 'u');
