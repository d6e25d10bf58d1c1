/**
 * Which files of the scraper drop folder are imported (paths relative to the folder, `/`):
 *   `<plz>.json`                 flat
 *   `YYYYMMDD/<plz>.json`        dated folder (the newest date wins per postcode)
 *   `urgent/<plz>.json`, `urgent/YYYYMMDD/<plz>.json`   processed first
 * Dot files and temp names (`*.tmp`, `*.part`, `*.swp`, `*~`) are ignored silently (a scraper
 * writing through a temp file and renaming), and so is everything in a folder with such a name
 * (`20250708.tmp/`, filled and then renamed into place); every other name is reported once as
 * skipped.
 */
export type DropEntry =
  | { kind: 'import'; postcode: string; dateFolder: string | null; urgent: boolean }
  | { kind: 'ignore' }
  | { kind: 'misfit'; reason: string };

const LAYOUT = /^(?:(urgent)\/)?(?:(\d{8})\/)?(\d{5})\.json$/;

export function isValidDateFolder(d: string): boolean {
  const y = Number(d.slice(0, 4));
  const m = Number(d.slice(4, 6));
  const day = Number(d.slice(6, 8));
  const dt = new Date(Date.UTC(y, m - 1, day));
  return y >= 2000 && dt.getUTCFullYear() === y && dt.getUTCMonth() === m - 1 && dt.getUTCDate() === day;
}

/** A name a writer gives a file or folder until it is complete. */
const TEMP_NAME = /(\.tmp|\.part|\.partial|\.swp|\.crdownload|~)$/i;

export function classifyDropPath(rel: string): DropEntry {
  const segments = rel.split('/');
  if (segments.some((s) => s.startsWith('.') || TEMP_NAME.test(s))) return { kind: 'ignore' };
  const m = LAYOUT.exec(rel);
  if (!m) {
    return { kind: 'misfit', reason: `name does not fit <plz>.json, YYYYMMDD/<plz>.json or urgent/<plz>.json: ${rel}` };
  }
  const dateFolder = m[2] ?? null;
  if (dateFolder && !isValidDateFolder(dateFolder)) return { kind: 'misfit', reason: `folder ${dateFolder} is not a valid date (YYYYMMDD): ${rel}` };
  return { kind: 'import', postcode: m[3]!, dateFolder, urgent: m[1] === 'urgent' };
}

/** The date of a date folder's own path (`YYYYMMDD` or `urgent/YYYYMMDD`, relative, `/`), else null. */
export function dateFolderOfDir(rel: string): string | null {
  const m = /^(?:urgent\/)?(\d{8})$/.exec(rel);
  return m && isValidDateFolder(m[1]!) ? m[1]! : null;
}

/** Whole days from date folder `older` to `newer` (YYYYMMDD). */
export function daysBetweenDateFolders(older: string, newer: string): number {
  const utc = (d: string) => Date.UTC(Number(d.slice(0, 4)), Number(d.slice(4, 6)) - 1, Number(d.slice(6, 8)));
  return Math.round((utc(newer) - utc(older)) / 86_400_000);
}
