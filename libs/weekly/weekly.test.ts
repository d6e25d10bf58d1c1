import { describe, expect, it } from 'vitest';
import { isPlausibleEmail, trimEmail } from './email-address.js';
import { isoWeekOf, isoWeekRange, parseIsoWeek } from './iso-week.js';
import { dueWeek, nextRun, previousRun } from './schedule.js';
import { signUnsubscribeToken, verifyUnsubscribeToken } from './unsubscribe-token.js';

const berlin = { cron: '0 9 * * 1', timeZone: 'Europe/Berlin' };
const hm = (d: Date) => new Intl.DateTimeFormat('de-DE', { timeZone: 'Europe/Berlin', weekday: 'short', hour: '2-digit', minute: '2-digit' }).format(d);

describe('ISO weeks in a time zone', () => {
  it('knows year boundaries and the local date', () => {
    expect(isoWeekOf(new Date('2026-11-23T08:00:00Z'), 'Europe/Berlin')).toBe('2026-W48');
    expect(isoWeekOf(new Date('2027-01-01T12:00:00Z'), 'Europe/Berlin')).toBe('2026-W53');
    expect(isoWeekOf(new Date('2024-12-30T12:00:00Z'), 'Europe/Berlin')).toBe('2025-W01');
    // Sunday 23:30 UTC is already Monday in Berlin.
    expect(isoWeekOf(new Date('2026-11-29T23:30:00Z'), 'Europe/Berlin')).toBe('2026-W49');
    expect(isoWeekOf(new Date('2026-11-29T23:30:00Z'), 'UTC')).toBe('2026-W48');
  });
  it('gives local Monday midnights as week bounds, across DST', () => {
    expect(isoWeekRange('2026-W48', 'Europe/Berlin')).toEqual({ start: new Date('2026-11-22T23:00:00Z'), end: new Date('2026-11-29T23:00:00Z') });
    // The week holding the last Sunday of March starts in winter time and ends in summer time.
    expect(isoWeekRange('2026-W13', 'Europe/Berlin')).toEqual({ start: new Date('2026-03-22T23:00:00Z'), end: new Date('2026-03-29T22:00:00Z') });
    // ... and the week holding the last Sunday of October the other way round.
    expect(isoWeekRange('2026-W43', 'Europe/Berlin')).toEqual({ start: new Date('2026-10-18T22:00:00Z'), end: new Date('2026-10-25T23:00:00Z') });
  });
  it('refuses what is not a week', () => {
    expect(() => parseIsoWeek('2026-48')).toThrow(/expected e.g. 2026-W48/);
    expect(() => parseIsoWeek('2026-W54')).toThrow(/no such ISO week/);
    expect(() => parseIsoWeek('2025-W53')).toThrow(/no such ISO week/);
    expect(parseIsoWeek('2026-W53')).toEqual({ year: 2026, week: 53 });
  });
});

