import { describe, expect, it } from 'vitest';
import type { TherapistImportFileRow, TherapistImportRunRow } from '../../libs/db/repositories/therapist-import.js';
import { emptyCounts } from './report.js';
import { readFileSync } from 'node:fs';
import { MISMATCH_FOUND, statusKept } from './plan.js';
import { mismatchFoundDe, renderRunSummary, summarizeRunFiles } from './run-summary.js';

function file(id: number, over: Partial<TherapistImportFileRow>): TherapistImportFileRow {
  return {
    id,
    runId: 7,
    path: `20261203/5206${id}.json`,
    postcode: `5206${id}`,
    dateFolder: '20261203',
    urgent: false,
    contentHash: 'a'.repeat(64),
    sizeBytes: 1000,
    statKey: null,
    status: 'imported',
    reason: null,
    fileErrors: [],
    metadataDisagreements: [],
    failures: [],
    statusMismatches: [],
    replacedCorrections: [],
    counts: { ...emptyCounts(), total: 2, created: 2 },
    attempts: 1,
    discoveredAt: new Date('2026-12-03T14:00:00Z'),
    startedAt: new Date('2026-12-03T14:00:01Z'),
    finishedAt: new Date('2026-12-03T14:00:02Z'),
    durationMs: 40,
    errorCode: null,
    deadLetterDiscardedAt: null,
    ...over,
  };
}

function run(files: TherapistImportFileRow[]): TherapistImportRunRow {
  const { counts, fileStatusCounts } = summarizeRunFiles(files);
  return {
    id: 7,
    trigger: 'watcher',
    state: 'closed',
    startedAt: new Date('2026-12-03T14:00:00Z'),
    sealedAt: new Date('2026-12-03T14:00:10Z'),
    closedAt: new Date('2026-07-01T22:30:05Z'),
    fileCount: files.length,
    fileStatusCounts,
    counts,
    summaryDeliveryId: null,
  };
}

