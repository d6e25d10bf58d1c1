import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../config/index.js';
import { createMailDriver } from '../index.js';
import { mapResendError, retryAfterMs } from './resend.js';

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

  it('createMailDriver: outbox by default, resend when configured', () => {
    expect(createMailDriver(loadConfig({}).mail).name).toBe('outbox');
    expect(createMailDriver(loadConfig({ MAIL_DRIVER: 'resend', RESEND_API_KEY: 're_x', RESEND_BASE_URL: 'http://127.0.0.1:1' }).mail).name).toBe('resend');
  });
});