describe('weekly schedule across DST', () => {
  it('fires Monday 09:00 Berlin before and after the last Sunday of March', () => {
    const before = nextRun(berlin, new Date('2026-03-20T00:00:00Z'));
    const after = nextRun(berlin, before);
    const after2 = nextRun(berlin, after);
    expect(before.toISOString()).toBe('2026-03-23T08:00:00.000Z'); // CET
    expect(after.toISOString()).toBe('2026-03-30T07:00:00.000Z'); // CEST, DST began 29 March
    expect(after2.toISOString()).toBe('2026-04-06T07:00:00.000Z');
    for (const d of [before, after, after2]) expect(hm(d)).toBe('Mo., 09:00');
  });
  it('fires Monday 09:00 Berlin before and after the last Sunday of October', () => {
    const before = nextRun(berlin, new Date('2026-10-20T00:00:00Z'));
    const after = nextRun(berlin, before);
    expect(before.toISOString()).toBe('2026-10-26T08:00:00.000Z'); // CET already: DST ended 25 October
    expect(nextRun(berlin, new Date('2026-10-15T00:00:00Z')).toISOString()).toBe('2026-10-19T07:00:00.000Z'); // CEST
    expect(after.toISOString()).toBe('2026-11-02T08:00:00.000Z');
    for (const d of [before, after]) expect(hm(d)).toBe('Mo., 09:00');
  });
  it('previousRun includes the exact moment', () => {
    expect(previousRun(berlin, new Date('2026-03-30T07:00:00Z'))?.toISOString()).toBe('2026-03-30T07:00:00.000Z');
    expect(previousRun(berlin, new Date('2026-03-30T06:59:59Z'))?.toISOString()).toBe('2026-03-23T08:00:00.000Z');
  });
  it('a time the spring DST change skips (Sunday 02:30 Berlin) fires at 03:30, and that week is due', () => {
    const sunday = { cron: '30 2 * * 0', timeZone: 'Europe/Berlin' };
    const fired = nextRun(sunday, new Date('2026-03-28T00:00:00Z'));
    expect(fired.toISOString()).toBe('2026-03-29T01:30:00.000Z'); // 03:30 CEST: when the scheduler's tick runs
    expect(previousRun(sunday, fired)?.toISOString()).toBe('2026-03-29T01:30:00.000Z');
    expect(previousRun(sunday, new Date('2026-03-29T01:29:59Z'))?.toISOString()).toBe('2026-03-22T01:30:00.000Z');
    // The tick (and a catch-up later that Sunday) enqueue week 13, not "no week due".
    expect(dueWeek(sunday, fired)).toBe('2026-W13');
    expect(dueWeek(sunday, new Date('2026-03-29T20:00:00Z'))).toBe('2026-W13');
    // October's repeated hour: one run (the first 02:30), the week due from then on.
    expect(nextRun(sunday, new Date('2026-10-24T00:00:00Z')).toISOString()).toBe('2026-10-25T00:30:00.000Z');
    expect(dueWeek(sunday, new Date('2026-10-25T03:00:00Z'))).toBe('2026-W43');
  });
  it('is due within the same week only (catch-up, never past weeks)', () => {
    expect(dueWeek(berlin, new Date('2026-11-23T07:59:00Z'))).toBeNull(); // Monday 08:59: not yet
    expect(dueWeek(berlin, new Date('2026-11-23T08:00:00Z'))).toBe('2026-W48');
    expect(dueWeek(berlin, new Date('2026-11-27T15:00:00Z'))).toBe('2026-W48'); // back on Friday
    expect(dueWeek(berlin, new Date('2026-11-29T22:59:00Z'))).toBe('2026-W48'); // Sunday 23:59 Berlin
    expect(dueWeek(berlin, new Date('2026-11-29T23:00:00Z'))).toBeNull(); // Monday 00:00: new week, not yet due
  });
});

describe('unsubscribe tokens', () => {
  const secret = 'x'.repeat(40);
  it('accepts the real token and refuses forged, altered or reused ones', () => {
    const token = signUnsubscribeToken(secret, 42);
    expect(verifyUnsubscribeToken(secret, token)).toBe(42);
    expect(verifyUnsubscribeToken('y'.repeat(40), token)).toBeNull();
    expect(verifyUnsubscribeToken(secret, token.replace(/^42\./, '43.'))).toBeNull();
    const sig = token.split('.')[1]!;
    const flipped = sig.slice(0, 10) + (sig[10] === 'A' ? 'B' : 'A') + sig.slice(11);
    expect(verifyUnsubscribeToken(secret, `42.${flipped}`)).toBeNull();
    expect(verifyUnsubscribeToken(secret, token, 'other-purpose')).toBeNull();
    expect(verifyUnsubscribeToken(secret, `${token}x`)).toBeNull();
    expect(verifyUnsubscribeToken(secret, '')).toBeNull();
    expect(verifyUnsubscribeToken(secret, `042.${sig}`)).toBeNull();
  });
});