describe('therapist import run summary (staff email)', () => {
  const partial = file(2, {
    status: 'partial',
    reason: '1 of 3 therapists failed',
    counts: { ...emptyCounts(), total: 3, created: 2, failed: 1 },
    failures: [{ index: 2, externalId: 'x2c', reason: 'basic_info.last_name: missing' }],
  });

  it('names only the kinds of problem that happened in the subject', () => {
    const files = [file(1, {}), partial];
    expect(renderRunSummary(run(files), files).subject).toBe('Therapeuten-Import Lauf 7: 1 Therapeut fehlgeschlagen');
    const unreadable = file(3, { status: 'failed', reason: 'not valid JSON', counts: { ...emptyCounts(), fileErrors: 1 }, fileErrors: ['not valid JSON'] });
    const more = [...files, unreadable];
    // the unreadable file's own error is why it was not imported: not counted a second time
    expect(renderRunSummary(run(more), more).subject).toBe('Therapeuten-Import Lauf 7: 1 Therapeut fehlgeschlagen, 1 Datei nicht importiert');
    const withMetadataError = [...more, file(4, { path: '52068.json', status: 'partial', counts: { ...emptyCounts(), total: 1, created: 1, fileErrors: 1 }, fileErrors: ['"metadata": missing'] })];
    expect(renderRunSummary(run(withMetadataError), withMetadataError).subject).toBe(
      'Therapeuten-Import Lauf 7: 1 Therapeut fehlgeschlagen, 1 Datei nicht importiert, 1 Fehler auf Dateiebene in importierten Dateien',
    );
    const good = [file(1, {})];
    expect(renderRunSummary(run(good), good).subject).toBe('Therapeuten-Import Lauf 7: 1 Datei, 2 Therapeuten, ohne Fehler');
  });

  it('names the staff corrections the scraper\'s newer values replaced (field names only), without calling the run faulty', () => {
    const f = file(3, {
      path: '20261203/52063.json',
      counts: { ...emptyCounts(), total: 2, updated: 2 },
      replacedCorrections: [
        { index: 0, externalId: 'p1', therapistId: 11, fields: ['telefon'] },
        { index: 1, externalId: null, therapistId: 12, fields: ['email', 'ort'] },
      ],
    });
    const files = [file(1, {}), f];
    const m = renderRunSummary(run(files), files);
    expect(m.subject).toBe('Therapeuten-Import Lauf 7: 2 Dateien, 4 Therapeuten, ohne Fehler');
    expect(m.text).toContain('Korrekturen vom Scraper ersetzt:');
    expect(m.text).toMatch(/Korrekturen vom Scraper ersetzt:\s+2/);
    expect(m.text).toContain(
      'Korrekturen auf der Plattform durch neue Werte des Scrapers ersetzt, in 20261203/52063.json (#3): therapists[0] (ID p1, Therapeut 11): telefon; therapists[1] (Therapeut 12): email, ort. Bitte prüfen, ob die Korrektur noch gilt.',
    );
  });

  it('lists files whose names do not fit (staff must rename them) and files a newer date folder superseded', () => {
    const misfit = file(4, { path: '20261203/notes.txt', postcode: null, dateFolder: null, status: 'skipped', reason: 'name does not fit', counts: null, contentHash: null });
    const older = file(5, { path: '20261201/52065.json', status: 'skipped', reason: 'superseded by the newer folder 20261203/52065.json', counts: null });
    const files = [file(1, {}), misfit, older];
    const m = renderRunSummary(run(files), files);
    expect(m.subject).toBe('Therapeuten-Import Lauf 7: 1 Datei nicht übernommen (Name passt nicht)');
    expect(m.text).toContain('Nicht übernommen: 20261203/notes.txt');
    expect(m.text).toContain('Übersprungen, weil ein neuerer Datumsordner dieselbe Postleitzahl enthält: 20261201/52065.json.');
    expect(m.text).toContain('übersprungen 2');
    const onlyOlder = [file(1, {}), older];
    expect(renderRunSummary(run(onlyOlder), onlyOlder).subject).toContain('ohne Fehler');
  });

  it('does not call a file that changed or was removed before its turn superseded by a newer date folder', () => {
    const changedFile = file(5, { path: '52065.json', dateFolder: null, status: 'skipped', reason: 'file 52065.json changed after it was registered; its new content is tracked as a file of its own', counts: null });
    const removedFile = file(6, { path: '52066.json', dateFolder: null, status: 'skipped', reason: 'file 52066.json was removed before it was imported; dropped again, it is imported', counts: null });
    const files = [file(1, {}), changedFile, removedFile];
    const m = renderRunSummary(run(files), files);
    expect(m.text).not.toContain('Datumsordner');
    expect(m.text).toContain('Vor dem Import geändert (der neue Inhalt wird als eigene Datei importiert): 52065.json.');
    expect(m.text).toContain('Nicht importiert, weil die Datei vor dem Import entfernt wurde: 52066.json. Wieder abgelegt, wird sie importiert.');
    expect(m.subject).toBe('Therapeuten-Import Lauf 7: 1 Datei vor dem Import entfernt');
    const onlyChanged = [file(1, {}), changedFile];
    expect(renderRunSummary(run(onlyChanged), onlyChanged).subject).toContain('ohne Fehler');
  });

  it('gives times in Berlin time and links the run report when DASHBOARD_URL is set, else names the CLI', () => {
    const files = [file(1, {}), partial];
    const linked = renderRunSummary(run(files), files, { runPageUrl: 'https://fleet.example/therapist-imports/runs/7' });
    expect(linked.text).toContain('03.12.2026, 15:00:00'); // 14:00 UTC in winter
    expect(linked.text).toContain('02.07.2026, 00:30:05'); // 22:30 UTC in summer, the next day in Berlin
    expect(linked.text).toContain('Bericht im Browser (jede Datei mit allen Fehlern): https://fleet.example/therapist-imports/runs/7');
    expect(linked.text).not.toContain('fleet imports list');
    expect(linked.html).toContain('https://fleet.example/therapist-imports/runs/7');
    const plain = renderRunSummary(run(files), files);
    expect(plain.text).toContain('Details: fleet imports list --kind therapist --run 7');
    expect(plain.text).not.toContain('Bericht im Browser');
    expect(plain.text).toContain('Fehlgeschlagen:                      1 von 5 (20%)');
  });

  it('describes each problem file in German, the parser\'s reasons too, without the English summary reason', () => {
    const unreadable = file(3, {
      path: '20261203/52067.json',
      status: 'failed',
      reason: 'file 20261203/52067.json: not valid JSON: line 3, column 1: "}" expected',
      counts: { ...emptyCounts(), fileErrors: 1 },
      fileErrors: ['file 20261203/52067.json: not valid JSON: line 3, column 1: "}" expected'],
    });
    const metadataOnly = file(4, { path: '52068.json', status: 'partial', reason: '1 file-level error(s)', counts: { ...emptyCounts(), total: 2, created: 2, fileErrors: 1 }, fileErrors: ['"metadata": missing'] });
    const files = [partial, unreadable, metadataOnly];
    const { text } = renderRunSummary(run(files), files);
    expect(text).toContain(`Datei ${partial.path} (#2): teilweise importiert\n  - 1 von 3 Therapeuten fehlgeschlagen\n  - Eintrag therapists[2] (ID x2c): basic_info.last_name: fehlt`);
    expect(text).toContain('Datei 20261203/52067.json (#3): nicht importiert\n  - Fehler: kein gültiges JSON: Zeile 3, Spalte 1: „}“ erwartet');
    // Every therapist went in: not "partly" imported.
    expect(text).toContain('Datei 52068.json (#4): importiert, mit Fehlern auf Dateiebene\n  - Fehler: "metadata": fehlt');
    expect(text).not.toContain('therapists failed');
    expect(text).not.toContain('file-level error(s)');
  });

  it('a file with the content of another is named with that file, not as changed or superseded, and is no error', () => {
    const copy = file(4, { path: 'urgent/52064.json', status: 'skipped', counts: emptyCounts(), reason: 'same content as 52061.json (file 1, imported): a content is imported once' });
    const files = [file(1, {}), copy];
    const { subject, text } = renderRunSummary(run(files), files);
    expect(subject).toContain('ohne Fehler');
    expect(text).toContain('Nicht erneut importiert: urgent/52064.json hat denselben Inhalt wie 52061.json (#1, importiert); ein Inhalt wird nur einmal importiert.');
    expect(text).not.toContain('Vor dem Import geändert');
  });

  it('says what the metadata claims next to what the file holds, without calling lines marked new "found new therapists"', () => {
    const f = file(2, {
      metadataDisagreements: [
        { field: 'new_therapists', stated: 4, found: 5 },
        { field: 'total_therapists', stated: 100, found: 1 },
        { field: 'postcode_area', stated: '52XXX', found: '10115' },
      ],
    });
    const { text } = renderRunSummary(run([f]), [f]);
    expect(text).toContain(
      'Metadaten von 20261203/52062.json stimmen nicht mit der Datei überein: new_therapists 4, die Datei hat 5 Einträge mit status „new“; total_therapists 100, die Datei hat 1 Eintrag; postcode_area 52XXX passt nicht zur Postleitzahl 10115 im Dateinamen',
    );
  });

  it('lists the status mismatches it counts: which entry, what the file says and what was found', () => {
    const withMismatches = file(2, {
      counts: { ...emptyCounts(), total: 3, unchanged: 2, created: 1, statusMismatches: 2 },
      statusMismatches: [
        { index: 0, externalId: 'praxis7', therapistId: 11, stated: 'new', found: 'already on the platform' },
        { index: 2, externalId: null, therapistId: null, stated: 'deleted', found: 'not on the platform' },
      ],
    });
    const files = [file(1, {}), withMismatches];
    const { text } = renderRunSummary(run(files), files);
    expect(text).toContain(
      'Status-Abweichungen in 20261203/52062.json (#2):\n  - therapists[0] (ID praxis7): Datei sagt „new“, gefunden: schon auf der Plattform\n  - therapists[2]: Datei sagt „deleted“, gefunden: nicht auf der Plattform',
    );
    const many = file(3, {
      counts: { ...emptyCounts(), total: 40, unchanged: 40, statusMismatches: 40 },
      statusMismatches: Array.from({ length: 40 }, (_, i) => ({ index: i, externalId: null, therapistId: null, stated: 'new', found: 'already on the platform' })),
    });
    const listed = renderRunSummary(run([many]), [many]).text;
    expect(listed).toContain('  - therapists[9]: Datei sagt „new“, gefunden: schon auf der Plattform\n  - … und 30 weitere');
  });

  it('names a file whose therapist list was empty (a scraper mistake looks the same), without calling the run faulty', () => {
    const empty = file(3, { counts: emptyCounts() });
    const files = [file(1, {}), empty];
    const { subject, text } = renderRunSummary(run(files), files);
    expect(subject).toContain('ohne Fehler');
    expect(text).toContain('Ohne Therapeuten (leere Liste in der Datei): 20261203/52063.json. Stimmt das nicht, bitte den Scraper prüfen.');
    expect(renderRunSummary(run([file(1, {})]), [file(1, {})]).text).not.toContain('Ohne Therapeuten');
  });

  it('a file with the content of one that failed says that this content is not on the platform', () => {
    const copy = file(5, { path: '20250716/52074.json', status: 'skipped', counts: emptyCounts(), reason: 'same content as 20250709/52074.json (file 4, failed): a content is imported once' });
    const files = [file(1, {}), copy];
    const { text } = renderRunSummary(run(files), files);
    expect(text).toContain(
      'Nicht importiert: 20250716/52074.json hat denselben Inhalt wie 20250709/52074.json (#4), deren Import fehlgeschlagen ist (fleet imports show 4 --kind therapist); derselbe Inhalt wird nicht noch einmal versucht, eine korrigierte Datei wird importiert.',
    );
    expect(text).not.toContain('Nicht erneut importiert');
  });

  it('a file a later file of its postcode replaced within the run is named with that file (nothing to do), not counted as a problem', () => {
    // 10247.json written half, then the rest 4 s later: #16 failed, #17 imported the complete file.
    const half = file(16, {
      path: '10247.json',
      postcode: '10247',
      dateFolder: null,
      status: 'failed',
      reason: 'file 10247.json: not valid JSON: line 297, column 21: "," expected',
      counts: { ...emptyCounts(), fileErrors: 1 },
      fileErrors: ['file 10247.json: not valid JSON: line 297, column 21: "," expected'],
    });
    const complete = file(17, { path: '10247.json', postcode: '10247', dateFolder: null, counts: { ...emptyCounts(), total: 5, created: 5 } });
    const failing = file(18, {
      status: 'partial',
      counts: { ...emptyCounts(), total: 10, created: 3, failed: 7 },
      failures: [{ index: 0, externalId: null, reason: 'basic_info.last_name: missing' }],
    });
    // A partial file replaced since: its failed therapists wait for no one either.
    const olderPartial = file(19, { path: '20261203/52069.json', postcode: '52069', status: 'partial', counts: { ...emptyCounts(), total: 4, created: 2, failed: 2 }, failures: [{ index: 1, externalId: null, reason: 'basic_info.last_name: missing' }] });
    const files = [half, complete, failing, olderPartial];
    const replacedBy = new Map([
      [16, { id: 17, path: '10247.json', status: 'imported', finishedAt: null }],
      [19, { id: 23, path: '20261210/52069.json', status: 'imported', finishedAt: null }],
    ]);
    const { subject, text } = renderRunSummary(run(files), files, { replacedBy });
    expect(subject).toBe('Therapeuten-Import Lauf 7: 7 Therapeuten fehlgeschlagen');
    expect(text).toContain('Datei 10247.json (#16): nicht importiert, inzwischen ersetzt durch #17 (10247.json, importiert): nichts zu tun');
    expect(text).toContain('Datei 20261203/52069.json (#19): teilweise importiert, inzwischen ersetzt durch #23 (20261210/52069.json, importiert): nichts zu tun');
    expect(text).not.toContain('(#16): nicht importiert\n');
    expect(text).not.toContain('kein gültiges JSON');
    // The run's totals stay the sum of its files (as on the pages and in the CLI), saying how many of the failed are in replaced files.
    expect(text).toMatch(/Fehlgeschlagen:\s+9 von 19 \(47,4%\), davon 2 in inzwischen ersetzten Dateien/);
    // Only replaced problems: nothing is open.
    const onlyReplaced = [half, complete];
    const quiet = renderRunSummary(run(onlyReplaced), onlyReplaced, { replacedBy });
    expect(quiet.subject).toBe('Therapeuten-Import Lauf 7: 2 Dateien, 5 Therapeuten, nichts offen (1 Datei inzwischen ersetzt)');
    // ... and its text does not claim that every file went without errors.
    expect(quiet.text).toContain('Nichts offen: die Datei mit Problemen ist inzwischen ersetzt.');
    expect(quiet.text).not.toContain('ohne Fehler');
  });

  it('a misnamed file renamed to its right name within the run is named as imported since (#N), no request to rename it, not in the subject', () => {
    const misnamed = file(74, { path: '10141_neu.json', postcode: null, dateFolder: null, status: 'skipped', reason: 'name does not fit', counts: null, contentHash: 'b'.repeat(64) });
    const renamed = file(75, { path: '10141.json', postcode: '10141', dateFolder: null, contentHash: 'b'.repeat(64) });
    const files = [misnamed, renamed];
    const replacedBy = new Map([[74, { id: 75, path: '10141.json', status: 'imported', finishedAt: null }]]);
    const { subject, text } = renderRunSummary(run(files), files, { replacedBy });
    expect(subject).not.toContain('nicht übernommen');
    expect(subject).toBe('Therapeuten-Import Lauf 7: 2 Dateien, 2 Therapeuten, nichts offen (1 Datei inzwischen ersetzt)');
    expect(text).toContain('Name passte nicht: 10141_neu.json — inzwischen unter dem richtigen Namen importiert: #75 (10141.json, importiert); nichts zu tun.');
    expect(text).not.toContain('bitte umbenennen');
  });

  it('a copy of a content imported before says in its subject that it was not imported again, naming that file', () => {
    const copy = file(4, { path: 'urgent/10115.json', postcode: '10115', status: 'skipped', counts: emptyCounts(), reason: 'same content as 10115.json (file 3, imported): a content is imported once' });
    expect(renderRunSummary(run([copy]), [copy]).subject).toBe('Therapeuten-Import Lauf 7: 1 Datei nicht erneut importiert (gleicher Inhalt wie #3)');
    const files = [file(1, {}), copy];
    expect(renderRunSummary(run(files), files).subject).toBe('Therapeuten-Import Lauf 7: 2 Dateien, 2 Therapeuten, ohne Fehler, 1 Datei nicht erneut importiert (gleicher Inhalt wie #3)');
  });

  it('lists files by name, not in the order they were registered', () => {
    const later = file(1, { path: '11004.json', postcode: '11004', status: 'failed', reason: 'not valid JSON', counts: { ...emptyCounts(), fileErrors: 1 }, fileErrors: ['not valid JSON'] });
    const earlier = file(2, { path: '11003.json', postcode: '11003', status: 'failed', reason: 'not valid JSON', counts: { ...emptyCounts(), fileErrors: 1 }, fileErrors: ['not valid JSON'] });
    const { text } = renderRunSummary(run([later, earlier]), [later, earlier]);
    expect(text.indexOf('Datei 11003.json')).toBeGreaterThan(-1);
    expect(text.indexOf('Datei 11003.json')).toBeLessThan(text.indexOf('Datei 11004.json'));
  });

  it('a run of files never read (superseded, too large, misnamed) says "nicht gelesen", not 0 therapists and 0 of 0', () => {
    const older = file(5, { path: '20261201/52065.json', status: 'skipped', reason: 'superseded by the newer folder 20261203/52065.json', counts: emptyCounts() });
    const { text } = renderRunSummary(run([older]), [older]);
    expect(text).toMatch(/Therapeuten in den Dateien:\s+nicht gelesen \(die Datei wurde übersprungen\)/);
    expect(text).toMatch(/Übersprungen \(nicht für Erwachsene\):\s+nicht gelesen/);
    expect(text).not.toContain('0 von 0');
    const mixed = [file(1, {}), older];
    expect(renderRunSummary(run(mixed), mixed).text).toMatch(/Therapeuten in den Dateien:\s+2 \(1 übersprungene Datei nicht gelesen\)/);
  });

  it('a file too large, unreadable or removed that a later file of its postcode replaced since is named as replaced, not as a problem', () => {
    const big = file(30, { path: '52066.json', status: 'skipped', reason: 'too large to import: 17.0 MB, more than SCRAPER_FILE_MAX_MB', counts: emptyCounts(), sizeBytes: 17 * 1024 * 1024 });
    const gone = file(31, { path: '52067.json', status: 'skipped', reason: 'the file was removed before it was imported', counts: emptyCounts() });
    const fixed = file(32, { path: '52066.json' });
    const files = [big, gone, fixed];
    const replacedBy = new Map([[30, { id: 32, path: '52066.json', status: 'imported', finishedAt: null }]]);
    const { subject, text } = renderRunSummary(run(files), files, { replacedBy });
    expect(subject).not.toContain('zu groß');
    expect(subject).toContain('1 Datei vor dem Import entfernt');
    expect(text).toContain('Datei 52066.json (#30): zu groß, nicht gelesen, inzwischen ersetzt durch #32 (52066.json, importiert): nichts zu tun');
    expect(text).not.toContain('Zu groß, daher nicht gelesen');
    expect(text).toContain('Nicht importiert, weil die Datei vor dem Import entfernt wurde: 52067.json');
  });
});

describe('status mismatches in German', () => {
  it('every text the planner can give as found has a German form', () => {
    const texts = [...Object.values(MISMATCH_FOUND), statusKept('gesperrt')];
    for (const t of texts) {
      const de = mismatchFoundDe(t);
      expect(de, t).not.toMatch(/\b(platform|scraper earlier|earlier|created|deleted|removed|status kept|not re-created|stays|already)\b/);
    }
    // The planner writes no mismatch text of its own past the list above.
    const plan = readFileSync(new URL('./plan.ts', import.meta.url), 'utf8');
    const written = [...plan.matchAll(/\bfound: ([^}\n]*)\}/g)].map((m) => m[1]!);
    expect(written.length).toBeGreaterThan(0);
    for (const w of written) expect(w, w).not.toMatch(/['"`]/);
  });
});
