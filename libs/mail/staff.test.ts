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
});
