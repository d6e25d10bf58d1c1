import Handlebars from 'handlebars';
import type { WeeklyFacts } from '../../libs/db/repositories/weekly-status.js';

/**
 * The weekly status email: German, kind and short. It names no diagnosis, symptom or
 * therapist, and the subject line says nothing about health. One message model, rendered
 * by one Handlebars template in two formats: HTML (everything escaped by the engine) and
 * plain text.
 */
export interface WeeklyLinks {
  /** Signed one-click unsubscribe URL (HTTPS in production). */
  unsubscribeUrl: string;
  /** mailto: alternative for List-Unsubscribe. */
  unsubscribeMailto: string;
  contactEmail: string;
  contactPhone?: string | undefined;
}

export interface RenderedWeeklyEmail {
  subject: string;
  html: string;
  text: string;
  headers: Record<string, string>;
}

export const WEEKLY_SUBJECT = 'Ihr wöchentlicher Zwischenstand von Curavani';

const n = (count: number, one: string, many: string, none = `keine ${many}`) => (count === 0 ? none : `${count} ${count === 1 ? one : many}`);
/** One request went to one practice ("1 Anfrage an eine Praxis"), several to several. */
const toPractices = (count: number) => (count === 1 ? 'an eine Praxis' : 'an Praxen');

interface MessageModel {
  subject: string;
  greeting: string;
  intro: string;
  facts: string[];
  next: string[];
  contact: string;
  contactEmail: string;
  contactPhone?: string | undefined;
  /** `tel:` target of the phone number: its digits and a leading + only (`030 123-45` -> `tel:03012345`). */
  contactPhoneHref?: string | undefined;
  unsubscribeUrl: string;
  html: boolean;
  /** The inline CSS that wraps long words (WRAP). */
  wrap: string;
}

/**
 * The phone number as a `tel:` URI: digits, and a + only in front (RFC 3966 global number);
 * undefined when it has no digits. The trunk prefix written in brackets after a country code
 * (`+49 (0)30 1234567`, common in Germany) is not dialled from abroad: it is left out.
 */
export function telHref(phone: string | undefined): string | undefined {
  if (!phone) return undefined;
  const global = phone.trim().startsWith('+');
  const digits = (global ? phone.replace(/\(\s*0\s*\)/, '') : phone).replace(/[^0-9]/g, '');
  if (!digits) return undefined;
  return `tel:${global ? '+' : ''}${digits}`;
}

/** All answers, and how many came since the last email (when they all did, said once: "1 Antwort erhalten, 1 davon" reads oddly). */
function answersLine(f: WeeklyFacts, first: boolean): string {
  if (f.answersTotal === 0) return 'Antworten haben wir bisher noch keine erhalten.';
  const total = n(f.answersTotal, 'Antwort', 'Antworten');
  if (first || f.answersSince === 0) return `Wir haben ${total} erhalten.`;
  if (f.answersSince === f.answersTotal) {
    return `Seit unserer letzten Nachricht haben wir ${f.answersTotal === 1 ? 'die erste Antwort' : `die ersten ${f.answersTotal} Antworten`} erhalten.`;
  }
  return `Wir haben ${total} erhalten, ${f.answersSince} davon seit unserer letzten Nachricht.`;
}

/**
 * Positive answers. The promise of a call "in the next days" is made when one is new (or in the
 * first email): repeated every week while the search stays open, it would be a promise broken
 * weekly. Later emails state them and invite the patient to call if nobody has yet.
 */
function acceptancesLine(f: WeeklyFacts, first: boolean): string {
  const all = f.acceptances === 1 ? 'eine positive Rückmeldung' : `${f.acceptances} positive Rückmeldungen`;
  if (first || f.acceptancesSince > 0) {
    const since = !first && f.acceptancesSince < f.acceptances ? `, ${f.acceptancesSince === 1 ? 'eine' : f.acceptancesSince} davon neu seit unserer letzten Nachricht` : '';
    return `Es gibt ${all}${since}. Wir melden uns in den nächsten Tagen persönlich bei Ihnen, um alles Weitere mit Ihnen abzustimmen.`;
  }
  return `Es ${f.acceptances === 1 ? 'liegt' : 'liegen'} ${all} vor. Dazu haben wir uns bei Ihnen gemeldet oder melden uns in Kürze. Haben Sie noch nichts von uns gehört, melden Sie sich gern bei uns.`;
}

