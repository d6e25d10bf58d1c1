import type {
  MetadataDisagreement,
  ReplacedCorrection,
  StatusMismatch,
  TherapistFailure,
  TherapistImportCounts,
} from '../../libs/db/schema/fleet-therapist-import.js';
import type { ScraperMetadata } from './scraper-file.js';
import type { LineResult } from './plan.js';

export const outcomeKeys = ['created', 'updated', 'unchanged', 'deactivated', 'skipped', 'failed'] as const;

/** Every count of a report with the words staff read next to it, in the order they are shown. */
export const COUNT_LABELS: ReadonlyArray<readonly [keyof TherapistImportCounts, string]> = [
  ['total', 'therapists in the file'],
  ['created', 'created'],
  ['updated', 'updated'],
  ['unchanged', 'unchanged'],
  ['deactivated', 'deactivated'],
  ['skipped', 'skipped (not adult)'],
  ['failed', 'failed'],
  ['statusMismatches', 'status mismatches'],
  ['metadataDisagreements', 'metadata disagreements'],
  ['fileErrors', 'file-level errors'],
];

/**
 * What a report shows instead of its counts when the file's therapists were never read (a skipped
 * file: superseded, too large, a name that does not fit, a copy, changed or removed before its
 * turn): "therapists in the file 0" and "0 of 0 (–)" read as an empty file. null: counted.
 */
export function notReadText(status: string): string | null {
  return status === 'skipped' ? 'not read (the file was skipped: see the reason)' : null;
}

/** The counts that split the file's therapists (they add up to `total`). */
export const isOutcomeCount = (k: keyof TherapistImportCounts): boolean => (outcomeKeys as readonly string[]).includes(k);

export function emptyCounts(): TherapistImportCounts {
  return { total: 0, created: 0, updated: 0, unchanged: 0, deactivated: 0, skipped: 0, failed: 0, statusMismatches: 0, metadataDisagreements: 0, fileErrors: 0 };
}

export class ReportInvariantError extends Error {
  override name = 'ReportInvariantError';
}

/** created + updated + unchanged + deactivated + skipped + failed must equal total, always. */
export function assertCountsAddUp(c: TherapistImportCounts, what: string): void {
  const sum = outcomeKeys.reduce((a, k) => a + c[k], 0);
  if (sum !== c.total) {
    throw new ReportInvariantError(`${what}: categories add up to ${sum}, but the file holds ${c.total} therapists`);
  }
}

export function countLines(lines: LineResult[], fileErrors: string[], disagreements: MetadataDisagreement[]): TherapistImportCounts {
  const c = emptyCounts();
  c.total = lines.length;
  for (const l of lines) {
    c[l.outcome]++;
    if (l.mismatch) c.statusMismatches++;
  }
  c.fileErrors = fileErrors.length;
  c.metadataDisagreements = disagreements.length;
  return c;
}

export function addCounts(a: TherapistImportCounts, b: TherapistImportCounts): TherapistImportCounts {
  const out = { ...a };
  for (const k of Object.keys(out) as Array<keyof TherapistImportCounts>) out[k] = a[k] + b[k];
  return out;
}

export function failuresOf(lines: LineResult[]): TherapistFailure[] {
  return lines.filter((l) => l.outcome === 'failed').map((l) => ({ index: l.index, externalId: l.externalId, reason: l.reason ?? 'unknown' }));
}

export function mismatchesOf(lines: LineResult[]): StatusMismatch[] {
  return lines
    .filter((l) => l.mismatch)
    .map((l) => ({ index: l.index, externalId: l.externalId, therapistId: l.therapistId, stated: l.mismatch!.stated, found: l.mismatch!.found }));
}

export function replacedCorrectionsOf(lines: LineResult[]): ReplacedCorrection[] {
  return lines
    .filter((l) => l.replacedCorrections)
    .map((l) => ({ index: l.index, externalId: l.externalId, therapistId: l.therapistId, fields: l.replacedCorrections! }));
}

/**
 * Metadata counts are reported, not trusted: compares what the metadata says with what the
 * file holds (and the postcode area with the file name's postcode).
 */
