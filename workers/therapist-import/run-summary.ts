import type { TherapistImportCounts } from '../../libs/db/schema/fleet-therapist-import.js';
import { SKIP_REASON_START, type ReplacingFile, type TherapistImportFileRow, type TherapistImportRunRow } from '../../libs/db/repositories/therapist-import.js';
import { renderStaffEmail, type StaffListParagraph } from '../../libs/mail/staff.js';
import { reasonDe } from './reason-de.js';
import { addCounts, assertCountsAddUp, countNoun, countWithShare, emptyCounts, formatCount } from './report.js';

/** Run totals: the sum of its files' counts (skipped files, e.g. names that do not fit, hold no therapists). */
export function summarizeRunFiles(files: TherapistImportFileRow[]): { counts: TherapistImportCounts; fileStatusCounts: Record<string, number> } {
  let counts = emptyCounts();
  const fileStatusCounts: Record<string, number> = {};
  for (const f of files) {
    fileStatusCounts[f.status] = (fileStatusCounts[f.status] ?? 0) + 1;
    if (f.counts) counts = addCounts(counts, f.counts);
  }
  assertCountsAddUp(counts, 'run totals');
  return { counts, fileStatusCounts };
}

const MAX_LISTED = 30;

/** What the import found for a status mismatch (the report's English, as the CLI and pages show it), in the email's German. */
export function mismatchFoundDe(found: string): string {
  const fixed: Record<string, string> = {
    'already on the platform': 'schon auf der Plattform',
    'not on the platform: created': 'nicht auf der Plattform, daher neu angelegt',
    'not on the platform': 'nicht auf der Plattform',
    'no longer on the platform': 'nicht mehr auf der Plattform',
    'deleted by the scraper earlier: stays inactive': 'früher vom Scraper gelöscht, bleibt inaktiv',
    'deleted by the scraper earlier: not re-created': 'früher vom Scraper gelöscht, daher nicht neu angelegt',
    'removed from the platform earlier: not re-created': 'früher von der Plattform entfernt, daher nicht neu angelegt',
  };
  const kept = /^(\S+) on the platform: status kept$/.exec(found);
  return fixed[found] ?? (kept ? `auf der Plattform ${kept[1]}, Status bleibt` : found);
}

/** What the metadata says next to what the file holds: the counts are of lines by their `status`, not of what the import did. */
function metadataDisagreementDe(d: { field: string; stated: unknown; found: unknown }): string {
  const lines = (n: unknown) => (n === 1 ? '1 Eintrag' : `${String(n)} Einträge`);
  const status: Record<string, string> = { new_therapists: 'new', modified_therapists: 'modified', deleted_therapists: 'deleted' };
  if (d.field === 'total_therapists') return `total_therapists ${String(d.stated)}, die Datei hat ${lines(d.found)}`;
  if (d.field === 'postcode_area') return `postcode_area ${String(d.stated)} passt nicht zur Postleitzahl ${String(d.found)} im Dateinamen`;
  const s = status[d.field];
  return s ? `${d.field} ${String(d.stated)}, die Datei hat ${lines(d.found)} mit status „${s}“` : `${d.field} ${String(d.stated)}, gefunden ${String(d.found)}`;
}

/** "inzwischen ersetzt durch #17 (10247.json, importiert): nichts zu tun" */
function replacedText(later: ReplacingFile): string {
  return `inzwischen ersetzt durch #${later.id} (${later.path}, ${OUTCOME_DE[later.status] ?? later.status}): nichts zu tun`;
}

const berlin = new Intl.DateTimeFormat('de-DE', { timeZone: 'Europe/Berlin', dateStyle: 'medium', timeStyle: 'medium' });

/**
 * The staff summary of a closed run (German, as staff read it), also when all went well.
 * `runPageUrl`: the run's report page (DASHBOARD_URL), linked; without it the CLI command is named.
 */
/** A `partial` file none of whose therapists went in (all failed, or failed and skipped): not "partly" imported. */
function noTherapistTaken(f: TherapistImportFileRow): boolean {
  if (f.status !== 'partial' || !f.counts || f.counts.failed === 0) return false;
  return f.counts.created + f.counts.updated + f.counts.unchanged + f.counts.deactivated === 0;
}

