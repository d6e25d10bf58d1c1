import { TRIMMED_WHITESPACE } from '../../text/index.js';

/**
 * SQL for finding a patient by email as the import normalises it (trimmed, NFC, lower case) with
 * the help of two indexes on `patient_service.patienten` (see `patienten` in platform.ts): one on
 * the key of addresses of ASCII only (one byte per character: nearly all; they need neither
 * `normalize` nor a fold beyond ASCII), one on the few others, which are compared in full. Without
 * them the lookup read every patient, ~35 ms of PostgreSQL CPU per import at 50,000 patients.
 */

/** Whether `column` holds ASCII only (one byte per character). */
export const asciiOnlySql = (column: string) => `octet_length(${column}) = char_length(${column})`;

/** Whether `column` holds a character beyond ASCII. */
export const beyondAsciiSql = (column: string) => `octet_length(${column}) <> char_length(${column})`;

/**
 * The key of an address of ASCII only: the ASCII whitespace JavaScript's `trim` removes (the
 * only whitespace such an address can hold) trimmed, lower case (ASCII, whatever the collation).
 */
export const asciiEmailKeySql = (column: string) => `lower(btrim(${column}, U&'\\0009\\000a\\000b\\000c\\000d\\0020'))`;

/**
 * `btrim(x, <set>)` with the characters JavaScript's `trim` removes (tab, line breaks, no-break
 * space, ...; PostgreSQL's `trim(x)` removes only spaces): an email stored with a trailing tab
 * or no-break space compares equal to the one the import normalised in code.
 */
const TRIM_SET = `U&'${[...TRIMMED_WHITESPACE].map((c) => `\\${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}'`;

/**
 * The upper-case letters beyond ASCII (Latin, Greek, Cyrillic) and their lower case, as the
 * import lowers them (`toLocaleLowerCase('de-DE')`), for `translate`: PostgreSQL's `lower`
 * follows the collation, and under `C` (ASCII only) it keeps `JÖRG@…` as `jÖrg@…`, so a
 * registration under the same address in other case would not be found as a duplicate.
 * `translate` maps characters whatever the collation; after `lower` under a Unicode collation it
 * changes nothing.
 */
const [FOLD_FROM, FOLD_TO] = (() => {
  const from: string[] = [];
  const to: string[] = [];
  for (const [lo, hi] of [[0xc0, 0x24f], [0x370, 0x52f], [0x1e00, 0x1eff]] as const) {
    for (let cp = lo; cp <= hi; cp++) {
      const c = String.fromCodePoint(cp);
      const l = c.toLocaleLowerCase('de-DE');
      if (l !== c && [...l].length === 1 && c.normalize('NFC') === c && l.normalize('NFC') === l) {
        from.push(c);
        to.push(l);
      }
    }
  }
  return [from.join(''), to.join('')];
})();
/**
 * The key of an address with characters beyond ASCII: as the import normalises it in code
 * (trimmed as JavaScript trims, NFC, lower case, capitals beyond ASCII folded whatever the collation).
 */
export const fullEmailKeySql = (column: string) => `translate(lower(normalize(btrim(${column}, ${TRIM_SET}), NFC)), '${FOLD_FROM}', '${FOLD_TO}')`;