describe('unsubscribe secret configuration', () => {
  it('refuses to start in production without UNSUBSCRIBE_SECRET, and uses a development secret elsewhere', async () => {
    const { loadConfig, DEV_UNSUBSCRIBE_SECRET } = await import('../config/index.js');
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/UNSUBSCRIBE_SECRET: required when NODE_ENV=production/);
    expect(() => loadConfig({ NODE_ENV: 'production', UNSUBSCRIBE_SECRET: 'too-short' })).toThrow(/UNSUBSCRIBE_SECRET: expected at least 32 characters/);
    const production = {
      NODE_ENV: 'production',
      UNSUBSCRIBE_SECRET: 's'.repeat(32),
      PUBLIC_BASE_URL: 'https://app.curavani.com',
      MAIL_DRIVER: 'resend',
      RESEND_API_KEY: 're_test',
      STORAGE_DRIVER: 'gcs',
      GCS_BUCKET: 'curavani-staging',
    };
    expect(loadConfig(production).weekly.unsubscribeSecret).toBe('s'.repeat(32));
    // the links in production emails must reach patients over HTTPS (RFC 8058)
    expect(() => loadConfig({ ...production, PUBLIC_BASE_URL: undefined })).toThrow(/PUBLIC_BASE_URL: expected an https address .* \(got http:\/\/127.0.0.1:3000\)/);
    expect(() => loadConfig({ ...production, PUBLIC_BASE_URL: 'http://app.curavani.com' })).toThrow(/PUBLIC_BASE_URL: expected an https address/);
    expect(() => loadConfig({ ...production, PUBLIC_BASE_URL: 'https://localhost:3000' })).toThrow(/PUBLIC_BASE_URL: expected an https address/);
    expect(loadConfig({ NODE_ENV: 'development' }).weekly.unsubscribeSecret).toBe(DEV_UNSUBSCRIBE_SECRET);
  });

  it('refuses the development secret whenever emails really go out (MAIL_DRIVER=resend), whatever NODE_ENV says', async () => {
    const { loadConfig } = await import('../config/index.js');
    // The development secret is in the repository: links signed with it can be forged for
    // every patient id (opt-outs and opt-ins of other patients, and which ids exist).
    for (const NODE_ENV of ['development', 'test', undefined]) {
      expect(() => loadConfig({ NODE_ENV, MAIL_DRIVER: 'resend', RESEND_API_KEY: 're_x' })).toThrow(
        /^invalid configuration: UNSUBSCRIBE_SECRET: required when MAIL_DRIVER=resend \(it is missing\)/,
      );
    }
    expect(loadConfig({ MAIL_DRIVER: 'resend', RESEND_API_KEY: 're_x', UNSUBSCRIBE_SECRET: 's'.repeat(32) }).weekly.unsubscribeSecret).toBe('s'.repeat(32));
  });
});

