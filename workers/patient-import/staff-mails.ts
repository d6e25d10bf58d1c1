import { renderStaffEmail } from '../../libs/mail/staff.js';
import type { CommitOutcome, ImportRow, StaffMail } from './ports.js';
import { failureRemedy } from './failure-remedy.js';
import { registrationReasonIssuesDe } from './reason-de.js';

const berlinFormat = new Intl.DateTimeFormat('de-DE', { timeZone: 'Europe/Berlin', dateStyle: 'medium', timeStyle: 'medium' });

function berlinTime(d: Date): string {
  return berlinFormat.format(d);
}

/** The ledger's validation status (English, as the CLI shows it) in the staff email's German. */
const validationWords: Record<string, string> = {
  'valid (signed, signature verified)': 'gültig (signiert, Signatur geprüft)',
  'valid (signed, signature not checked: no signing secret configured)': 'gültig (signiert, Signatur nicht geprüft: kein Signaturschlüssel eingerichtet)',
  'valid (unsigned)': 'gültig (nicht signiert)',
};
export const validationDe = (v: string): string => validationWords[v] ?? v;

/** Staff notice of one import: patient name, import time, source, validation status. */
export function importedMail(
  row: ImportRow,
  outcome: CommitOutcome,
  p: {
    vorname: string;
    nachname: string;
    /** A paid voucher booking (`consent_metadata.voucher_booking`). */
    voucher?: { zahlungsreferenz: string } | null;
    validation: string;
    unknownFields: string[];
    at: Date;
  },
): StaffMail {
  const name = `${p.vorname} ${p.nachname}`;
  const rows: Array<[string, string | number | null]> = [
    ['Patient', name],
    // A duplicate created nothing: the time it was recognised, not "imported".
    [outcome.kind === 'duplicate' ? 'Erkannt am' : 'Importiert am', berlinTime(p.at)],
    ['Quelle', row.sourceUri],
    ['Validierung', validationDe(p.validation)],
    ['Import-Nr.', row.id],
  ];
  const paragraphs: string[] = [];
  let subject: string;
  let heading: string;
  // What needs a look goes into the subject: an inbox of routine notices hides it otherwise.
  const voucherNote = p.voucher ? ', bezahlte Gutschein-Buchung' : '';
  if (outcome.kind === 'imported') {
    subject =
      outcome.possibleDuplicateOf !== null
        ? `Neue Patientenanmeldung importiert, mögliches Duplikat: bitte prüfen${voucherNote} (Import ${row.id})`
        : `Neue Patientenanmeldung importiert${voucherNote} (Import ${row.id})`;
    heading = 'Neue Patientenanmeldung importiert';
    rows.splice(1, 0, ['Patienten-ID', outcome.patientId]);
    if (outcome.possibleDuplicateOf !== null) {
      paragraphs.push(
        `Mögliches Duplikat: Patient ${outcome.possibleDuplicateOf} hat dieselbe E-Mail-Adresse mit einem anderen Namen. Bitte prüfen.`,
      );
    }
  } else if (outcome.duplicateKind === 'same_token') {
    // The same registration (token) uploaded again with other content: the patient is not changed.
    const fields = (outcome.differingFields ?? []).join(', ');
    const copy = `(die neue Datei ist als Sicherungskopie erhalten: fleet imports show ${row.id})`;
    heading = 'Anmeldung erneut hochgeladen: kein neuer Patient angelegt';
    rows.splice(1, 0, ['Gleiche Anmeldung wie Patient', outcome.patientId]);
    if (outcome.comparedWith === 'import') {
      subject = `Anmeldung erneut hochgeladen, mit geänderten Angaben: bitte prüfen (Import ${row.id})`;
      paragraphs.push(
        `Dieselbe Anmeldung (gleiches Anmelde-Token) wurde noch einmal hochgeladen, mit anderen Angaben als beim ersten Import in: ${fields}. Patient ${outcome.patientId} wurde nicht geändert: bitte die Angaben dort von Hand prüfen und bei Bedarf aktualisieren ${copy}.`,
      );
    } else {
      // Imported before the import recorded what it read: only the patient as it is now was there to compare with.
      subject = `Anmeldung erneut hochgeladen, Angaben weichen vom Patienten ab: bitte prüfen (Import ${row.id})`;
      paragraphs.push(
        `Dieselbe Anmeldung (gleiches Anmelde-Token) wurde noch einmal hochgeladen. Ihre Angaben sind anders als Patient ${outcome.patientId} in seinem heutigen Stand: ${fields}. Der erste Import hat nicht festgehalten, was er übernommen hat; der Unterschied kann daher auch Angaben betreffen, die seit dem Import von Hand korrigiert wurden. Patient ${outcome.patientId} wurde nicht geändert: bitte zuerst prüfen, bevor dort etwas geändert wird, damit keine Korrektur rückgängig gemacht wird ${copy}.`,
      );
    }
  } else {
    subject = p.voucher
      ? `Anmeldung als Duplikat erkannt, bezahlte Gutschein-Buchung: bitte prüfen (Import ${row.id})`
      : `Anmeldung als Duplikat erkannt (Import ${row.id})`;
    heading = 'Anmeldung als Duplikat erkannt: kein neuer Patient angelegt';
    rows.splice(1, 0, ['Duplikat von Patient', outcome.patientId]);
    paragraphs.push('Gleiche E-Mail-Adresse und gleicher Name wie ein vorhandener Patient. Die Einwilligung wurde dem vorhandenen Patienten zugeordnet.');
    if (p.voucher) {
      // The existing patient is not changed by a duplicate: the payment would go unnoticed.
      paragraphs.push(
        `Diese Anmeldung ist eine bezahlte Gutschein-Buchung (Zahlungsreferenz ${p.voucher.zahlungsreferenz}). Der vorhandene Patient ${outcome.patientId} wurde nicht geändert: bitte Zahlungseingang, Status und Startdatum dort prüfen.`,
      );
    }
  }
  if (p.voucher) rows.splice(2, 0, ['Gutschein-Buchung', `ja, bezahlt (Zahlungsreferenz ${p.voucher.zahlungsreferenz})`]);
  if (p.unknownFields.length) paragraphs.push(`Unbekannte Felder (ignoriert): ${p.unknownFields.join(', ')}`);
  return renderStaffEmail({ subject, heading, rows, paragraphs });
}

