/**
 * Why a registration was not imported (English, as the ledger, the CLI and the pages say it)
 * in the German of the staff email. The reasons are a closed set (registration-schema.ts,
 * parse-registration.ts, file-name.ts, process-patient-import.ts); a unit test drives each of
 * them through here. Field paths stay as the file writes them, values quoted from the file as
 * they are; what is not known stays in English (translateReason).
 */
import { QUOTED, translateReasonIssues, unstorableTextDe, type ReasonTable } from '../../libs/text/reasons.js';

/** Messages without parameters. */
const fixed: Record<string, string> = {
  ...unstorableTextDe,
  'required: must not be empty': 'Pflichtfeld, darf nicht leer sein',
  // Whole, with its path: the message holds the separator "; ".
  'file: not UTF-8 text (the registration site writes UTF-8; was the file saved in another encoding, such as Latin-1?)':
    'Datei: kein UTF-8-Text (die Anmeldeseite schreibt UTF-8; wurde die Datei in einer anderen Kodierung gespeichert, etwa Latin-1?)',
  // The first: the reason of files that failed before the two cases were told apart.
  'not valid JSON (the file ends too early or is empty)': 'kein gültiges JSON (die Datei endet zu früh oder ist leer)',
  'not valid JSON (the file ends too early)': 'kein gültiges JSON (die Datei endet zu früh)',
  'not valid JSON (the file is empty)': 'kein gültiges JSON (die Datei ist leer)',
  'not valid JSON': 'kein gültiges JSON',
  'expected a JSON object': 'erwartet: ein JSON-Objekt',
  'does not match the content (HMAC-SHA256 with the configured secret)': 'passt nicht zum Inhalt (HMAC-SHA256 mit dem eingerichteten Schlüssel)',
  'required (a signing secret is configured), the file is unsigned': 'erforderlich (ein Signaturschlüssel ist eingerichtet), die Datei ist nicht signiert',
  'does not match the token in the file name': 'passt nicht zum Token im Dateinamen',
  'the file is not in the configured bucket': 'die Datei liegt nicht im eingerichteten Bucket',
  // The email's length rule before it said how long the address was.
  'at most 255 characters': 'höchstens 255 Zeichen',
};

/** What a rule expects (`expected …` or `required: …`). */
const rules: Record<string, string> = {
  'expected text': 'Text',
  'expected a date YYYY-MM-DD': 'ein Datum JJJJ-MM-TT',
  'expected a real calendar date': 'ein Datum, das es gibt',
  'expected a real date and time': 'ein Datum und eine Uhrzeit, die es gibt',
  'expected a date in the past': 'ein Datum in der Vergangenheit',
  'expected a date after 1900-01-01': 'ein Datum nach dem 1.1.1900',
  'expected true or false': 'true oder false',
  'expected a time range HH:MM-HH:MM': 'eine Zeitspanne HH:MM-HH:MM',
  'expected a time range that ends after it starts': 'eine Zeitspanne, die nach ihrem Beginn endet',
  'expected a list of time ranges': 'eine Liste von Zeitspannen',
  'expected an object day -> ["HH:MM-HH:MM"]': 'ein Objekt Tag -> ["HH:MM-HH:MM"]',
  'expected an object such as {"max_km": 30}': 'ein Objekt wie {"max_km": 30}',
  'expected a list of 1 to 6 symptoms': 'eine Liste mit 1 bis 6 Symptomen',
  'a list of 1 to 6 symptoms': 'eine Liste mit 1 bis 6 Symptomen',
  'expected 1 to 6 entries': '1 bis 6 Einträge',
  'expected one of the 30 symptoms of the form (exact spelling)': 'eines der 30 Symptome des Formulars (genaue Schreibweise)',
  'expected 5 digits': '5 Ziffern',
  'expected a valid email address': 'eine gültige E-Mail-Adresse',
  'expected an object': 'ein Objekt',
  'an object with the patient data': 'ein Objekt mit den Patientendaten',
  'the consent given at registration (GDPR proof)': 'die bei der Anmeldung gegebene Einwilligung (DSGVO-Nachweis)',
  'expected a UTC timestamp such as 2025-07-05T14:33:55Z': 'ein UTC-Zeitstempel wie 2025-07-05T14:33:55Z',
  'expected a timestamp YYYY-MM-DD HH:MM:SS': 'ein Zeitstempel JJJJ-MM-TT HH:MM:SS',
  'expected the registration token (text)': 'das Anmelde-Token (Text)',
  'expected at least 8 letters or digits': 'mindestens 8 Buchstaben oder Ziffern',
  'expected a JSON object': 'ein JSON-Objekt',
  'the registration object of the signed file': 'das Anmeldeobjekt der signierten Datei',
};

