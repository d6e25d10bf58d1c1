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
  /** Free paragraphs under the table. */
  paragraphs?: string[];
}

const engine = Handlebars.create();
const html = engine.compile(
  `<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>{{subject}}</title></head>
<body style="font-family:Arial,Helvetica,sans-serif;color:#1f2933;line-height:1.45">
<h2 style="font-size:18px;margin:0 0 12px">{{heading}}</h2>
<table cellpadding="6" cellspacing="0" style="border-collapse:collapse;font-size:14px">
{{#each rows}}<tr><th align="left" style="border-bottom:1px solid #e4e7eb;padding-right:16px">{{this.[0]}}</th><td style="border-bottom:1px solid #e4e7eb">{{this.[1]}}</td></tr>
{{/each}}</table>
{{#each paragraphs}}<p style="font-size:14px">{{this}}</p>
{{/each}}<p style="font-size:12px;color:#616e7c">Curavani Fleet</p>
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
    ...(msg.paragraphs?.length ? ['', ...msg.paragraphs] : []),
    '',
    '-- Curavani Fleet',
  ].join('\n');
  return { subject: msg.subject.replace(/[\r\n]+/g, ' '), html: html({ ...msg, rows }), text };
}
