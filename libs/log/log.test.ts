import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DrizzleQueryError } from 'drizzle-orm/errors';
import { loadConfig } from '../config/index.js';
import { errorMessage } from '../errors/index.js';
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
  it('names the process (FLEET_INSTANCE) on every line, of child loggers too, and nothing when it is not set', () => {
    const { lines, stream } = capture();
    const log = createLogger(loadConfig({ FLEET_INSTANCE: 'worker-2', LOG_PRETTY: 'false' }).log, stream);
    log.info('fleet started');
    log.child({ queue: 'patient-import', jobId: 'patient-import.ledger.1' }).warn('job lock could not be renewed');
    expect(lines.map((l) => JSON.parse(l).instance)).toEqual(['worker-2', 'worker-2']);
    const unnamed = capture();
    createLogger(loadConfig({ LOG_PRETTY: 'false' }).log, unnamed.stream).info('fleet started');
    expect(JSON.parse(unnamed.lines[0]!)).not.toHaveProperty('instance');
  });

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

  it('names an error by its class in `type`, without a censored `name` field', () => {
    class ImportRejected extends Error {
      override name = 'ImportRejected';
    }
    const { lines, stream } = capture();
    createLogger({ level: 'info', pretty: 'false' }, stream).warn({ err: new ImportRejected('patient_data.plz: expected 5 digits') }, 'rejected');
    const entry = JSON.parse(lines[0]!);
    expect(entry.err).toMatchObject({ type: 'ImportRejected', message: 'patient_data.plz: expected 5 digits' });
    expect(lines[0]).not.toContain('[redacted]');
  });

  it("logs drizzle's query error (statement and parameters in its message and stack) as the database's error only", () => {
    const { lines, stream } = capture();
    const log = createLogger({ level: 'info', pretty: 'false' }, stream);
    const cause = Object.assign(new Error('duplicate key value violates unique constraint "deliveries_key_uq"'), { name: 'PostgresError', code: '23505', detail: 'Key (to)=(erika@example.org)' });
    const err = new DrizzleQueryError('insert into fleet.deliveries ("to", "html") values ($1, $2)', ['erika@example.org', '<p>Guten Tag\nErika Spät</p>'], cause);
    log.error({ err }, 'recording failed');
    const entry = JSON.parse(lines[0]!);
    expect(entry.err).toMatchObject({ type: 'QueryFailedError', code: '23505', message: 'database query failed: 23505 duplicate key value violates unique constraint "deliveries_key_uq"' });
    expect(entry.err.stack).toMatch(/^QueryFailedError: database query failed: 23505 [^\n]*\n\s+at /);
    expect(lines[0]).not.toMatch(/erika|Spät|Failed query|params/i);
    expect(errorMessage(err)).toBe('database query failed: 23505 duplicate key value violates unique constraint "deliveries_key_uq"');
    // a value PostgreSQL quotes in its own message is left out too
    const typed = new DrizzleQueryError('select $1::int', ['Erika'], Object.assign(new Error('invalid input syntax for type integer: "Erika"'), { code: '22P02' }));
    expect(errorMessage(typed)).toBe('database query failed: 22P02 invalid input syntax for type integer: (value not shown)');
  });
});
