import { describe, expect, it } from 'vitest';
import { closedPort, silentServer } from '../../testing/ports.js';
import { loadConfig } from '../../config/index.js';
import { createMailDriver } from '../index.js';
import { createResendDriver, mapResendError, networkCause, providerAddress, retryAfterMs } from './resend.js';

describe('Resend answers -> SendResult', () => {
  it('429 is transient with retry-after in ms (seconds or an HTTP date)', () => {
    expect(mapResendError({ statusCode: 429, name: 'rate_limit_exceeded', message: 'slow down' }, { 'retry-after': '2' })).toEqual({
      ok: false,
      transient: true,
      status: 429,
      message: 'resend 429 rate_limit_exceeded: slow down',
      retryAfterMs: 2000,
    });
    expect(retryAfterMs({ 'retry-after': new Date(10_000).toUTCString() }, 7_000)).toBe(3000);
    expect(retryAfterMs(null)).toBeUndefined();
  });

  it('5xx, network errors and concurrent idempotent requests are transient; validation errors permanent', () => {
    expect(mapResendError({ statusCode: 500, name: 'internal_server_error', message: 'x' }, null)).toMatchObject({ transient: true, status: 500 });
    expect(mapResendError({ statusCode: null, name: 'application_error', message: 'Unable to fetch data' }, null)).toMatchObject({ transient: true });
    expect(mapResendError({ statusCode: 409, name: 'concurrent_idempotent_requests', message: 'x' }, null)).toMatchObject({ transient: true });
    expect(mapResendError({ statusCode: 422, name: 'validation_error', message: 'Invalid `to`' }, null)).toMatchObject({ transient: false, status: 422 });
    expect(mapResendError({ statusCode: 409, name: 'invalid_idempotent_request', message: 'x' }, null)).toMatchObject({ transient: false });
  });

  it('401 and 403 refuse the account, not the message: transient, refused, and a reason without the answer\'s text', () => {
    expect(mapResendError({ statusCode: 403, name: 'invalid_api_key', message: 'API key is invalid' }, null)).toEqual({
      ok: false,
      transient: true,
      refused: true,
      status: 403,
      message: 'the email provider refused the API key (403 invalid_api_key): check RESEND_API_KEY',
    });
    for (const name of ['missing_api_key', 'restricted_api_key', 'validation_error'] as const) {
      expect(mapResendError({ statusCode: 401, name, message: 'x' }, null)).toMatchObject({
        transient: true,
        refused: true,
        status: 401,
        message: `the email provider refused the API key (401 ${name}): check RESEND_API_KEY`,
      });
    }
    // An unverified sending domain: Resend's text names the account's own address; it stays out.
    const domain = mapResendError(
      { statusCode: 403, name: 'validation_error', message: 'You can only send testing emails to your own email address (owner@example.com).' },
      { 'retry-after': '5' },
    );
    expect(domain).toEqual({
      ok: false,
      transient: true,
      refused: true,
      status: 403,
      message: 'the email provider refused the sender (403 validation_error): check that the sending domain of MAIL_FROM is verified in Resend, and RESEND_API_KEY',
    });
    expect(mapResendError({ statusCode: 500, name: 'internal_server_error', message: 'x' }, null)).not.toHaveProperty('refused');
  });

  it('createMailDriver: outbox by default, resend when configured', () => {
    expect(createMailDriver(loadConfig({}).mail).name).toBe('outbox');
    expect(createMailDriver(loadConfig({ MAIL_DRIVER: 'resend', RESEND_API_KEY: 're_x', RESEND_BASE_URL: 'http://127.0.0.1:1', UNSUBSCRIBE_SECRET: 's'.repeat(32) }).mail).name).toBe('resend');
  });
});

describe('a request that gets no HTTP answer', () => {
  // The SDK swallows fetch's error and says "Unable to fetch data. The request could not be
  // resolved." also for a refused connection, with no address: operators looked for a DNS fault.
  const mail = { from: 'f@example.org', to: 't@example.org', subject: 's', html: '<p>x</p>', text: 'x', idempotencyKey: 'k-1' };

  it('names the provider address and the cause: refused', async () => {
    const port = await closedPort();
    const driver = createResendDriver({ apiKey: 're_secret_key', baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 2_000 });
    const r = await driver.send(mail);
    expect(r).toEqual({ ok: false, transient: true, message: `resend network error: could not connect to 127.0.0.1:${port} (ECONNREFUSED)` });
    const batch = await driver.sendBatch([mail, { ...mail, idempotencyKey: 'k-2' }], { idempotencyKey: 'b-1' });
    expect(batch.map((x) => !x.ok && x.message)).toEqual([`resend network error: could not connect to 127.0.0.1:${port} (ECONNREFUSED)`, `resend network error: could not connect to 127.0.0.1:${port} (ECONNREFUSED)`]);
  });

  it('names the provider address and the cause: no answer within the request limit', { timeout: 10_000 }, async () => {
    const silent = await silentServer();
    try {
      const driver = createResendDriver({ apiKey: 're_secret_key', baseUrl: `http://127.0.0.1:${silent.port}/`, timeoutMs: 500 });
      expect(await driver.send(mail)).toMatchObject({ ok: false, transient: true, message: `resend network error: no answer from 127.0.0.1:${silent.port} within 500 ms` });
    } finally {
      await silent.close();
    }
  });

  it('names the host it could not resolve', { timeout: 15_000 }, async () => {
    const cause = await networkCause(providerAddress('https://api.resend.invalid'));
    expect(cause).toMatch(/^could not resolve api\.resend\.invalid \((ENOTFOUND|EAI_AGAIN)\)$|^no answer from api\.resend\.invalid:443 while connecting/);
    expect(providerAddress(undefined).label).toBe('api.resend.com:443');
  });
});