/** What the file held instead (registration-schema's typeName), the value itself kept. */
function foundDe(t: string): string | null {
  const kinds: Record<string, string> = { null: 'null', 'an array': 'eine Liste', 'an object': 'ein Objekt', 'a number': 'eine Zahl', 'a boolean': 'true oder false' };
  if (kinds[t]) return kinds[t];
  const text = new RegExp(`^the string (${QUOTED})$`).exec(t);
  if (text) return `der Text ${text[1]}`;
  if (/^\d+$/.test(t) || new RegExp(`^${QUOTED}$`).test(t)) return t;
  return null;
}

/** Why a file name does not fit (file-name.ts). */
function fileNameWhyDe(why: string): string | null {
  const part: Record<string, string> = { nachname: 'Nachname', vorname: 'Vorname', date: 'Datum', token: 'Token' };
  let x: RegExpExecArray | null;
  if (why === 'not a .json file') return 'keine .json-Datei';
  if ((x = /^(\d+) parts? separated by underscores, expected 4(: the token part is missing after the date)?$/.exec(why))) {
    return `${x[1]} durch Unterstriche ${x[1] === '1' ? 'getrennter Teil' : 'getrennte Teile'}, erwartet 4${x[2] ? ': der Teil Token fehlt nach dem Datum' : ''}`;
  }
  if ((x = new RegExp(`^the (nachname|vorname) part (${QUOTED}) is not a name$`).exec(why))) return `der Teil ${part[x[1]!]} ${x[2]} ist kein Name`;
  if ((x = new RegExp(`^the date part (${QUOTED}) is not YYYYMMDD or YYYY-MM-DD$`).exec(why))) return `der Teil Datum ${x[1]} ist nicht JJJJMMTT oder JJJJ-MM-TT`;
  if ((x = new RegExp(`^the date part (${QUOTED}) is not a real date$`).exec(why))) return `der Teil Datum ${x[1]} ist kein Datum, das es gibt`;
  if ((x = new RegExp(`^the token part (${QUOTED}) is not 6 or more letters or digits$`).exec(why))) return `der Teil Token ${x[1]} hat nicht 6 oder mehr Buchstaben oder Ziffern`;
  return null;
}