describe('unsubscribe secret rotation (UNSUBSCRIBE_SECRET_PREVIOUS)', () => {
  const current = 'c'.repeat(32);
  const earlier = 'e'.repeat(32);
  it('a token signed with an earlier secret verifies when that secret is listed after the current one, not otherwise', () => {
    const old = signUnsubscribeToken(earlier, 42);
    expect(verifyUnsubscribeToken(current, old)).toBeNull();
    expect(verifyUnsubscribeToken([current, earlier], old)).toBe(42);
    expect(verifyUnsubscribeToken([current, earlier], signUnsubscribeToken(current, 42))).toBe(42);
    expect(verifyUnsubscribeToken([current, earlier], signUnsubscribeToken('x'.repeat(32), 42))).toBeNull();
    expect(verifyUnsubscribeToken([current, earlier], signUnsubscribeToken(earlier, 42, 'some-other-purpose'))).toBeNull();
    expect(verifyUnsubscribeToken([], old)).toBeNull();
  });

  it('is parsed as a comma-separated list, each at least 32 characters, never the development secret where emails go out; its values are never in the error', async () => {
    const { loadConfig, DEV_UNSUBSCRIBE_SECRET } = await import('../config/index.js');
    expect(loadConfig({}).weekly.previousUnsubscribeSecrets).toEqual([]);
    expect(loadConfig({ UNSUBSCRIBE_SECRET_PREVIOUS: ` ${earlier} , ,${'f'.repeat(40)}` }).weekly.previousUnsubscribeSecrets).toEqual([earlier, 'f'.repeat(40)]);
    const short = () => loadConfig({ UNSUBSCRIBE_SECRET_PREVIOUS: `${earlier},too-short-secret` });
    expect(short).toThrow(/UNSUBSCRIBE_SECRET_PREVIOUS: expected at least 32 characters in each comma-separated secret \(entry 2 has 16\) \(got a value of 49 characters\)/);
    expect(short).not.toThrow(/too-short-secret|eeee/);
    const production = {
      NODE_ENV: 'production',
      UNSUBSCRIBE_SECRET: current,
      PUBLIC_BASE_URL: 'https://app.curavani.com',
      MAIL_DRIVER: 'resend',
      RESEND_API_KEY: 're_test',
      STORAGE_DRIVER: 'gcs',
      GCS_BUCKET: 'curavani-staging',
    };
    expect(loadConfig({ ...production, UNSUBSCRIBE_SECRET_PREVIOUS: earlier }).weekly.previousUnsubscribeSecrets).toEqual([earlier]);
    expect(() => loadConfig({ ...production, UNSUBSCRIBE_SECRET_PREVIOUS: `${earlier},${DEV_UNSUBSCRIBE_SECRET}` })).toThrow(
      /UNSUBSCRIBE_SECRET_PREVIOUS \(entry 2\): must not be the development secret when NODE_ENV=production/,
    );
    expect(() => loadConfig({ ...production, UNSUBSCRIBE_SECRET: DEV_UNSUBSCRIBE_SECRET })).toThrow(/UNSUBSCRIBE_SECRET: must not be the development secret/);
    expect(() => loadConfig({ MAIL_DRIVER: 'resend', RESEND_API_KEY: 're_x', UNSUBSCRIBE_SECRET: current, UNSUBSCRIBE_SECRET_PREVIOUS: DEV_UNSUBSCRIBE_SECRET })).toThrow(
      /UNSUBSCRIBE_SECRET_PREVIOUS \(entry 1\): must not be the development secret when MAIL_DRIVER=resend/,
    );
    // outbox only (nothing really goes out): the development secret as an earlier one is harmless
    expect(loadConfig({ UNSUBSCRIBE_SECRET_PREVIOUS: DEV_UNSUBSCRIBE_SECRET }).weekly.previousUnsubscribeSecrets).toEqual([DEV_UNSUBSCRIBE_SECRET]);
  });
});

describe('plausible email addresses', () => {
  it('accepts whatever looks like an address (internationalised too), trims ASCII whitespace, refuses what is not one', () => {
    for (const ok of ['erika@example.org', ' Erika.Muster@Example.ORG\t', "o'neil@example.org", 'a+b@sub.example.co.uk', 'jörg@müller.de', 'max@example.xn--p1ai']) {
      expect(isPlausibleEmail(ok)).toBe(true);
    }
    for (const bad of [null, undefined, '', '   ', 'kein-gueltiger-eintrag', 'a@b', 'a@b.', '@b.de', 'a@.de', 'a b@c.de', 'a@b@c.de', '<a@b.de>', 'a@b.de\u0000x', 'Erika <a@b.de>']) {
      expect(isPlausibleEmail(bad)).toBe(false);
    }
    expect(trimEmail(' \ta@b.de\n')).toBe('a@b.de');
  });
});
