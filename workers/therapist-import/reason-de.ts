/**
 * The import's reasons (English, as the CLI, the pages and the stored report say them) in the
 * German of the staff summary. The parser's messages are a closed set (scraper-file.ts, plan.ts);
 * a unit test drives every one of them through here. Field paths stay as they are written in the
 * file (`basic_info.last_name`): staff look them up there. Anything not known is kept in English
 * rather than guessed at (translateReason).
 */
import { translateReason, unstorableTextDe, type ReasonTable } from '../../libs/text/reasons.js';

/** Messages without parameters. */
const fixed: Record<string, string> = {
  missing: 'fehlt',
  empty: 'leer',
  'not an email address': 'keine gültige E-Mail-Adresse',
  'not valid JSON': 'kein gültiges JSON',
  'the file is empty': 'die Datei ist leer',
  'not UTF-8 text (the scraper writes UTF-8; was the file saved in another encoding?)':
    'kein UTF-8-Text (der Scraper schreibt UTF-8; wurde die Datei in einer anderen Kodierung gespeichert?)',
  'expected a JSON object with "metadata" and "therapists"': 'erwartet: ein JSON-Objekt mit „metadata“ und „therapists“',
  ...unstorableTextDe,
};

/** What a message says was expected (`expected …`). */
const expected: Record<string, string> = {
  text: 'Text',
  'an object': 'ein Objekt',
  'a list': 'eine Liste',
  '5 digits': '5 Ziffern',
  'text or a number': 'Text oder eine Zahl',
  'a list of text': 'eine Liste von Texten',
  'text or a list of text': 'Text oder eine Liste von Texten',
  'an object of days and times': 'ein Objekt mit Tagen und Zeiten',
  'one of new, modified, unchanged, deleted': 'einer der Werte new, modified, unchanged, deleted',
  'Herr, Frau or empty': 'Herr, Frau oder leer',
  'a whole number': 'eine ganze Zahl',
  '0 or more': '0 oder mehr',
};

/** What a message says was found instead (`got …`): the kind of value, never the value. */
const found: Record<string, string> = {
  null: 'null',
  text: 'Text',
  'a list': 'eine Liste',
  'an object': 'ein Objekt',
  'a number': 'eine Zahl',
  'a boolean': 'true oder false',
  'a fraction': 'eine Zahl mit Nachkommastellen',
  'a negative number': 'eine negative Zahl',
  'a number too large to read': 'eine Zahl, zu groß, um sie zu lesen',
  'a number too large to read exactly (write it as text)': 'eine Zahl, zu groß, um sie genau zu lesen (als Text schreiben)',
};

/** jsonc-parser's errors as scraper-file.ts words them. */
const jsonWords: Record<string, string> = {
  'unexpected character': 'unerwartetes Zeichen',
  'invalid number': 'ungültige Zahl',
  'property name (in double quotes) expected': 'Feldname (in doppelten Anführungszeichen) erwartet',
  'value expected': 'Wert erwartet',
  'colon expected': 'Doppelpunkt erwartet',
  'comma expected': 'Komma erwartet',
  '"}" expected': '„}“ erwartet',
  '"]" expected': '„]“ erwartet',
  'end of file expected': 'Dateiende erwartet',
  'comments are not JSON': 'Kommentare sind kein JSON',
  'unexpected end of comment': 'unerwartetes Ende eines Kommentars',
  'unexpected end of string': 'unerwartetes Ende eines Texts',
  'unexpected end of number': 'unerwartetes Ende einer Zahl',
  'invalid \\u escape': 'ungültige \\u-Escape-Sequenz',
  'invalid escape character': 'ungültiges Escape-Zeichen',
  'control character in a string': 'Steuerzeichen in einem Text',
  'syntax error': 'Syntaxfehler',
};

/** Labels the parser puts where a message has no field path. */
const labels: Record<string, string> = { '(therapist)': '(Eintrag)', '(metadata)': '(Metadaten)', '(value)': '(Wert)', 'a key': 'ein Schlüssel' };