function message(m: string): string | null {
  if (fixed[m] !== undefined) return fixed[m];
  let x: RegExpExecArray | null;
  if ((x = /^required: (.+)$/.exec(m)) && rules[x[1]!]) return `Pflichtfeld, erwartet: ${rules[x[1]!]}`;
  if ((x = /^required: one of (.+)$/.exec(m))) return `Pflichtfeld, erwartet: einer der Werte ${x[1]}`;
  if ((x = /^(.+?), got (.+)$/.exec(m)) && rules[x[1]!] && foundDe(x[2]!) !== null) return `erwartet: ${rules[x[1]!]}, gefunden: ${foundDe(x[2]!)}`;
  if ((x = /^expected one of (.+?)(?:, got (.+))?$/.exec(m)) && (x[2] === undefined || foundDe(x[2]) !== null)) {
    return `erwartet: einer der Werte ${x[1]}${x[2] === undefined ? '' : `, gefunden: ${foundDe(x[2])}`}`;
  }
  if (rules[m] && m.startsWith('expected ')) return `erwartet: ${rules[m]}`;
  if ((x = /^at most (\d+) characters, got (\d+)$/.exec(m))) return `höchstens ${x[1]} Zeichen, gefunden: ${x[2]}`;
  if ((x = new RegExp(`^listed more than once: (${QUOTED})$`).exec(m))) return `mehrfach angegeben: ${x[1]}`;
  if ((x = /^not valid JSON \(error at character (\d+)\)$/.exec(m))) return `kein gültiges JSON (Fehler bei Zeichen ${x[1]})`;
  if ((x = /^nested more than (\d+) levels deep$/.exec(m))) return `mehr als ${x[1]} Ebenen tief verschachtelt`;
  // zahlungsreferenz_taken (pg-store.ts): the reference derived from the token, and the patient holding it.
  if ((x = /^its payment reference (\S+) is already used by patient (\d+) \(another registration\)$/.exec(m))) {
    return `die daraus abgeleitete Zahlungsreferenz ${x[1]} hat schon Patient ${x[2]} (eine andere Anmeldung)`;
  }
  if ((x = /^([\d.]+) MB, more than REGISTRATION_FILE_MAX_MB=(\d+) allows \(a registration is a few KB\), not read$/.exec(m))) {
    return `${x[1]} MB, mehr als REGISTRATION_FILE_MAX_MB=${x[2]} erlaubt (eine Anmeldung hat wenige KB), nicht gelesen`;
  }
  if ((x = /^expected \{nachname\}_\{vorname\}_\{date\}_\{token\}\.json \((.+)\)$/.exec(m)) && fileNameWhyDe(x[1]!)) {
    return `erwartet: {nachname}_{vorname}_{datum}_{token}.json (${fileNameWhyDe(x[1]!)})`;
  }
  // signature_version and environment: what the fleet expects next to what the file says (JSON values).
  if ((x = /^expected (hmac-[\w-]+), got ([\s\S]+)$/.exec(m))) return `erwartet: ${x[1]}, gefunden: ${x[2]}`;
  if ((x = new RegExp(`^expected (${QUOTED}) \\(REGISTRATION_ENVIRONMENT\\), got ([\\s\\S]+)$`).exec(m))) return `erwartet: ${x[1]} (REGISTRATION_ENVIRONMENT), gefunden: ${x[2]}`;
  // The fleet's own failures: the technical cause stays as the system gave it.
  // The technical cause as it is, up to the note that the failed folder could not keep the copy.
  if ((x = /^gave up after (\d+) attempts: ([\s\S]*?)(?:; failed folder: (the original bytes could not be kept there [\s\S]*))?$/.exec(m))) {
    return `nach ${x[1]} Versuchen aufgegeben: ${x[2]}${x[3] === undefined ? '' : `; ${table.labels!['failed folder']}: ${message(x[3]) ?? x[3]}`}`;
  }
  if ((x = /^generation (\d+) is no longer in the bucket and no other upload of that name is: deleted before the fleet downloaded it \(not by the fleet\); ask for the registration to be uploaded again$/.exec(m))) {
    return `Generation ${x[1]} ist nicht mehr im Bucket und auch keine andere Datei dieses Namens: gelöscht, bevor die Fleet sie herunterladen konnte (nicht von der Fleet); bitte die Anmeldung neu hochladen lassen`;
  }
  if ((x = /^the original bytes could not be kept there \(([\s\S]*)\), the file stays in the bucket$/.exec(m))) {
    return `die Originaldatei konnte dort nicht gesichert werden (${x[1]}), die Datei bleibt im Bucket`;
  }
  return null;
}

const table: ReasonTable = {
  message,
  labels: { file: 'Datei', 'file name': 'Dateiname', '(file)': '(Datei)', 'a key': 'ein Schlüssel', 'failed folder': 'Ordner für nicht importierte Dateien' },
};

/** A registration's failure reason in German, one entry per issue; what is not known stays as it is. */
export function registrationReasonIssuesDe(reason: string): string[] {
  return translateReasonIssues(reason, table);
}

/** The same, the issues joined as in the English reason (`; `). */
export function registrationReasonDe(reason: string): string {
  return registrationReasonIssuesDe(reason).join('; ');
}