export function metadataDisagreements(
  metadata: ScraperMetadata | null,
  statuses: Array<string | null>,
  filePostcode: string | null,
): MetadataDisagreement[] {
  if (!metadata) return [];
  const out: MetadataDisagreement[] = [];
  const found = {
    total_therapists: statuses.length,
    new_therapists: statuses.filter((s) => s === 'new').length,
    modified_therapists: statuses.filter((s) => s === 'modified').length,
    deleted_therapists: statuses.filter((s) => s === 'deleted').length,
  };
  for (const [field, value] of Object.entries(found) as Array<[keyof typeof found, number]>) {
    const stated = metadata[field];
    if (stated !== undefined && stated !== value) out.push({ field, stated, found: value });
  }
  if (metadata.postcode_area && filePostcode) {
    const pattern = metadata.postcode_area.trim();
    const fits = pattern.length === filePostcode.length && [...pattern].every((ch, i) => /[xX*]/.test(ch) || ch === filePostcode[i]);
    if (!fits) out.push({ field: 'postcode_area', stated: pattern, found: filePostcode });
  }
  return out;
}

/** The line status each metadata count stands for (`total_therapists` counts every line). */
const METADATA_STATUS: Readonly<Record<string, string>> = { new_therapists: 'new', modified_therapists: 'modified', deleted_therapists: 'deleted' };

/**
 * What the file holds, as a metadata disagreement compares it, for the CLI and the pages
 * ("5 entries with status \"new\""): the counts are of lines by their `status`, not of what the
 * import did (a `new` line for a therapist we have is updated, not created), as the staff
 * summary says it in German.
 */
export function metadataFoundText(d: MetadataDisagreement): string {
  const entries = (n: unknown) => (n === 1 ? '1 entry' : `${String(n)} entries`);
  if (d.field === 'total_therapists') return entries(d.found);
  if (d.field === 'postcode_area') return `the postcode ${String(d.found)} in its name`;
  const status = METADATA_STATUS[d.field];
  return status ? `${entries(d.found)} with status "${status}"` : String(d.found);
}

/** One metadata disagreement as a line: `metadata new_therapists says 4; the file has 5 entries with status "new"`. */
export function metadataDisagreementText(d: MetadataDisagreement): string {
  const says = `metadata ${d.field} says ${String(d.stated)}`;
  if (d.field === 'postcode_area') return `${says}; the file's name has the postcode ${String(d.found)}`;
  if (d.field === 'total_therapists' || METADATA_STATUS[d.field]) return `${says}; the file has ${metadataFoundText(d)}`;
  return `${says}; found ${metadataFoundText(d)}`;
}

/**
 * A share as staff read it: exact at the ends, never "0%" for something that happened nor
 * "100%" for something that did not always happen (1 in 8,262 -> "<0,1%"), and "–" for 0 of 0.
 * German decimals by default (the staff email); the operator pages pass 'en-GB'.
 */
export function formatShare(part: number, total: number, locale = 'de-DE'): string {
  if (total <= 0) return '–';
  if (part <= 0) return '0%';
  if (part >= total) return '100%';
  const pct = (part / total) * 100;
  const decimal = (n: number) => n.toLocaleString(locale, { minimumFractionDigits: 0, maximumFractionDigits: 1 });
  if (pct < 0.1) return `<${decimal(0.1)}%`;
  if (pct > 99.9) return `>${decimal(99.9)}%`;
  const rounded = Math.round(pct * 10) / 10;
  // Rounding must not reach the ends that are reserved for "none" and "all".
  const clamped = Math.min(99.9, Math.max(0.1, rounded));
  return `${decimal(clamped)}%`;
}

export function formatCount(n: number): string {
  return n.toLocaleString('de-DE');
}

/** "1 Datei", "2 Dateien", "1.200 Dateien": the count known, the noun agrees with it. */
export function countNoun(n: number, one: string, many: string): string {
  return `${formatCount(n)} ${n === 1 ? one : many}`;
}

/** "12 von 8.262 (0,1%)" */
export function countWithShare(part: number, total: number): string {
  return `${formatCount(part)} von ${formatCount(total)} (${formatShare(part, total)})`;
}
