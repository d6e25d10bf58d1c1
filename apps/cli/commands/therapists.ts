import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { therapistImportFileStatuses, type TherapistImportCounts, type TherapistImportFileStatus } from '../../../libs/db/schema/fleet-therapist-import.js';
import {
  fileKindOf,
  importTherapistFileNow,
  OlderScrapeError,
  TherapistFileError,
  therapistImportRepo as repo,
  formatShare,
  COUNT_LABELS,
  isOutcomeCount,
  reportOf,
  metadataDisagreementText,
  notReadText,
  type FileReport,
} from '../../../workers/therapist-import/index.js';
import { supersedingFiles } from '../../../libs/db/repositories/therapist-import.js';
import { classifyDropPath } from '../../producers/scraper-layout.js';
import { argPath, CliError, positiveInt, printJson, shownPath, withContext } from '../context.js';
import { displayTime, table } from '../format.js';
import { importKinds } from './imports.js';

function countsBlock(c: TherapistImportCounts, status?: string): string {
  const width = Math.max(...COUNT_LABELS.map(([, l]) => l.length));
  const notRead = status === undefined ? null : notReadText(status);
  if (notRead) return `  ${COUNT_LABELS[0]![1].padEnd(width)}  ${notRead}`;
  return COUNT_LABELS.map(([k, label]) => {
    return `  ${label.padEnd(width)}  ${isOutcomeCount(k) ? `${c[k]} of ${c.total} (${formatShare(c[k], c.total, 'en-GB')})` : String(c[k])}`;
  }).join('\n');
}

/** The report of one file as an operator reads it. */
export function fileReportText(r: FileReport): string {
  const head = `therapist file ${r.path} (import record ${r.fileId}${r.runId ? `, run ${r.runId}` : ''}): ${r.status}${r.alreadyDone ? ' earlier (same content: not imported again)' : ''}${r.durationMs !== null ? ` in ${r.durationMs} ms` : ''}`;
  const lines = [head];
  if (r.reason) lines.push(`reason: ${r.reason}`);
  lines.push(countsBlock(r.counts, r.status));
  if (r.fileErrors.length) lines.push('file-level errors:', ...r.fileErrors.map((e) => `  ${e}`));
  if (r.metadataDisagreements.length) {
    lines.push('metadata disagrees with the file:', ...r.metadataDisagreements.map((d) => `  ${metadataDisagreementText(d)}`));
  }
  if (r.failures.length) lines.push('failed therapists:', ...r.failures.map((f) => `  therapists[${f.index}]${f.externalId ? ` (id ${f.externalId})` : ''}: ${f.reason}`));
  if (r.statusMismatches.length) {
    lines.push(
      'status mismatches:',
      ...r.statusMismatches.map((m) => `  therapists[${m.index}]${m.externalId ? ` (id ${m.externalId})` : ''}: file says ${m.stated}, ${m.found}${m.therapistId ? ` (therapist ${m.therapistId})` : ''}`),
    );
  }
  if (r.replacedCorrections.length) {
    lines.push(
      'staff corrections replaced by the scraper (its new value written):',
      ...r.replacedCorrections.map((c) => `  therapists[${c.index}]${c.externalId ? ` (id ${c.externalId})` : ''}${c.therapistId ? ` (therapist ${c.therapistId})` : ''}: ${c.fields.join(', ')}`),
    );
  }
  return lines.join('\n');
}

/** A report's counts as list columns (null: not counted yet). */
function countColumns(c: repo.TherapistImportFileRow['counts']) {
  return {
    total: c?.total ?? null,
    created: c?.created ?? null,
    updated: c?.updated ?? null,
    unchanged: c?.unchanged ?? null,
    deactivated: c?.deactivated ?? null,
    skipped: c?.skipped ?? null,
    failed: c?.failed ?? null,
  };
}

/**
 * A file as `imports list` shows it. `replacedBy`: the later import of its postcode that replaced
 * a failed or partial file (as `imports show`, /imports and the daily view count it): nothing is
 * left to do for it, and its note begins so.
 */
function fileRow(r: repo.TherapistImportFileRow, replacedBy: number | null) {
  const note = replacedBy === null ? (r.reason ?? '') : `replaced by ${replacedBy}: nothing to do${r.reason ? `; ${r.reason}` : ''}`;
  return { id: r.id, status: r.status, run: r.runId, path: r.path, finished: r.finishedAt, ...countColumns(r.counts), replacedBy, note };
}

