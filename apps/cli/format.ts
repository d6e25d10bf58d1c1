import { localTime, localTimeWithOffset } from '../../libs/ops/daily.js';

/**
 * How the CLI prints for people: tables of aligned columns, and times in the staff's zone with
 * its offset (`2026-12-06 02:05:06 +01:00`, as `fleet daily`, the pages and the staff emails; see
 * displayTime), always the same width in a column. `--json` output is not formatted here: it prints the values as they are
 * (ISO times in UTC with their milliseconds).
 */

/**
 * A time as the CLI shows it to people: in the daily view's zone (DAILY_TIME_ZONE) with its UTC
 * offset, as `fleet daily` and the operator pages do (`2026-12-07 18:31 +01:00`; `second`:
 * `2026-12-07 18:31:28 +01:00`, for tables of events in bursts). `--json` keeps ISO UTC.
 */
export function displayTime(d: Date | null | undefined, to: 'minute' | 'second' = 'minute'): string | null {
  if (!d || Number.isNaN(d.getTime())) return null;
  const withOffset = localTimeWithOffset(d);
  return to === 'minute' ? withOffset : `${localTime(d, 'second')} ${withOffset.slice(withOffset.lastIndexOf(' ') + 1)}`;
}

/** A time to the second, UTC; null when there is none (or it is not a valid time). */
export function isoSeconds(d: Date | null | undefined): string | null {
  return d && !Number.isNaN(d.getTime()) ? `${d.toISOString().slice(0, 19)}Z` : null;
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (v instanceof Date) return displayTime(v, 'second')!;
  return String(v);
}

/** Rows of equal keys as aligned columns under their keys (times to the second in the staff's zone, nothing for null). */
export function table(rows: Array<Record<string, unknown>>): string {
  const header = Object.keys(rows[0]!);
  return columns(header, rows.map((r) => header.map((h) => r[h])));
}

/** Cells under a header as aligned columns, two spaces apart, without trailing spaces. */
export function columns(header: string[], rows: unknown[][]): string {
  const cells = [header, ...rows.map((r) => r.map(cell))];
  const widths = header.map((_, i) => Math.max(...cells.map((c) => (c[i] ?? '').length)));
  return cells.map((c) => c.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}
