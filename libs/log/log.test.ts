import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from './index.js';

function capture() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { lines, stream };
}

describe('logger', () => {
  it('writes JSON and redacts personal fields as a safety net, at any depth', () => {
    const { lines, stream } = capture();
    const log = createLogger({ level: 'info', pretty: 'false' }, stream);
    log.child({ queue: 'patient-import', jobId: 'patient-import.ledger.1', attempt: 1 }).info(
      { ledgerId: 1, vorname: 'Max', email: 'max@example.com', patient: { nachname: 'Mustermann', geburtsdatum: '2000-01-01' }, deep: { a: { objectName: 'Mustermann_Max.json' } } },
      'patient imported',
    );
    const entry = JSON.parse(lines[0]!);
    expect(entry).toMatchObject({ msg: 'patient imported', queue: 'patient-import', jobId: 'patient-import.ledger.1', attempt: 1, ledgerId: 1 });
    expect(entry.vorname).toBe('[redacted]');
    expect(entry.email).toBe('[redacted]');
    expect(entry.patient.nachname).toBe('[redacted]');
    expect(entry.patient.geburtsdatum).toBe('[redacted]');
    expect(entry.deep.a.objectName).toBe('[redacted]');
    expect(lines[0]).not.toMatch(/Max|Mustermann|example\.com/);
  });

  it('redacts credentials too (a settings object logged by mistake)', () => {
    const { lines, stream } = capture();
    const log = createLogger({ level: 'info', pretty: 'false' }, stream);
    log.info(
      {
        kafka: { brokers: ['k1:9093'], sasl: { mechanism: 'scram-sha-512', username: 'fleet', password: 'pw-kafka-1' }, tls: { key: '-----BEGIN PRIVATE KEY-----' } },
        mail: { resendApiKey: 're_live_123' },
        headers: { authorization: 'Basic b3BzOnB3' },
      },
      'settings',
    );
    const entry = JSON.parse(lines[0]!);
    expect(entry.kafka.brokers).toEqual(['k1:9093']);
    expect(entry.kafka.sasl).toBe('[redacted]');
    expect(entry.kafka.tls).toBe('[redacted]');
    expect(entry.mail.resendApiKey).toBe('[redacted]');
    expect(entry.headers.authorization).toBe('[redacted]');
    expect(lines[0]).not.toMatch(/pw-kafka-1|PRIVATE KEY|re_live_123|b3BzOnB3/);
  });

  it('logs errors without the properties that carry row values (PostgreSQL detail, parameters)', () => {
    const { lines, stream } = capture();
    const log = createLogger({ level: 'info', pretty: 'false' }, stream);
    const err = Object.assign(new Error('duplicate key value violates unique constraint "x"'), {
      code: '23505',
      detail: 'Key (email)=(max@example.com) already exists.',
      parameters: ['Max', 'max@example.com'],
      query: 'insert into patienten ...',
    });
    log.warn({ err, ledgerId: 3 }, 'import failed');
    const entry = JSON.parse(lines[0]!);
    expect(entry.err).toMatchObject({ type: 'Error', code: '23505', message: 'duplicate key value violates unique constraint "x"' });
    expect(entry.err.detail).toBeUndefined();
    expect(entry.err.parameters).toBeUndefined();
    expect(lines[0]).not.toContain('example.com');
  });
});