const OUTCOME_DE: Record<string, string> = { imported: 'importiert', partial: 'teilweise importiert' };

/**
 * `replacedBy`: of the run's files not (fully) imported, those a later file has replaced since
 * (`supersedingFiles`, as the pages and the CLI say "replaced since by …: nothing to do"): they
 * are listed with that file and are no problem of the run.
 */
export function renderRunSummary(
  run: TherapistImportRunRow,
  files: TherapistImportFileRow[],
  opts: { runPageUrl?: string; followUp?: boolean; replacedBy?: ReadonlyMap<number, ReplacingFile> } = {},
) {
  // Files by name, as staff look them up in the folder (registration order put 11004 before 11003).
  files = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.id - b.id));
  const c = run.counts ?? emptyCounts();
  const n = (s: string) => files.filter((f) => f.status === s).length;
  const replacedBy = opts.replacedBy ?? new Map<number, ReplacingFile>();
  const open = (f: TherapistImportFileRow) => !replacedBy.has(f.id);
  const replacedProblems = files.filter((f) => (f.status === 'failed' || f.status === 'partial') && !open(f));
  // What still needs a look: the run's totals (the sum of its files, as on the pages) less what replaced files hold.
  const openFailed = files.filter(open).reduce((sum, f) => sum + (f.counts?.failed ?? 0), 0);
  const problemFiles = files.filter((f) => (f.status === 'failed' || f.status === 'partial') && open(f));
  const noneTaken = files.filter(noTherapistTaken).length;
  // Skipped: a name that does not fit (no postcode: staff must rename it), superseded by a newer
  // date folder (normal), changed before its turn (its new content is a file of its own) or
  // removed before its turn (not imported: staff may want it back).
  const skipped = files.filter((f) => f.status === 'skipped');
  // A misfit renamed to its right name since (the same content imported): nothing to do.
  const renamedMisfits = skipped.filter((f) => f.postcode === null && !open(f));
  const misfits = skipped.filter((f) => f.postcode === null && open(f));
  const superseded = skipped.filter((f) => f.postcode !== null && f.reason?.startsWith(SKIP_REASON_START.superseded));
  const removedAll = skipped.filter((f) => f.postcode !== null && f.reason?.includes('was removed before it was imported'));
  const unreadableAll = skipped.filter((f) => f.postcode !== null && f.reason?.startsWith(SKIP_REASON_START.unreadable));
  const sameContent = skipped.filter((f) => f.postcode !== null && f.reason?.startsWith(SKIP_REASON_START.sameContent));
  const tooLargeAll = skipped.filter((f) => f.postcode !== null && f.reason?.startsWith(SKIP_REASON_START.tooLarge));
  const changed = skipped.filter(
    (f) => f.postcode !== null && !superseded.includes(f) && !removedAll.includes(f) && !unreadableAll.includes(f) && !sameContent.includes(f) && !tooLargeAll.includes(f),
  );
  // Removed, unreadable or too large, and a later file of the postcode imported since: nothing to do (as on /daily and /imports).
  const replacedSkipped = [...removedAll, ...unreadableAll, ...tooLargeAll].filter((f) => !open(f));
  const removed = removedAll.filter(open);
  const unreadable = unreadableAll.filter(open);
  const tooLarge = tooLargeAll.filter(open);
  const openFileErrors = files.filter(open).reduce((sum, f) => sum + (f.counts?.fileErrors ?? 0), 0);
  const allWell = problemFiles.length === 0 && misfits.length === 0 && removed.length === 0 && unreadable.length === 0 && tooLarge.length === 0 && openFailed === 0 && openFileErrors === 0;
  // Only what went wrong, by kind: "0 Dateien nicht lesbar" next to one failed therapist is noise.
  // A file not imported is counted once: its own errors are why (they are listed below).
  const errorsInImported = files.filter((f) => f.status !== 'failed' && open(f)).reduce((sum, f) => sum + (f.counts?.fileErrors ?? 0), 0);
  const failedFiles = problemFiles.filter((f) => f.status === 'failed').length;
  const problems = [
    openFailed ? `${countNoun(openFailed, 'Therapeut', 'Therapeuten')} fehlgeschlagen` : '',
    failedFiles ? `${countNoun(failedFiles, 'Datei', 'Dateien')} nicht importiert` : '',
    errorsInImported ? `${formatCount(errorsInImported)} Fehler auf Dateiebene in importierten Dateien` : '',
    misfits.length ? `${countNoun(misfits.length, 'Datei', 'Dateien')} nicht übernommen (Name passt nicht)` : '',
    removed.length ? `${countNoun(removed.length, 'Datei', 'Dateien')} vor dem Import entfernt` : '',
    unreadable.length ? `${countNoun(unreadable.length, 'Datei', 'Dateien')} nicht lesbar` : '',
    tooLarge.length ? `${countNoun(tooLarge.length, 'Datei', 'Dateien')} zu groß` : '',
  ].filter(Boolean);
  const runName = `Lauf ${run.id}${opts.followUp ? ' (Nachtrag)' : ''}`;
  const replacedFiles = files.filter((f) => !open(f) && (f.status !== 'skipped' || f.postcode === null || replacedSkipped.includes(f)));
  const wellDone = replacedFiles.length ? `nichts offen (${countNoun(replacedFiles.length, 'Datei', 'Dateien')} inzwischen ersetzt)` : 'ohne Fehler';
  // A copy of a content imported before (urgent/10115.json = 10115.json) is not imported again: said so, not "0 Therapeuten, ohne Fehler".
  const earlierOf = (f: TherapistImportFileRow) => /^same content as .+? \(file (\d+), \w+\): /.exec(f.reason ?? '')?.[1];
  const earlierIds = [...new Set(sameContent.map(earlierOf))];
  const copies = sameContent.length
    ? `${countNoun(sameContent.length, 'Datei', 'Dateien')} nicht erneut importiert (${earlierIds.length === 1 && earlierIds[0] ? `gleicher Inhalt wie #${earlierIds[0]}` : 'Inhalt schon bekannt'})`
    : '';
  const subject = allWell
    ? `Therapeuten-Import ${runName}: ${
        sameContent.length === files.length
          ? copies
          : `${countNoun(files.length, 'Datei', 'Dateien')}, ${countNoun(c.total, 'Therapeut', 'Therapeuten')}, ${wellDone}${copies ? `, ${copies}` : ''}`
      }`
    : `Therapeuten-Import ${runName}: ${problems.join(', ') || `${countNoun(problemFiles.length, 'Datei', 'Dateien')} mit Fehlern`}`;

  const paragraphs: Array<string | StaffListParagraph> = [];
  if (opts.followUp) {
    paragraphs.push(
      'Nachtrag: Nach einem Fehlschlag wurde eine Datei dieses Laufs erneut verarbeitet. Diese Zusammenfassung ersetzt die frühere dieses Laufs; die Zahlen gelten für den ganzen Lauf.',
    );
  }
  for (const f of problemFiles.slice(0, MAX_LISTED)) {
    // The parser's reasons in German (reasonDe); field paths as written in the file, where staff look them up.
    // A file whose therapists all went in and only has errors of its own (e.g. its metadata) is not "partly" imported.
    const therapistsFailed = f.counts?.failed ?? 0;
    const noneIn = noTherapistTaken(f);
    const state =
      f.status === 'failed'
        ? 'nicht importiert'
        : noneIn
          ? `nicht importiert, ${therapistsFailed === f.counts!.total ? 'alle Therapeuten fehlgeschlagen' : 'kein Therapeut übernommen'}`
          : therapistsFailed
            ? 'teilweise importiert'
            : 'importiert, mit Fehlern auf Dateiebene';
    const items: string[] = [];
    if (f.status === 'partial') {
      if (therapistsFailed) items.push(`${formatCount(therapistsFailed)} von ${countNoun(f.counts!.total, 'Therapeut', 'Therapeuten')} fehlgeschlagen`);
    } else if (f.reason && !f.fileErrors.includes(f.reason)) {
      items.push(`Grund: ${reasonDe(f.reason)}`);
    }
    const own = `file ${f.path}: `;
    for (const e of f.fileErrors.slice(0, 3)) items.push(`Fehler: ${reasonDe(e.startsWith(own) ? e.slice(own.length) : e)}`);
    for (const fl of f.failures.slice(0, 5)) items.push(`Eintrag therapists[${fl.index}]${fl.externalId ? ` (ID ${fl.externalId})` : ''}: ${reasonDe(fl.reason)}`);
    if (f.failures.length > 5) items.push(`… und ${f.failures.length - 5} weitere`);
    paragraphs.push({ lead: `Datei ${f.path} (#${f.id}): ${state}`, items });
  }
  for (const f of replacedProblems.slice(0, MAX_LISTED)) {
    const later = replacedBy.get(f.id)!;
    const state = f.status === 'failed' || noTherapistTaken(f) ? 'nicht importiert' : f.counts?.failed ? 'teilweise importiert' : 'importiert, mit Fehlern auf Dateiebene';
    paragraphs.push(`Datei ${f.path} (#${f.id}): ${state}, ${replacedText(later)}`);
  }
  if (replacedProblems.length > MAX_LISTED) paragraphs.push(`… und ${replacedProblems.length - MAX_LISTED} weitere inzwischen ersetzte Dateien.`);
  for (const f of replacedSkipped.slice(0, MAX_LISTED)) {
    const why = removedAll.includes(f) ? 'vor dem Import entfernt' : unreadableAll.includes(f) ? 'nicht lesbar' : 'zu groß, nicht gelesen';
    paragraphs.push(`Datei ${f.path} (#${f.id}): ${why}, ${replacedText(replacedBy.get(f.id)!)}`);
  }
  if (replacedSkipped.length > MAX_LISTED) paragraphs.push(`… und ${replacedSkipped.length - MAX_LISTED} weitere inzwischen ersetzte Dateien.`);
  // Without the dashboard, the CLI command that lists this run's files (all runs' newest 50 would hide them).
  const cli = `fleet imports list --kind therapist --run ${run.id}${files.length > 50 ? ` --limit ${files.length}` : ''}`;
  if (problemFiles.length > MAX_LISTED) {
    paragraphs.push(`… und ${problemFiles.length - MAX_LISTED} weitere Dateien mit Fehlern (${opts.runPageUrl ? 'siehe Bericht im Browser' : cli}).`);
  }
  for (const f of misfits.slice(0, MAX_LISTED)) {
    paragraphs.push(`Nicht übernommen: ${f.path} — Name oder Ordner passen nicht zu <plz>.json, JJJJMMTT/<plz>.json oder urgent/<plz>.json; bitte umbenennen oder verschieben, dann wird die Datei importiert.`);
  }
  if (misfits.length > MAX_LISTED) paragraphs.push(`… und ${misfits.length - MAX_LISTED} weitere nicht übernommene Dateien.`);
  for (const f of renamedMisfits.slice(0, MAX_LISTED)) {
    const later = replacedBy.get(f.id)!;
    paragraphs.push(`Name passte nicht: ${f.path} — inzwischen unter dem richtigen Namen importiert: #${later.id} (${later.path}, ${OUTCOME_DE[later.status] ?? later.status}); nichts zu tun.`);
  }
  if (renamedMisfits.length > MAX_LISTED) paragraphs.push(`… und ${renamedMisfits.length - MAX_LISTED} weitere inzwischen umbenannte Dateien.`);
  if (superseded.length) {
    const shown = superseded.slice(0, 10).map((f) => f.path).join(', ');
    paragraphs.push(`Übersprungen, weil ein neuerer Datumsordner dieselbe Postleitzahl enthält: ${shown}${superseded.length > 10 ? ` und ${superseded.length - 10} weitere` : ''}.`);
  }
  const listed = (fs: TherapistImportFileRow[]) => `${fs.slice(0, 10).map((f) => f.path).join(', ')}${fs.length > 10 ? ` und ${fs.length - 10} weitere` : ''}`;
  if (removed.length) {
    paragraphs.push(`Nicht importiert, weil die Datei vor dem Import entfernt wurde: ${listed(removed)}. Wieder abgelegt, wird sie importiert.`);
  }
  if (unreadable.length) {
    paragraphs.push(`Nicht lesbar (Zugriffsrechte?), daher nicht importiert: ${listed(unreadable)}. Sobald die Datei lesbar ist, wird sie importiert.`);
  }
  for (const f of tooLarge.slice(0, 10)) {
    const mb = f.sizeBytes === null ? '' : ` (${(f.sizeBytes / 1024 / 1024).toLocaleString('de-DE', { minimumFractionDigits: 1, maximumFractionDigits: 1 })} MB)`;
    paragraphs.push(
      `Zu groß, daher nicht gelesen: ${f.path}${mb}, mehr als SCRAPER_FILE_MAX_MB erlaubt. Eine Postleitzahl-Datei hat etwa 0,1 MB; bitte prüfen, was der Scraper geschrieben hat. Kleiner abgelegt, oder mit höherer Grenze nach einem Neustart, wird sie importiert.`,
    );
  }
  if (tooLarge.length > 10) paragraphs.push(`… und ${tooLarge.length - 10} weitere zu große Dateien.`);
  for (const f of sameContent.slice(0, 10)) {
    // The reason names the file with the same content: "same content as 20250702/52074.json (file 17, imported): …".
    const earlier = /^same content as (.+?)(?: \(file (\d+), (\w+)\))?: /.exec(f.reason ?? '');
    const which = earlier?.[1] === 'an earlier file' ? 'eine frühere Datei' : (earlier?.[1] ?? 'eine andere Datei');
    const id = earlier?.[2] ? ` (#${earlier[2]})` : '';
    if (earlier?.[3] === 'failed') {
      // Staff must not read "not imported again" as "already on the platform".
      paragraphs.push(
        `Nicht importiert: ${f.path} hat denselben Inhalt wie ${which}${id}, deren Import fehlgeschlagen ist (fleet imports show ${earlier[2]} --kind therapist); derselbe Inhalt wird nicht noch einmal versucht, eine korrigierte Datei wird importiert.`,
      );
    } else {
      const outcome = earlier?.[3] === 'imported' ? 'importiert' : earlier?.[3] === 'partial' ? 'teilweise importiert' : null;
      paragraphs.push(`Nicht erneut importiert: ${f.path} hat denselben Inhalt wie ${which}${outcome ? `${id.slice(0, -1)}, ${outcome})` : id}; ein Inhalt wird nur einmal importiert.`);
    }
  }
  if (sameContent.length > 10) paragraphs.push(`… und ${sameContent.length - 10} weitere Dateien mit schon bekanntem Inhalt.`);
  if (changed.length) {
    paragraphs.push(`Vor dem Import geändert (der neue Inhalt wird als eigene Datei importiert): ${listed(changed)}.`);
  }
  // Not an error (an area may have no therapists), but a scraper that wrote an empty list by mistake looks the same.
  const empty = files.filter((f) => f.status === 'imported' && f.counts !== null && f.counts.total === 0);
  if (empty.length) {
    paragraphs.push(`Ohne Therapeuten (leere Liste in der Datei): ${listed(empty)}. Stimmt das nicht, bitte den Scraper prüfen.`);
  }
  const disagreeing = files.filter((f) => f.metadataDisagreements.length > 0);
  for (const f of disagreeing.slice(0, 10)) {
    paragraphs.push(
      `Metadaten von ${f.path} stimmen nicht mit der Datei überein: ${f.metadataDisagreements.map(metadataDisagreementDe).join('; ')}`,
    );
  }
  // Counted as "Status-Abweichungen" in the totals: which therapists, so staff need not open each file.
  const mismatching = files.filter((f) => f.statusMismatches.length > 0);
  for (const f of mismatching.slice(0, 10)) {
    // One entry a line: run together with ";" they were one long line.
    const items = f.statusMismatches.slice(0, 10).map((m) => `therapists[${m.index}]${m.externalId ? ` (ID ${m.externalId})` : ''}: Datei sagt „${m.stated}“, gefunden: ${mismatchFoundDe(m.found)}`);
    if (f.statusMismatches.length > 10) items.push(`… und ${f.statusMismatches.length - 10} weitere`);
    paragraphs.push({ lead: `Status-Abweichungen in ${f.path} (#${f.id}):`, items });
  }
  if (mismatching.length > 10) paragraphs.push(`… und Status-Abweichungen in ${mismatching.length - 10} weiteren Dateien.`);
  // Not an error: the scraper's newer value was written over a value staff had set; staff may want to check it.
  const replacing = files.filter((f) => f.replacedCorrections.length > 0);
  const replaced = replacing.reduce((sum, f) => sum + f.replacedCorrections.length, 0);
  for (const f of replacing.slice(0, 10)) {
    const entries = f.replacedCorrections
      .slice(0, 5)
      .map((r) => {
        const who = [r.externalId ? `ID ${r.externalId}` : '', r.therapistId ? `Therapeut ${r.therapistId}` : ''].filter(Boolean).join(', ');
        return `therapists[${r.index}]${who ? ` (${who})` : ''}: ${r.fields.join(', ')}`;
      })
      .join('; ');
    paragraphs.push(
      `Korrekturen auf der Plattform durch neue Werte des Scrapers ersetzt, in ${f.path} (#${f.id}): ${entries}${f.replacedCorrections.length > 5 ? ` und ${f.replacedCorrections.length - 5} weitere` : ''}. Bitte prüfen, ob die Korrektur noch gilt.`,
    );
  }
  if (replacing.length > 10) paragraphs.push(`… und ${replacing.length - 10} weitere Dateien mit ersetzten Korrekturen.`);
  if (allWell) {
    paragraphs.push(
      replacedFiles.length
        ? `Nichts offen: ${replacedFiles.length === 1 ? 'die Datei mit Problemen ist' : 'die Dateien mit Problemen sind'} inzwischen ersetzt.`
        : 'Alle Dateien wurden ohne Fehler verarbeitet.',
    );
  }
  paragraphs.push(opts.runPageUrl ? `Bericht im Browser (jede Datei mit allen Fehlern): ${opts.runPageUrl}` : `Details: ${cli}`);

  // Skipped files are never read as lists of therapists: their "0" is no count. A run that read none says so.
  const notRead = n('skipped');
  const noneRead = notRead === files.length;
  const share = (part: number) => (noneRead ? 'nicht gelesen' : countWithShare(part, c.total));
  return renderStaffEmail({
    subject,
    heading: `Therapeuten-Import, ${runName}`,
    rows: [
      ['Dateien', `${formatCount(files.length)} (importiert ${n('imported')}, teilweise ${n('partial') - noneTaken}${noneTaken ? `, ohne übernommene Therapeuten ${noneTaken}` : ''}, fehlgeschlagen ${n('failed')}, übersprungen ${n('skipped')})`],
      [
        'Therapeuten in den Dateien',
        noneRead
          ? `nicht gelesen (${files.length === 1 ? 'die Datei wurde' : 'die Dateien wurden'} übersprungen)`
          : `${formatCount(c.total)}${notRead ? ` (${countNoun(notRead, 'übersprungene Datei', 'übersprungene Dateien')} nicht gelesen)` : ''}`,
      ],
      ['Neu angelegt', share(c.created)],
      ['Aktualisiert', share(c.updated)],
      ['Unverändert', share(c.unchanged)],
      ['Deaktiviert', share(c.deactivated)],
      ['Übersprungen (nicht für Erwachsene)', share(c.skipped)],
      ['Fehlgeschlagen', `${share(c.failed)}${c.failed > openFailed ? `, davon ${formatCount(c.failed - openFailed)} in inzwischen ersetzten Dateien` : ''}`],
      ['Status-Abweichungen', formatCount(c.statusMismatches)],
      ['Metadaten-Abweichungen', formatCount(c.metadataDisagreements)],
      ['Fehler auf Dateiebene', formatCount(c.fileErrors)],
      ['Korrekturen vom Scraper ersetzt', formatCount(replaced)],
      ['Beginn', berlin.format(run.startedAt)],
      ['Ende', run.closedAt ? berlin.format(run.closedAt) : null],
    ],
    paragraphs,
  });
}