function model(f: WeeklyFacts, links: WeeklyLinks, html: boolean): MessageModel {
  const first = f.lastSent === null;
  const facts = [
    // Nothing sent yet at all: "noch keine" (it is coming), not a bare "keine", which reads as if we had not tried.
    f.requestsTotal === 0
      ? 'Bisher haben wir noch keine Anfragen an Praxen gesendet.'
      : first
      ? `Seit Beginn Ihrer Platzsuche haben wir ${n(f.requestsSince, 'Anfrage', 'Anfragen')} ${toPractices(f.requestsSince)} gesendet.`
      : `Seit unserer letzten Nachricht haben wir ${n(f.requestsSince, 'neue Anfrage', 'neue Anfragen', 'keine neuen Anfragen')} ${toPractices(f.requestsSince)} gesendet.`,
    // "Insgesamt ... keine Anfragen" reads oddly: with none at all the line before says it.
    // "haben wir ... gesendet", not "sind es": the verb must not depend on the number ("sind es 1 Anfrage").
    ...(first || f.requestsTotal === 0 ? [] : [`Insgesamt haben wir bisher ${n(f.requestsTotal, 'Anfrage', 'Anfragen')} ${toPractices(f.requestsTotal)} gesendet.`]),
    // With no request sent there is nothing anyone could have answered: no line on answers.
    ...(f.requestsTotal === 0 ? [] : [answersLine(f, first)]),
  ];
  const next: string[] = [];
  if (f.acceptances > 0) {
    next.push(acceptancesLine(f, first));
  } else if (f.requestsTotal === 0) {
    next.push('Wir bereiten die ersten Anfragen für Sie vor. Sie müssen dafür nichts tun.');
  } else {
    next.push('Wir fragen weiter bei passenden Praxen an und melden uns, sobald es eine Zusage gibt. Sie müssen dafür nichts tun.');
    next.push('Viele Praxen antworten erst nach einiger Zeit – das ist ganz normal.');
  }
  return {
    subject: WEEKLY_SUBJECT,
    greeting: `Guten Tag ${f.vorname} ${f.nachname},`.replace(/\s+/g, ' '),
    intro: 'hier ist Ihr kurzer Zwischenstand zu Ihrer Platzsuche bei Curavani.',
    facts,
    next,
    contact: 'Haben Sie Fragen oder hat sich bei Ihnen etwas geändert? Wir sind gerne für Sie da:',
    contactEmail: links.contactEmail,
    contactPhone: links.contactPhone,
    contactPhoneHref: telHref(links.contactPhone),
    unsubscribeUrl: links.unsubscribeUrl,
    html,
    wrap: WRAP,
  };
}

/**
 * Long words (a 99-character name without spaces, a long address) break instead of widening a
 * phone's view (a 375 px view was 808 px wide): overflow-wrap:anywhere where clients support it,
 * word-break:break-word (WebKit, Blink) and word-wrap (older clients, Outlook) otherwise. On the
 * body and the text container (inline: many clients drop <style>; the properties are inherited).
 */
const WRAP = 'overflow-wrap:anywhere;word-break:break-word;word-wrap:break-word';

// One template, two formats: `html` switches the markup; the text is the same. The text's
// signature separator is "-- " with its trailing space (RFC 3676 4.3): mail clients recognise it
// and leave the unsubscribe footer out of quotes; editors must not strip that space.
const SOURCE = `{{#if html}}<!doctype html>
<html lang="de"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>{{subject}}</title></head>
<body style="margin:0;padding:24px;background:#f5f7fa;font-family:Arial,Helvetica,sans-serif;color:#1f2933;line-height:1.5;{{wrap}}">
<div style="max-width:560px;margin:0 auto;background:#ffffff;border-radius:8px;padding:24px;{{wrap}}">
<p>{{greeting}}</p>
<p>{{intro}}</p>
<ul>
{{#each facts}}<li>{{this}}</li>
{{/each}}</ul>
<h3 style="font-size:16px;margin:20px 0 8px">Wie es weitergeht</h3>
{{#each next}}<p>{{this}}</p>
{{/each}}<p>{{contact}}<br>
E-Mail: <a href="mailto:{{contactEmail}}">{{contactEmail}}</a>{{#if contactPhone}}<br>
Telefon: {{#if contactPhoneHref}}<a href="{{contactPhoneHref}}">{{contactPhone}}</a>{{else}}{{contactPhone}}{{/if}}{{/if}}</p>
<p>Herzliche Grüße<br>Ihr Curavani-Team</p>
<p style="font-size:12px;color:#616e7c;border-top:1px solid #e4e7eb;padding-top:12px">Sie möchten diese wöchentliche Nachricht nicht mehr erhalten?
<a href="{{unsubscribeUrl}}" style="color:#616e7c">Hier abmelden</a>.</p>
</div>
</body></html>
{{else}}{{greeting}}

{{intro}}

{{#each facts}}- {{this}}
{{/each}}

Wie es weitergeht

{{#each next}}{{this}}
{{/each}}

{{contact}}
E-Mail: {{contactEmail}}
{{#if contactPhone}}Telefon: {{contactPhone}}
{{/if}}

Herzliche Grüße
Ihr Curavani-Team

-- 
Sie möchten diese wöchentliche Nachricht nicht mehr erhalten? Abmelden:
{{unsubscribeUrl}}
{{/if}}`;

const engine = Handlebars.create();
const htmlTemplate = engine.compile(SOURCE, { strict: true, knownHelpersOnly: true, knownHelpers: { if: true, each: true } });
const textTemplate = engine.compile(SOURCE, { strict: true, noEscape: true, knownHelpersOnly: true, knownHelpers: { if: true, each: true } });

/**
 * Subject, HTML, plain text, the RFC 8058 one-click unsubscribe headers and the headers that ask
 * auto-responders not to answer: the email is sent automatically, with Reply-To the staff
 * mailbox, so without them every out-of-office reply of a Monday lands there. RFC 3834
 * `Auto-Submitted: auto-generated` (honoured by Sieve vacation, Gmail, most responders) and
 * Exchange/Outlook's own `X-Auto-Response-Suppress` (OOF: out of office, AutoReply: rules).
 */
export function renderWeeklyEmail(facts: WeeklyFacts, links: WeeklyLinks): RenderedWeeklyEmail {
  const clean = (s: string) => s.replace(/[\r\n]+/g, ' ');
  const forHtml = model(facts, links, true);
  return {
    subject: clean(forHtml.subject),
    html: htmlTemplate(forHtml),
    text: textTemplate(model(facts, links, false)),
    headers: {
      'List-Unsubscribe': `<${links.unsubscribeUrl}>, <${links.unsubscribeMailto}>`,
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
      'Auto-Submitted': 'auto-generated',
      'X-Auto-Response-Suppress': 'OOF, AutoReply',
    },
  };
}
