import { describe, expect, it } from 'vitest';
import { credentialsMatch, dashboardAccess, hostHeaderName, isLoopbackHost, parseBasicAuth, safeEqual } from './auth.js';
import { html } from './html.js';

describe('dashboard auth helpers', () => {
  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost', 'LOCALHOST', 'app.localhost']) {
      expect(isLoopbackHost(h), h).toBe(true);
    }
    for (const h of ['0.0.0.0', '::', '10.0.0.5', '192.168.1.2', 'example.com', '128.0.0.1', '::ffff:10.0.0.1', '', 'localhost.example.com']) {
      expect(isLoopbackHost(h), h).toBe(false);
    }
  });

  it('reads the host name of a Host header, without the port', () => {
    expect(hostHeaderName('localhost:3000')).toBe('localhost');
    expect(hostHeaderName('127.0.0.1')).toBe('127.0.0.1');
    expect(hostHeaderName('[::1]:3000')).toBe('[::1]');
    expect(hostHeaderName('evil.example:3000')).toBe('evil.example');
    expect(hostHeaderName(undefined)).toBe('');
    for (const h of ['localhost:3000', '127.0.0.1:80', '[::1]:3000']) expect(isLoopbackHost(hostHeaderName(h)), h).toBe(true);
    for (const h of ['evil.example:3000', 'localhost.evil.example', '[2001:db8::1]:3000', '']) expect(isLoopbackHost(hostHeaderName(h)), h).toBe(false);
  });

  it('chooses basic auth with credentials, loopback-open or refused without', () => {
    expect(dashboardAccess({ host: '0.0.0.0', dashboardUser: 'a', dashboardPassword: 'b' })).toEqual({ mode: 'basic', credentials: { user: 'a', password: 'b' } });
    expect(dashboardAccess({ host: '127.0.0.1' })).toEqual({ mode: 'loopback-open' });
    expect(dashboardAccess({ host: '0.0.0.0' })).toEqual({ mode: 'refused', because: 'non-loopback' });
    expect(dashboardAccess({ host: '10.1.2.3', dashboardUser: 'a' })).toEqual({ mode: 'refused', because: 'non-loopback' });
    // Production serves the public unsubscribe links through a proxy: no login-free pages there.
    expect(dashboardAccess({ host: '127.0.0.1' }, 'production')).toEqual({ mode: 'refused', because: 'production' });
    expect(dashboardAccess({ host: '127.0.0.1', dashboardUser: 'a', dashboardPassword: 'b' }, 'production')).toMatchObject({ mode: 'basic' });
    expect(dashboardAccess({ host: '127.0.0.1' }, 'test')).toEqual({ mode: 'loopback-open' });
  });

  it('parses Basic credentials, including colons in the password and UTF-8', () => {
    const enc = (s: string) => `Basic ${Buffer.from(s, 'utf8').toString('base64')}`;
    expect(parseBasicAuth(enc('ops:pa:ss'))).toEqual({ user: 'ops', password: 'pa:ss' });
    expect(parseBasicAuth(enc('jürgen:ßecret'))).toEqual({ user: 'jürgen', password: 'ßecret' });
    expect(parseBasicAuth(`basic ${Buffer.from('a:b').toString('base64')}`)).toEqual({ user: 'a', password: 'b' });
    expect(parseBasicAuth(undefined)).toBeNull();
    expect(parseBasicAuth('Bearer abc')).toBeNull();
    expect(parseBasicAuth(enc('no-colon'))).toBeNull();
  });

  it('compares credentials exactly, whatever the lengths', () => {
    const expected = { user: 'ops', password: 'secret' };
    expect(credentialsMatch({ user: 'ops', password: 'secret' }, expected)).toBe(true);
    expect(credentialsMatch({ user: 'ops', password: 'secret ' }, expected)).toBe(false);
    expect(credentialsMatch({ user: 'ops', password: '' }, expected)).toBe(false);
    expect(credentialsMatch({ user: 'Ops', password: 'secret' }, expected)).toBe(false);
    expect(credentialsMatch(null, expected)).toBe(false);
    expect(safeEqual('a'.repeat(1000), 'a')).toBe(false);
  });

  it('html escapes interpolated values but not nested html', () => {
    const inner = html`<b>${'<i>'}</b>`;
    expect(html`<p title="${'"x"'}">${inner}${['<a>', 1]}${null}</p>`.value).toBe('<p title="&quot;x&quot;"><b>&lt;i&gt;</b>&lt;a&gt;1</p>');
  });
});
