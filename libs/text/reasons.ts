/**
 * Importers word their reasons in English (`field.path: message; other.path: message`), as
 * the CLI, the operator pages and the stored records show them; the staff emails are German.
 * `translateReason` carries a reason into German with an importer's own table of messages,
 * keeping field paths as the file writes them (staff look them up there), and values quoted
 * from a file (JSON string literals) as they are. A message the table does not know stays in
 * English rather than being guessed at.
 */

/** The messages `unstorableText` and `unstorableNumber` write, in German. */
export const unstorableTextDe: Record<string, string> = {
  'contains a NUL character (\\u0000), which cannot be stored': 'enthält ein NUL-Zeichen (\\u0000), das nicht gespeichert werden kann',
  'contains an unpaired surrogate (not valid Unicode), which cannot be stored': 'enthält ein einzelnes Surrogat (kein gültiges Unicode), das nicht gespeichert werden kann',
  // unstorableNumber's NUMBER_TOO_LARGE
  'a number too large to read (it reads as infinity), which cannot be stored': 'eine Zahl, zu groß, um sie zu lesen (sie wird als unendlich gelesen), die nicht gespeichert werden kann',
};

/** A JSON string literal (a value quoted from a file), for use in a message's pattern. */
export const QUOTED = String.raw`"(?:[^"\\]|\\.)*"`;

/** `text` split at each `sep` outside JSON string literals (`"…"`, with `\"` escapes), into at most `limit` parts. */
function splitOutsideQuotes(text: string, sep: string, limit = Infinity): string[] {
  const parts: string[] = [];
  let start = 0;
  let inString = false;
  for (let i = 0; i < text.length && parts.length < limit - 1; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (text.startsWith(sep, i)) {
      parts.push(text.slice(start, i));
      start = i + sep.length;
      i += sep.length - 1;
    }
  }
  parts.push(text.slice(start));
  return parts;
}

export interface ReasonTable {
  /** One message, whole, in German; null when the table does not know it. */
  message(m: string): string | null;
  /** Words the importer puts where a message has no field path (`(therapist)`), in German. */
  labels?: Record<string, string>;
}

/**
 * A reason's issues in German: the whole reason as one if the table knows it, else issue by
 * issue (`; `), each `path: message` with the message translated (a message may itself be
 * `path: message`).
 */
export function translateReasonIssues(reason: string, table: ReasonTable): string[] {
  const part = (p: string): string => {
    const whole = table.message(p);
    if (whole !== null) return whole;
    const [head, rest] = splitOutsideQuotes(p, ': ', 2);
    if (rest === undefined) return p;
    return `${table.labels?.[head!] ?? head}: ${part(rest)}`;
  };
  const whole = table.message(reason);
  return whole !== null ? [whole] : splitOutsideQuotes(reason, '; ').map(part);
}

/** A reason in German, its issues joined as the English ones are (`; `). */
export function translateReason(reason: string, table: ReasonTable): string {
  return translateReasonIssues(reason, table).join('; ');
}
