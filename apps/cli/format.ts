/**
 * How the CLI prints for people: times to the second in UTC (`2026-12-06T01:05:06Z`, always the
 * same width in a column) and tables of aligned columns. `--json` output is not formatted here:
 * it prints the values as they are (times with their milliseconds).
 */

/** A time to the second, UTC; null when there is none (or it is not a valid time). */
export function isoSeconds(d: Date | null | undefined): string | null {
  return d && !Number.isNaN(d.getTime()) ? `${d.toISOString().slice(0, 19)}Z` : null;
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (v instanceof Date) return isoSeconds(v)!;
  return String(v);
}

/** Rows of equal keys as aligned columns under their keys (times to the second, nothing for null). */
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
