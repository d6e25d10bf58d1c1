import { localTime } from '../../libs/ops/daily.js';

/**
 * Tiny HTML helpers for the app's own pages (dead letters, 403/401 pages, unsubscribe).
 * `html` escapes every interpolated value unless it is already `SafeHtml`, so a reason or a
 * payload containing `<script>` is shown, never run.
 */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

export function escapeHtml(value: unknown): string {
  return String(value ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function render(value: unknown): string {
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(render).join('');
  if (value === null || value === undefined || value === false) return '';
  return escapeHtml(value);
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): SafeHtml {
  let out = strings[0]!;
  values.forEach((v, i) => {
    out += render(v) + strings[i + 1]!;
  });
  return new SafeHtml(out);
}

const STYLE = `
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2933;margin:0;background:#f5f7fa;line-height:1.45}
main{max-width:1600px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 16px}h2{font-size:17px;margin:28px 0 10px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:14px}
th,td{border-bottom:1px solid #e4e7eb;padding:7px 8px;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:600}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
pre{background:#fff;border:1px solid #e4e7eb;padding:10px;overflow:auto}
.id code{white-space:nowrap}
.reason{color:#b42318;max-width:420px;min-width:220px;word-break:break-word}
.muted{color:#616e7c;font-size:13px}
form.inline{display:flex;gap:6px;align-items:center;margin:0 0 6px}
input[type=text]{padding:4px 6px;border:1px solid #cbd2d9;border-radius:4px;min-width:180px}
button{padding:4px 10px;border-radius:4px;border:1px solid #3e4c59;background:#fff;cursor:pointer}
button.danger{border-color:#b42318;color:#b42318}
nav{background:#1f2933;color:#fff;padding:10px 24px}nav a{color:#fff;margin-right:16px}
.notice{background:#fff8e1;border:1px solid #f0c36d;padding:8px 12px;margin-bottom:16px}.advice{background:#fff8e1;border-left:3px solid #f0c36d;padding:4px 8px;margin-top:6px}.notice.ok{background:#e8f5e9;border-color:#7bc47f}.notice ul{margin:6px 0 0;padding-left:20px}
th.num,td.num{text-align:right}td.num{white-space:nowrap}
table.counts{width:auto;min-width:min(420px,100%)}table.counts th{background:#fff;font-weight:500}table.counts td code{word-break:break-all}
.scroll{overflow-x:auto}.nowrap{white-space:nowrap}.note{min-width:180px}h1 code{font-size:18px}
td.staff a{color:#b42318}
`;

/**
 * A time as staff read it on these pages: Berlin time, as in the staff emails and on /daily
 * (`2026-12-06 08:36:06 Berlin`; to the minute without the zone where a column head names it).
 */
export function pageTime(d: Date | null | undefined, to: 'second' | 'minute' = 'second'): SafeHtml | '' {
  if (!d) return '';
  return html`<span class="nowrap">${to === 'second' ? `${localTime(d, 'second')} Berlin` : localTime(d)}</span>`;
}

/** The pages' tab icon (served by the app, so the page's CSP `img-src 'self'` allows it). */
export const FAVICON_PATH = '/favicon.svg';
export const FAVICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#1f2933"/><path d="M8 23 14 9l4 9 3-5 3 10" fill="none" stroke="#7bc47f" stroke-width="3" stroke-linecap="round" stroke-linejoin="round"/></svg>';

/** A whole HTML page; `body` is trusted (build it with `html`). */
export function page(title: string, body: SafeHtml | string, opts: { nav?: boolean } = {}): string {
  const nav = opts.nav ? '<nav><a href="/dashboard">Queues (Bull Board)</a><a href="/ops">Dead letters</a><a href="/imports">Failed imports</a><a href="/therapist-imports">Therapist imports</a><a href="/daily">Daily health</a></nav>' : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title><link rel="icon" type="image/svg+xml" href="${FAVICON_PATH}"><style>${STYLE}</style></head>
<body>${nav}<main>${String(body)}</main></body></html>`;
}
