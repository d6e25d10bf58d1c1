import { describe, expect, it } from 'vitest';
import { renderStaffEmail } from './staff.js';

describe('renderStaffEmail', () => {
  it('escapes everything it puts into HTML and keeps the plain text readable', () => {
    const out = renderStaffEmail({
      subject: 'Import fehlgeschlagen\r\nBcc: evil@example.com',
      heading: 'Patient <b>importiert</b>',
      rows: [
        ['Name', '<script>alert(1)</script> Müller'],
        ['Quelle', 'gs://bucket/registrations/a&b.json'],
        ['Leer', null],
      ],
      paragraphs: ['"quoted" & <tagged>'],
    });
    expect(out.subject).toBe('Import fehlgeschlagen Bcc: evil@example.com');
    expect(out.html).not.toContain('<script>');
    expect(out.html).toContain('&lt;script&gt;alert(1)&lt;/script&gt; Müller');
    expect(out.html).toContain('Patient &lt;b&gt;importiert&lt;/b&gt;');
    expect(out.html).toContain('a&amp;b.json');
    expect(out.html).toContain('&quot;quoted&quot; &amp; &lt;tagged&gt;');
    expect(out.text).toContain('Name:   <script>alert(1)</script> Müller');
    expect(out.text).toContain('Leer:   –');
  });

  it('reads on a phone: viewport, long values break, addresses are links, a list paragraph is a list', () => {
    const out = renderStaffEmail({
      subject: 's',
      heading: 'h',
      rows: [['Bericht', 'http://127.0.0.1:3000/therapist-imports/runs/5?a=1&b=2']],
      paragraphs: ['Siehe https://fleet.example.org/imports.', { lead: 'Datei 52074.json: nicht importiert', items: ['Fehler: <eins>', 'Fehler: zwei'] }, 'Ende'],
    });
    expect(out.html).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
    expect(out.html).toContain('overflow-wrap:anywhere');
    // The address is escaped in the link and its text; a full stop after it is not part of it.
    expect(out.html).toContain('<a href="http://127.0.0.1:3000/therapist-imports/runs/5?a&#x3D;1&amp;b&#x3D;2">http://127.0.0.1:3000/therapist-imports/runs/5?a&#x3D;1&amp;b&#x3D;2</a>');
    expect(out.html).toContain('<a href="https://fleet.example.org/imports">https://fleet.example.org/imports</a>.');
    expect(out.html).toMatch(/<p[^>]*>Datei 52074.json: nicht importiert<\/p>\s*<ul[^>]*><li>Fehler: &lt;eins&gt;<\/li><li>Fehler: zwei<\/li><\/ul>/);
    expect(out.text).toContain('Datei 52074.json: nicht importiert\n  - Fehler: <eins>\n  - Fehler: zwei\n\nEnde');
    // A list paragraph without items is its lead line (an empty list is false to the template).
    const empty = renderStaffEmail({ subject: 's', heading: 'h', rows: [], paragraphs: [{ lead: 'Nur die Zeile', items: [] }] });
    expect(empty.html).toMatch(/<p[^>]*>Nur die Zeile<\/p>/);
    expect(empty.html).not.toContain('[object Object]');
  });
});
