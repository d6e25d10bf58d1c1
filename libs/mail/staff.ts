import Handlebars from 'handlebars';

/**
 * Staff notification emails (imports, failures, run summaries). Everything that goes into
 * the HTML is escaped by the template engine: file names, reasons and patient names can
 * contain anything.
 */
export interface StaffMessage {
  subject: string;
  heading: string;
  /** Label/value rows shown as a table. */
  rows: Array<[label: string, value: string | number | null | undefined]>;
  /** Free paragraphs under the table; one with `items` is a lead line and a bulleted list. */
  paragraphs?: Array<string | StaffListParagraph>;
}

export interface StaffListParagraph {
  lead: string;
  items: string[];
}

/** Escaped text with its http(s) addresses as links (staff click the report, they do not copy it). */
function linked(text: unknown): Handlebars.SafeString {
  const raw = String(text ?? '');
  let out = '';
  let at = 0;
  // An address ends before white space, quotes or angle brackets, and not with a full stop or comma after it.
  for (const m of raw.matchAll(/\bhttps?:\/\/[^\s<>"']*[^\s<>"'.,;:!?)]/g)) {
    const url = Handlebars.escapeExpression(m[0]);
    out += `${Handlebars.escapeExpression(raw.slice(at, m.index))}<a href="${url}">${url}</a>`;
    at = m.index + m[0].length;
  }
  return new Handlebars.SafeString(out + Handlebars.escapeExpression(raw.slice(at)));
}

const engine = Handlebars.create();
engine.registerHelper('linked', linked);
// Phones: the viewport tag (without it a phone lays the mail out at 980 px and shrinks the
// text), and long values (paths, reasons) break anywhere instead of widening the page.
const html = engine.compile(
  `<!doctype html>
<html lang="de"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{{subject}}</title></head>
<body style="font-family:Arial,Helvetica,sans-serif;color:#1f2933;line-height:1.45;overflow-wrap:anywhere;word-break:break-word">
<h2 style="font-size:18px;margin:0 0 12px">{{heading}}</h2>
<table cellpadding="6" cellspacing="0" style="border-collapse:collapse;font-size:14px;max-width:100%">
{{#each rows}}<tr><th align="left" valign="top" style="border-bottom:1px solid #e4e7eb;padding-right:16px;overflow-wrap:normal;word-break:normal">{{this.[0]}}</th><td style="border-bottom:1px solid #e4e7eb;overflow-wrap:anywhere;word-break:break-word">{{linked this.[1]}}</td></tr>
{{/each}}</table>
{{#each paragraphs}}{{#if this.lead}}<p style="font-size:14px;margin-bottom:4px">{{linked this.lead}}</p>
<ul style="font-size:14px;margin-top:0;padding-left:20px">{{#each this.items}}<li>{{linked this}}</li>{{/each}}</ul>
{{else}}<p style="font-size:14px">{{linked this}}</p>
{{/if}}{{/each}}<p style="font-size:12px;color:#616e7c">Curavani Fleet</p>
</body></html>`,
  { strict: false },
);

export function renderStaffEmail(msg: StaffMessage): { subject: string; html: string; text: string } {
  const rows = msg.rows.map(([label, value]) => [label, value === null || value === undefined || value === '' ? '–' : String(value)] as const);
  const width = Math.max(0, ...rows.map(([l]) => l.length));
  const text = [
    msg.heading,
    '',
    ...rows.map(([l, v]) => `${(l + ':').padEnd(width + 2)}${v}`),
    ...(msg.paragraphs ?? []).flatMap((p) => ['', ...(typeof p === 'string' ? [p] : [p.lead, ...p.items.map((i) => `  - ${i}`)])]),
    '',
    '-- Curavani Fleet',
  ].join('\n');
  return { subject: msg.subject.replace(/[\r\n]+/g, ' '), html: html({ ...msg, rows }), text };
}
