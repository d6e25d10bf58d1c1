import { describe, expect, it } from 'vitest';
import type { WeeklyFacts } from '../../libs/db/repositories/weekly-status.js';
import { renderWeeklyEmail } from './template.js';

const facts = (over: Partial<WeeklyFacts> = {}): WeeklyFacts => ({
  patientId: 7,
  vorname: 'Anna',
  nachname: 'Beispiel',
  email: 'anna@example.org',
  status: 'auf_der_Suche',
  optedOut: false,
  lastSent: new Date('2026-11-16T08:00:00Z'),
  activeSearches: 1,
  requestsTotal: 9,
  requestsSince: 3,
  answersTotal: 2,
  answersSince: 1,
  acceptances: 0,
  acceptancesSince: 0,
  ...over,
});
const links = { unsubscribeUrl: 'https://app.example/unsubscribe/7.abc', unsubscribeMailto: 'mailto:abmelden@example.org?subject=x', contactEmail: 'info@example.org' };

describe('weekly status email template', () => {
  it('escapes a patient name containing <script> in the HTML and keeps it readable in the text', () => {
    const out = renderWeeklyEmail(facts({ vorname: '<script>alert("x")</script>', nachname: "O'Brien & <b>Co</b>" }), links);
    expect(out.html).not.toContain('<script>');
    expect(out.html).not.toContain('<b>Co</b>');
    expect(out.html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; O&#x27;Brien &amp; &lt;b&gt;Co&lt;/b&gt;');
    expect(out.text).toContain(`Guten Tag <script>alert("x")</script> O'Brien & <b>Co</b>,`);
  });

  it('says what happened since the last update and in total, what comes next and how to reach staff; neutral subject', () => {
    const out = renderWeeklyEmail(facts(), { ...links, contactPhone: '030 123' });
    expect(out.subject).toBe('Ihr wöchentlicher Zwischenstand von Curavani');
    expect(out.text).toContain('3 neue Anfragen');
    expect(out.text).toContain('Insgesamt haben wir bisher 9 Anfragen an Praxen gesendet');
    expect(out.text).toContain('2 Antworten erhalten, 1 davon seit unserer letzten Nachricht');
    expect(out.text).toContain('Wie es weitergeht');
    expect(out.text).toContain('info@example.org');
    expect(out.text).toContain('Telefon: 030 123');
    expect(out.html).toContain('href="https://app.example/unsubscribe/7.abc"');
    expect(out.headers).toEqual({
      'List-Unsubscribe': '<https://app.example/unsubscribe/7.abc>, <mailto:abmelden@example.org?subject=x>',
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
      // no out-of-office replies into the staff mailbox (Reply-To) every Monday
      'Auto-Submitted': 'auto-generated',
      'X-Auto-Response-Suppress': 'OOF, AutoReply',
    });
    expect(out.subject).not.toMatch(/therap|psych|diagnos/i);
  });

  it('words the first email, no requests yet, and an acceptance kindly', () => {
    expect(renderWeeklyEmail(facts({ lastSent: null, requestsTotal: 1, requestsSince: 1 }), links).text).toContain('Seit Beginn Ihrer Platzsuche haben wir 1 Anfrage an eine Praxis gesendet.');
    const none = renderWeeklyEmail(facts({ lastSent: null, requestsTotal: 0, requestsSince: 0, answersTotal: 0 }), links).text;
    expect(none).toContain('Bisher haben wir noch keine Anfragen an Praxen gesendet.');
    expect(none).toContain('Wir bereiten die ersten Anfragen für Sie vor');
    // nothing sent: nothing could have been answered, so no line on answers at all
    expect(none).not.toContain('Antwort');
    expect(renderWeeklyEmail(facts({ requestsSince: 0 }), links).text).toContain('keine neuen Anfragen');
    const stillNone = renderWeeklyEmail(facts({ requestsSince: 0, requestsTotal: 0, answersTotal: 0, answersSince: 0 }), links).text;
    expect(stillNone).toContain('Bisher haben wir noch keine Anfragen an Praxen gesendet.');
    expect(stillNone).not.toContain('Insgesamt');
    expect(stillNone).toContain('Wir bereiten die ersten Anfragen für Sie vor');
    expect(stillNone).not.toContain('Antwort');
    expect(renderWeeklyEmail(facts({ lastSent: null, requestsTotal: 0, requestsSince: 0, answersTotal: 0 }), links).html).not.toContain('Antwort');
    // requests sent but none answered yet: that is said
    expect(renderWeeklyEmail(facts({ requestsTotal: 2, answersTotal: 0, answersSince: 0 }), links).text).toContain('Antworten haben wir bisher noch keine erhalten.');
    expect(renderWeeklyEmail(facts({ acceptances: 1 }), links).text).toContain('positive Rückmeldung');
  });
});

describe('weekly status email German for small numbers', () => {
  const lines = (over: Partial<WeeklyFacts>) => {
    const out = renderWeeklyEmail(facts(over), links);
    return { out, text: out.text };
  };

  it('a total of one request reads as correct German (no "sind es 1 Anfrage"), in text and HTML', () => {
    const { out, text } = lines({ requestsTotal: 1, requestsSince: 0, answersTotal: 0, answersSince: 0 });
    expect(text).not.toMatch(/sind es bisher 1 Anfrage/);
    expect(text).toContain('Insgesamt haben wir bisher 1 Anfrage an eine Praxis gesendet.');
    expect(out.html).toContain('<li>Insgesamt haben wir bisher 1 Anfrage an eine Praxis gesendet.</li>');
    expect(lines({ requestsTotal: 9, requestsSince: 3 }).text).toContain('Insgesamt haben wir bisher 9 Anfragen an Praxen gesendet.');
  });

  it('answers that all came since the last email are not counted twice ("1 Antwort erhalten, 1 davon")', () => {
    expect(lines({ answersTotal: 1, answersSince: 1 }).text).toContain('- Seit unserer letzten Nachricht haben wir die erste Antwort erhalten.');
    expect(lines({ answersTotal: 2, answersSince: 2 }).text).toContain('- Seit unserer letzten Nachricht haben wir die ersten 2 Antworten erhalten.');
    expect(lines({ answersTotal: 3, answersSince: 1 }).text).toContain('- Wir haben 3 Antworten erhalten, 1 davon seit unserer letzten Nachricht.');
    expect(lines({ answersTotal: 1, answersSince: 1 }).text).not.toContain('davon');
  });

  it('several acceptances are not announced as one', () => {
    expect(lines({ answersTotal: 3, acceptances: 1, acceptancesSince: 1 }).text).toContain('Es gibt eine positive Rückmeldung.');
    const two = lines({ answersTotal: 3, acceptances: 2, acceptancesSince: 2 }).text;
    expect(two).toContain('Es gibt 2 positive Rückmeldungen.');
    expect(two).not.toContain('eine positive Rückmeldung');
  });

  it('an acceptance promises a call when it is new (or in the first email); later emails state it and invite the patient to call', () => {
    const promise = 'Wir melden uns in den nächsten Tagen persönlich bei Ihnen';
    expect(lines({ lastSent: null, acceptances: 1, acceptancesSince: 0 }).text).toContain(`Es gibt eine positive Rückmeldung. ${promise}`);
    const old1 = lines({ acceptances: 1, acceptancesSince: 0 }).text;
    expect(old1).toContain('Es liegt eine positive Rückmeldung vor. Dazu haben wir uns bei Ihnen gemeldet oder melden uns in Kürze. Haben Sie noch nichts von uns gehört, melden Sie sich gern bei uns.');
    expect(old1).not.toContain(promise);
    expect(lines({ acceptances: 3, acceptancesSince: 0 }).text).toContain('Es liegen 3 positive Rückmeldungen vor.');
    expect(lines({ acceptances: 3, acceptancesSince: 1 }).text).toContain(`Es gibt 3 positive Rückmeldungen, eine davon neu seit unserer letzten Nachricht. ${promise}`);
    expect(lines({ acceptances: 3, acceptancesSince: 2 }).text).toContain('Es gibt 3 positive Rückmeldungen, 2 davon neu seit unserer letzten Nachricht.');
  });
});

describe('weekly status email form', () => {
  it('the plain text separates its footer with "-- " (trailing space, RFC 3676), and no other line ends in whitespace', () => {
    const text = renderWeeklyEmail(facts(), { ...links, contactPhone: '030 123' }).text;
    const lines = text.split('\n');
    expect(lines).toContain('-- ');
    expect(lines).not.toContain('--');
    expect(lines.filter((l) => /\s$/.test(l))).toEqual(['-- ']);
    expect(text).not.toContain('\r');
    expect(text.endsWith('\n')).toBe(true);
  });

  it('the phone number in the HTML is a tel: link with digits and + only; the text shows it as given', () => {
    const out = renderWeeklyEmail(facts(), { ...links, contactPhone: '+49 (30) 123 456-78' });
    expect(out.html).toContain('Telefon: <a href="tel:+493012345678">+49 (30) 123 456-78</a>');
    expect(out.text).toContain('Telefon: +49 (30) 123 456-78');
    expect(renderWeeklyEmail(facts(), { ...links, contactPhone: '030 / 123 45' }).html).toContain('<a href="tel:03012345">030 / 123 45</a>');
    expect(renderWeeklyEmail(facts(), links).html).not.toContain('Telefon');
    // The trunk 0 in brackets after the country code is not dialled: +49 (0)30 is +4930.
    expect(renderWeeklyEmail(facts(), { ...links, contactPhone: '+49 (0)30 1234567' }).html).toContain('<a href="tel:+49301234567">+49 (0)30 1234567</a>');
    expect(renderWeeklyEmail(facts(), { ...links, contactPhone: '+49 ( 0 ) 30 1234567' }).html).toContain('href="tel:+49301234567"');
  });
});

describe('weekly status email on a phone', () => {
  // A 99-character first name without spaces made a 375 px view 808 px wide (checked in
  // chromium: 375 px with the wrapping below).
  it('the body and the text container break long words (overflow-wrap:anywhere, word-break:break-word)', () => {
    const html = renderWeeklyEmail(facts({ vorname: 'A'.repeat(99) }), links).html;
    const body = /<body style="([^"]*)"/.exec(html)?.[1] ?? '';
    const container = /<div style="([^"]*)"/.exec(html)?.[1] ?? '';
    for (const style of [body, container]) {
      expect(style).toContain('overflow-wrap:anywhere');
      expect(style).toContain('word-break:break-word');
    }
    expect(html).toContain(`Guten Tag ${'A'.repeat(99)} Beispiel,`);
  });
});
