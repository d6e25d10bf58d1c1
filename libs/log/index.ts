import { pino, type Logger, type LoggerOptions } from 'pino';
import { withoutQueryData } from '../errors/index.js';

export type { Logger };

/**
 * Field names that may carry personal data. Code logs ids, never these; redaction is the
 * safety net for a mistake, not the plan.
 */
export const PERSONAL_FIELDS = [
  'vorname',
  'nachname',
  'email',
  'telefon',
  'geburtsdatum',
  'symptome',
  'strasse',
  'name',
  'firstName',
  'lastName',
  'to',
  'objectName',
  'object_name',
  'consent_metadata',
  'ip_address',
  'patient_data',
  'html',
  'text',
  'subject',
];

/** Field names that carry credentials (a settings object logged by mistake, say): redacted as well. */
export const SECRET_FIELDS = ['password', 'sasl', 'ssl', 'tls', 'apiKey', 'resendApiKey', 'secret', 'signingSecret', 'unsubscribeSecret', 'previousUnsubscribeSecrets', 'authorization'];

const redactPaths = [...PERSONAL_FIELDS, ...SECRET_FIELDS].flatMap((f) => [f, `*.${f}`, `*.*.${f}`]);

/**
 * Error properties that can carry row values: PostgreSQL's `detail` ("Key (email)=(...)"),
 * the statement's parameters, HTTP request bodies. Errors are logged without them.
 */
const ERROR_DATA_FIELDS = ['detail', 'parameters', 'params', 'args', 'query', 'where', 'body', 'config', 'response', 'request'];

function errSerializer(err: Error): Record<string, unknown> {
  // drizzle's query error repeats the statement and its parameters in its message and stack.
  const out = pino.stdSerializers.err(withoutQueryData(err) as Error) as unknown as Record<string, unknown>;
  for (const f of ERROR_DATA_FIELDS) delete out[f];
  // An error class's own `name` field would be censored as a personal field (`*.name`) and
  // show as "[redacted]"; `type` carries the class already.
  delete out.name;
  return out;
}

export interface LogOptions {
  level: string;
  pretty: 'auto' | 'true' | 'false';
  /** FLEET_INSTANCE: names the process on every line (several fleet processes on one machine). */
  instance?: string;
}

/**
 * `stderr`: log lines go to standard error, so that a command's own output on standard output
 * (`--json`) stays parseable; the fleet's processes log to standard output.
 */
export function createLogger(opts: LogOptions, destination?: pino.DestinationStream, where: { stderr?: boolean } = {}): Logger {
  const fd = where.stderr ? 2 : 1;
  const pretty = opts.pretty === 'true' || (opts.pretty === 'auto' && (fd === 2 ? process.stderr : process.stdout).isTTY === true);
  const base: LoggerOptions = {
    level: opts.level,
    redact: { paths: redactPaths, censor: '[redacted]' },
    serializers: { err: errSerializer },
    base: { pid: process.pid, ...(opts.instance ? { instance: opts.instance } : {}) },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (destination) return pino(base, destination);
  if (pretty) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', destination: fd } } });
  }
  return fd === 2 ? pino(base, pino.destination({ dest: 2, sync: true })) : pino(base);
}

/** A logger that writes nothing, for tests and one-shot tools. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
