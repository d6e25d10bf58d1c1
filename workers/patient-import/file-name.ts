/**
 * Registration file names: `{nachname}_{vorname}_{date}_{token}.json`. Names may contain
 * letters with umlauts, spaces, hyphens, apostrophes and dots; in object names they are
 * percent-encoded (`M%C3%BCller_...`), which is decoded first. The date is `YYYYMMDD` or
 * `YYYY-MM-DD`, optionally followed by a time (`T143355`, `-14-33-55`).
 */
export interface ParsedFileName {
  nachname: string;
  vorname: string;
  date: string;
  token: string;
}

const NAME = String.raw`[\p{L}\p{M}][\p{L}\p{M} .'’-]*`;
const DATE = String.raw`\d{4}-?\d{2}-?\d{2}(?:[T-]?\d{2}[-:]?\d{2}(?:[-:]?\d{2})?)?`;
const PATTERN = new RegExp(String.raw`^(?<nachname>${NAME})_(?<vorname>${NAME})_(?<date>${DATE})_(?<token>[A-Za-z0-9]{6,200})\.json$`, 'u');

export type FileNameResult = { ok: true; value: ParsedFileName } | { ok: false; reason: string };

function decode(name: string): string {
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}

function realDate(d: string): boolean {
  const digits = d.replaceAll('-', '').slice(0, 8);
  const [y, m, day] = [Number(digits.slice(0, 4)), Number(digits.slice(4, 6)), Number(digits.slice(6, 8))];
  const dt = new Date(Date.UTC(y, m - 1, day));
  return dt.getUTCFullYear() === y && dt.getUTCMonth() === m - 1 && dt.getUTCDate() === day;
}

/** Checks the base name (the part after the last `/`) of an object or file name. */
export function parseFileName(objectName: string): FileNameResult {
  const base = decode(objectName.slice(objectName.lastIndexOf('/') + 1)).normalize('NFC');
  const rule = 'expected {nachname}_{vorname}_{date}_{token}.json';
  if (!base.toLowerCase().endsWith('.json')) return { ok: false, reason: `file name: ${rule} (not a .json file)` };
  const m = PATTERN.exec(base);
  if (!m?.groups) return { ok: false, reason: `file name: ${rule}` };
  const { nachname, vorname, date, token } = m.groups as unknown as ParsedFileName;
  if (!realDate(date)) return { ok: false, reason: `file name: ${rule} (the date part is not a real date)` };
  return { ok: true, value: { nachname: nachname.trim(), vorname: vorname.trim(), date, token } };
}
