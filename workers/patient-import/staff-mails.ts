import { renderStaffEmail } from '../../libs/mail/staff.js';
import type { CommitOutcome, ImportRow, StaffMail } from './ports.js';

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
  if (outcome.kind === 'imported') {
    subject = `Neue Patientenanmeldung importiert (Import ${row.id})`;
    heading = 'Neue Patientenanmeldung importiert';
    rows.splice(1, 0, ['Patienten-ID', outcome.patientId]);
    if (outcome.possibleDuplicateOf !== null) {
      paragraphs.push(
        `Mögliches Duplikat: Patient ${outcome.possibleDuplicateOf} hat dieselbe E-Mail-Adresse mit einem anderen Namen. Bitte prüfen.`,
      );
    }
  } else {
    subject = `Anmeldung als Duplikat erkannt (Import ${row.id})`;
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

/** Staff notice of a file that cannot be imported (one per ledger row). */
export function failedMail(row: ImportRow, p: { code: string; reason: string; failedPath: string | null; at: Date }): StaffMail {
  const kept = row.source === 'bucket';
  return renderStaffEmail({
    subject: `Anmeldung konnte nicht importiert werden (Import ${row.id})`,
    heading: 'Anmeldung konnte nicht importiert werden',
    rows: [
      ['Import-Nr.', row.id],
      ['Quelle', row.sourceUri],
      // The row's id is in "Import-Nr." above: the reason without the log-style "ledger N: " prefix.
      ['Grund', p.reason.startsWith(`ledger ${row.id}: `) ? p.reason.slice(`ledger ${row.id}: `.length) : p.reason],
      ['Fehlercode', p.code],
      ['Zeitpunkt', berlinTime(p.at)],
      ['Originaldatei gesichert unter', p.failedPath],
    ],
    paragraphs: [
      kept
        ? `Die Datei bleibt im Bucket und wird erst wieder versucht, wenn jemand sie wieder einreiht (fleet dlq requeue). Eine korrigierte Version wird als eigener Import verarbeitet; dieser Import bleibt offen, bis er verworfen wird (fleet dlq discard patient-import.ledger.${row.id}).`
        : 'Die Datei wurde nicht importiert.',
      `Details: fleet imports show ${row.id}`,
    ],
  });
}
