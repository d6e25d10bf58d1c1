import { quoted, showValues } from './registration-schema.js';

/**
 * Registration file names: `{nachname}_{vorname}_{date}_{token}.json`. Names may contain
 * letters with umlauts, spaces, hyphens, apostrophes and dots; in object names they are
 * URL-encoded, which is decoded first: percent-encoding (`M%C3%BCller_...`) and, as PHP's
 * `urlencode` writes it, `+` for a space (a literal plus would be `%2B`). The extension is
 * `.json` in any case. The date is `YYYYMMDD` or `YYYY-MM-DD`, optionally followed by a time
 * (`T143355`, `-14-33-55`).
 */
export interface ParsedFileName {
  nachname: string;
  vorname: string;
  date: string;
  token: string;
}

const NAME = /^[\p{L}\p{M}][\p{L}\p{M} .'’-]*$/u;
const DATE = /^\d{4}-?\d{2}-?\d{2}(?:[T-]?\d{2}[-:]?\d{2}(?:[-:]?\d{2})?)?$/;
const TOKEN = /^[A-Za-z0-9]{6,200}$/;
const EXTENSION = /\.json$/i;

/**
 * `reason`: for staff (ledger, email), the parts of the name quoted; `marked`: the same text
 * with the quoted parts marked (see `withholdValues`), for logs and dead letters.
 */
export type FileNameResult = { ok: true; value: ParsedFileName } | { ok: false; reason: string; marked: string };

function decode(name: string): string {
  const spaced = name.replaceAll('+', ' ');
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced;
  }
}

function realDate(d: string): boolean {
  const digits = d.replaceAll('-', '').slice(0, 8);
  const [y, m, day] = [Number(digits.slice(0, 4)), Number(digits.slice(4, 6)), Number(digits.slice(6, 8))];
  const dt = new Date(Date.UTC(y, m - 1, day));
  return dt.getUTCFullYear() === y && dt.getUTCMonth() === m - 1 && dt.getUTCDate() === day;
}

const RULE = 'expected {nachname}_{vorname}_{date}_{token}.json';

function misfit(why: string): FileNameResult {
  const marked = `file name: ${RULE} (${why})`;
  return { ok: false, reason: showValues(marked), marked };
}

/** Checks the base name (the part after the last `/`) of an object or file name. */
export function parseFileName(objectName: string): FileNameResult {
  const base = decode(objectName.slice(objectName.lastIndexOf('/') + 1)).normalize('NFC');
  if (!EXTENSION.test(base)) return misfit('not a .json file');
  const parts = base.replace(EXTENSION, '').split('_');
  if (parts.length !== 4) {
    // `Probe_Anna_20251201.json`: the name ends with its date, so what is missing is the token.
    const last = parts[parts.length - 1]!;
    const noToken = parts.length === 3 && DATE.test(last) && realDate(last) ? ': the token part is missing after the date' : '';
    return misfit(`${parts.length} ${parts.length === 1 ? 'part' : 'parts'} separated by underscores, expected 4${noToken}`);
  }
  const [nachname, vorname, date, token] = parts as [string, string, string, string];
  if (!NAME.test(nachname)) return misfit(`the nachname part ${quoted(nachname)} is not a name`);
  if (!NAME.test(vorname)) return misfit(`the vorname part ${quoted(vorname)} is not a name`);
  if (!DATE.test(date)) return misfit(`the date part ${quoted(date)} is not YYYYMMDD or YYYY-MM-DD`);
  if (!realDate(date)) return misfit(`the date part ${quoted(date)} is not a real date`);
  if (!TOKEN.test(token)) return misfit(`the token part ${quoted(token)} is not 6 or more letters or digits`);
  return { ok: true, value: { nachname: nachname.trim(), vorname: vorname.trim(), date, token } };
}