/** What staff can do about a failed registration, by what failed (the file, the fleet's settings, or the fleet itself). */
function failedNextSteps(row: ImportRow, code: string, dashboardUrl: string | undefined, referenceHeldBy: number | null): string[] {
  const discard = `fleet dlq discard patient-import.ledger.${row.id} --reason "…"`;
  const requeue = `fleet dlq requeue patient-import.ledger.${row.id} --reason "…"`;
  const ops = dashboardUrl ? ` (oder im Browser unter ${dashboardUrl}/ops)` : '';
  if (row.source !== 'bucket') {
    return [
      'Die Datei wurde von Hand eingespielt (fleet import patient-file) und konnte nicht importiert werden. Nach der Korrektur: fleet import patient-file <Pfad> (dieselbe Datei noch einmal versucht diesen Import erneut, eine korrigierte wird ein eigener Import).',
      `Diesen Import endgültig schließen: fleet imports discard ${row.id} --reason "…"`,
    ];
  }
  const correctedUpload = `Eine korrigierte Datei (neu hochgeladen) wird als eigener Import verarbeitet; diesen Import danach verwerfen: ${discard}${ops}.`;
  switch (failureRemedy(code)) {
    case 'corrected-upload':
      return [`Der Inhalt der Datei ist fehlerhaft (siehe Grund): dieselbe Datei scheitert bei jedem Versuch wieder, erneutes Einreihen hilft nicht. Die Datei bleibt im Bucket. ${correctedUpload}`];
    case 'rename':
      return [`Der Dateiname passt nicht (siehe Grund): die Datei muss unter einem passenden Namen neu hochgeladen werden, erneutes Einreihen hilft nicht. Die Datei bleibt im Bucket. ${correctedUpload}`];
    case 'settings':
      return [
        `Signatur oder Umgebung der Datei passen nicht zur Einstellung der Fleet (REGISTRATION_SIGNING_SECRET, REGISTRATION_ENVIRONMENT). Ist die Einstellung falsch: korrigieren, die Fleet neu starten (sie liest ihre Einstellungen beim Start), dann erneut einreihen: ${requeue}${ops}. Ist die Datei nicht echt: verwerfen: ${discard}. Die Datei bleibt bis dahin im Bucket.`,
      ];
    case 'raise-limit':
      return [
        `Die Datei ist größer, als REGISTRATION_FILE_MAX_MB erlaubt (eine Anmeldung hat wenige KB), und wurde nicht gelesen. Ist sie doch eine echte Anmeldung: die Grenze erhöhen, die Fleet neu starten, dann erneut einreihen: ${requeue}${ops}. Sonst verwerfen: ${discard}. Die Datei bleibt bis dahin im Bucket.`,
      ];
    case 'object-gone':
      return [`Die Datei ist nicht mehr im Bucket: bitte die Anmeldung neu hochladen lassen (sie wird ein eigener Import) und diesen Import verwerfen: ${discard}${ops}.`];
    case 'resolve-by-hand':
      return [
        `Die Zahlungsreferenz dieser Anmeldung (die ersten 8 Zeichen ihres Anmelde-Tokens) hat schon ${referenceHeldBy === null ? 'ein anderer Patient (siehe Grund)' : `Patient ${referenceHeldBy}`}, aus einer anderen Anmeldung: jeder Versuch scheitert gleich, erneutes Einreihen hilft nicht, und auch eine neu hochgeladene Datei derselben Anmeldung nicht. Bitte die Anmeldung von Hand mit der Plattform klären (ist es wirklich eine andere Person? dann den Patienten in der Plattform mit einer anderen Zahlungsreferenz anlegen) und diesen Import danach verwerfen: ${discard}${ops}. Die Datei bleibt bis dahin im Bucket.`,
      ];
    default:
      // The fleet gave up (storage, database or a worker failing): the file is fine as far as anyone knows.
      return [
        `Die Datei bleibt im Bucket und wird erst wieder versucht, wenn jemand sie erneut einreiht, nachdem die Ursache behoben ist: ${requeue}${ops}. Nicht mehr gewollt: ${discard}.`,
      ];
  }
}