// `fleet imports list|show --kind therapist`
importKinds.therapist = {
  statuses: therapistImportFileStatuses,
  listJsonOnly: ['replacedBy'],
  runExists: async (ctx, id) => (await repo.getRun(ctx.database.db, id)) !== null,
  exists: async (ctx, id) => (await repo.getFile(ctx.database.db, id)) !== null,
  async list(ctx, opts) {
    const rows = await repo.listFiles(ctx.database.db, {
      ...(opts.status ? { status: opts.status as TherapistImportFileStatus[] } : {}),
      ...(opts.runId !== undefined ? { runId: opts.runId } : {}),
      limit: opts.limit,
    });
    const replaced = await supersedingFiles(ctx.database.db, rows.filter((r) => r.status === 'failed' || r.status === 'partial').map((r) => r.id));
    return rows.map((r) => fileRow(r, replaced.get(r.id)?.id ?? null));
  },
  async show(ctx, id) {
    const r = await repo.getFile(ctx.database.db, id);
    if (!r) return null;
    const extra = [
      `content hash: ${r.contentHash ?? '–'}`,
      `size: ${r.sizeBytes === null ? '–' : `${r.sizeBytes} bytes`}`,
      `attempts: ${r.attempts}`,
      `discovered: ${displayTime(r.discoveredAt, 'second')}`,
      `started: ${displayTime(r.startedAt, 'second') ?? '–'}`,
      `finished: ${displayTime(r.finishedAt, 'second') ?? '–'}`,
    ];
    if (r.errorCode) extra.push(`error code: ${r.errorCode}`);
    // What an operator can still do about a file that failed its job (its dead letter).
    const run = r.runId === null ? null : await repo.getRun(ctx.database.db, r.runId);
    const deadLetter = repo.deadLetterStateOf(r, run?.trigger);
    if (deadLetter) {
      extra.push(
        deadLetter === 'discarded'
          ? `dead letter: discarded ${displayTime(r.deadLetterDiscardedAt, 'second')} (nothing more to do; a changed file is imported as a file of its own)`
          : `dead letter: waiting for an operator (fleet dlq list --queue therapist-import; requeue once the cause is fixed, or discard)`,
      );
    }
    // As on /imports and the file's page: a failed or partial file a later file of its postcode
    // has replaced needs nothing more.
    if (r.status === 'failed' || r.status === 'partial') {
      const later = (await supersedingFiles(ctx.database.db, [r.id])).get(r.id);
      if (later) extra.push(`replaced since by import record ${later.id} (${later.path}, ${later.status}): nothing to do`);
    }
    return { text: `${fileReportText(reportOf(r))}\n${extra.join('\n')}`, json: r };
  },
};

function runRow(r: repo.TherapistImportRunRow) {
  return {
    run: r.id,
    trigger: r.trigger,
    state: r.state,
    files: r.fileCount,
    started: r.startedAt,
    closed: r.closedAt,
    ...countColumns(r.counts),
    fileErrors: r.counts?.fileErrors ?? null,
  };
}

/** Register after registerImports: adds `import therapist-file` and `imports runs` to its command groups. */
export function registerTherapists(program: Command): void {
  const group = (name: string, description: string) =>
    program.commands.find((c) => c.name() === name) ?? program.command(name).description(description);

  group('import', 'import a file by hand through the same pipeline')
    .command('therapist-file')
    .description('import one therapist scraper file through the same pipeline as the watcher and print its report')
    .argument('<path>', 'the scraper JSON file, named <plz>.json (e.g. var/scraper/20250702/52074.json)')
    .option('--json', 'print the report as JSON')
    .option('--force', 'import it also when an import of its postcode from a newer scrape exists (it writes the older values over the newer ones)')
    .action(async (filePath: string, opts: { json?: boolean; force?: boolean }) => {
      // A folder or a missing path first: "rename it" would be the wrong advice for those.
      const abs = argPath(filePath);
      const kind = await stat(abs).then(
        (s) => (s.isFile() ? null : `not a file (${fileKindOf(s)})`),
        (err: NodeJS.ErrnoException) => `cannot read (${err.code ?? err.message})`,
      );
      if (kind) throw new CliError(`${shownPath(filePath)}: ${kind}`, 2);
      // The postcode comes from the name, as in the drop folder: refuse what the watcher skips.
      if (classifyDropPath(path.basename(filePath)).kind !== 'import') {
        throw new CliError(`${filePath}: name does not fit <plz>.json (the 5-digit postcode of the file's area, e.g. 52074.json); the watcher skips such names too. Rename it and import it again`, 2);
      }
      const report = await withContext(async (ctx) => {
        try {
          return await importTherapistFileNow(ctx, abs, { force: opts.force ?? false });
        } catch (err) {
          // Not imported, as a file-level failure is: exit 1 (the file and its name are fine).
          if (err instanceof OlderScrapeError) throw new CliError(err.message, 1);
          if (err instanceof TherapistFileError) throw new CliError(err.message, 2);
          throw err;
        }
      });
      if (opts.json) printJson(report);
      else {
        process.stdout.write(`${fileReportText(report)}\n`);
        const over = report.forcedOver;
        if (over && !report.alreadyDone) {
          process.stdout.write(`--force: imported over the newer scrape of import record ${over.id} (${over.path}, scrape of ${over.scrapeDate.slice(0, 4)}-${over.scrapeDate.slice(4, 6)}-${over.scrapeDate.slice(6)}): its values are replaced by this file's older ones where they differ\n`);
        }
      }
      // 0 for imported or partial; a file-level failure (or a file not imported) is non-zero.
      if (report.status !== 'imported' && report.status !== 'partial') process.exitCode = 1;
    });

  group('imports', 'import records: what happened to each file')
    .command('runs')
    .description('therapist import runs (files picked up together, one staff summary each), newest first')
    .option('--limit <n>', 'at most this many', '20')
    .option('--json', 'print JSON')
    .action(async (opts: { limit: string; json?: boolean }) => {
      const limit = positiveInt('--limit', opts.limit);
      await withContext(async (ctx) => {
        const runs = await repo.listRuns(ctx.database.db, limit);
        if (opts.json) return printJson(runs);
        if (!runs.length) return void process.stdout.write('no therapist import runs\n');
        process.stdout.write(`${table(runs.map(runRow))}\n\nFiles of a run: fleet imports list --kind therapist --run <id>\n`);
      });
    });
}