/** One message, whole; null when it is not one the import writes. */
function message(m: string): string | null {
  if (fixed[m] !== undefined) return fixed[m];
  let x: RegExpExecArray | null;
  if ((x = /^expected (.+), got (a list with (.+) in it)$/.exec(m)) && expected[x[1]!] && found[x[3]!]) {
    return `erwartet: ${expected[x[1]!]}, gefunden: eine Liste, die ${found[x[3]!]} enthält`;
  }
  if ((x = /^expected (.+), got (.+)$/.exec(m)) && expected[x[1]!] && found[x[2]!]) return `erwartet: ${expected[x[1]!]}, gefunden: ${found[x[2]!]}`;
  if ((x = /^expected (.+)$/.exec(m)) && expected[x[1]!]) return `erwartet: ${expected[x[1]!]}`;
  if ((x = /^longer than (\d+) characters$/.exec(m))) return `länger als ${x[1]} Zeichen`;
  if ((x = /^longer than (\d+) characters with the house number$/.exec(m))) return `mit der Hausnummer länger als ${x[1]} Zeichen`;
  if ((x = /^not valid JSON: line (\d+), column (\d+): (.+)$/.exec(m)) && jsonWords[x[3]!]) return `kein gültiges JSON: Zeile ${x[1]}, Spalte ${x[2]}: ${jsonWords[x[3]!]}`;
  if ((x = /^not valid JSON: (.+)$/.exec(m)) && fixed[x[1]!]) return `kein gültiges JSON: ${fixed[x[1]!]}`;
  if ((x = /^same therapist as (therapists\[\d+\]) of this file \(duplicate line( with the same id)?\)$/.exec(m))) {
    return `derselbe Therapeut wie ${x[1]} dieser Datei (doppelter Eintrag${x[2] ? ' mit derselben ID' : ''})`;
  }
  if ((x = /^name and postcode match several therapists \(ids ([\d, ]+)\) and nothing else tells them apart: not imported, staff must resolve which one this line is$/.exec(m))) {
    return `Name und Postleitzahl passen zu mehreren Therapeuten (IDs ${x[1]}), und nichts sonst unterscheidet sie: nicht importiert, bitte klären, welcher Therapeut gemeint ist`;
  }
  // The id is the scraper's and may hold any text: matched as a whole, before any splitting.
  if ((x = /^id: ("[\s\S]*") is given to different therapists in this file \(([^()]*)\): none of them is imported$/.exec(m))) {
    return `id: ${x[1]} gehört in dieser Datei verschiedenen Therapeuten (${x[2]}): keiner von ihnen wird importiert`;
  }
  if ((x = /^([\s\S]+) \(metadata not used\)$/.exec(m))) {
    const inner = translateReason(x[1]!, table);
    return inner === x[1] ? null : `${inner} (Metadaten nicht verwendet)`;
  }
  if ((x = /^import failed after retries: ([\s\S]*)$/.exec(m))) return `Import nach allen Versuchen aufgegeben: ${x[1]}`;
  if ((x = /^import abandoned: ([\s\S]*)$/.exec(m))) return `Import abgebrochen: ${x[1]}`;
  return null;
}

const table: ReasonTable = { message, labels };

/** A therapist's reason or a file error in German; what is not known stays as it is. */
export function reasonDe(reason: string): string {
  // A failed `deleted` line whose id names nobody (plan.ts): the id may hold any text, so it is cut off first.
  const unknownId = /^([\s\S]*); status deleted: id ("[\s\S]*") is not known in this postcode area, so the therapist can only be found by name and postcode$/.exec(reason);
  if (unknownId) {
    return `${reasonDe(unknownId[1]!)}; status deleted: id ${unknownId[2]} ist in diesem Postleitzahlbereich nicht bekannt, der Therapeut ist daher nur über Name und Postleitzahl zu finden`;
  }
  const noName = /^([\s\S]*); status deleted: not applied \(no scraper id, and no name and postcode to find the therapist by\)$/.exec(reason);
  if (noName) return `${reasonDe(noName[1]!)}; status deleted: nicht ausgeführt (keine Scraper-ID und weder Name noch Postleitzahl, um den Therapeuten zu finden)`;
  return translateReason(reason, table);
}