/** Staff notice of a file that cannot be imported (one per ledger row). */
export function failedMail(
  row: ImportRow,
  p: { code: string; reason: string; failedPath: string | null; at: Date; dashboardUrl?: string | undefined; /** zahlungsreferenz_taken: the patient holding the reference. */ referenceHeldBy?: number | null },
): StaffMail {
  // The row's id is in "Import-Nr." below: the reason without the log-style "ledger N: " prefix, in German.
  const issues = registrationReasonIssuesDe(p.reason.startsWith(`ledger ${row.id}: `) ? p.reason.slice(`ledger ${row.id}: `.length) : p.reason);
  // Several wrong fields are a list under the table: one line of them is hard to read, on a phone above all.
  const listed = issues.length > 1;
  return renderStaffEmail({
    subject: `Anmeldung konnte nicht importiert werden (Import ${row.id})`,
    heading: 'Anmeldung konnte nicht importiert werden',
    rows: [
      ['Import-Nr.', row.id],
      ['Quelle', row.sourceUri],
      ['Grund', listed ? `${issues.length} Fehler in der Datei (unten)` : (issues[0] ?? '')],
      ['Fehlercode', p.code],
      ['Zeitpunkt', berlinTime(p.at)],
      ['Originaldatei gesichert unter', p.failedPath],
    ],
    paragraphs: [
      ...(listed ? [{ lead: 'Fehler in der Datei:', items: issues }] : []),
      ...failedNextSteps(row, p.code, p.dashboardUrl, p.referenceHeldBy ?? null),
      `Details: fleet imports show ${row.id}${p.dashboardUrl ? ` oder ${p.dashboardUrl}/imports` : ''}`,
    ],
  });
}
