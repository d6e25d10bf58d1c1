import { userInfo } from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, urlTarget, type Config } from '../../libs/config/index.js';
import { openDatabase, type Database } from '../../libs/db/client.js';
import { hasErrorCode } from '../../libs/db/connection-lost.js';
import { createLogger } from '../../libs/log/index.js';
import { COMMAND_REDIS_GIVE_UP_MS, COMMAND_REDIS_REPLY_TIMEOUT_MS, RedisNotReadyError, redisTarget } from '../../libs/queues/index.js';
import { openContext, settlesWithin, type FleetContext } from '../../libs/runtime/index.js';

/** Thrown by commands for an expected failure: the CLI prints the message (no stack) and exits with the code. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export function configOrExit(): Config {
  try {
    return loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`fleet: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** How long a command waits for a connection to PostgreSQL (the fleet's pool, `fleet start` and `fleet migrate` wait postgres.js's 30 s). */
const COMMAND_DB_CONNECT_TIMEOUT_S = 10;

/** Opens the fleet's connections for one command and closes them afterwards. */
export async function withContext<T>(fn: (ctx: FleetContext) => Promise<T>, opts: { logLevel?: string } = {}): Promise<T> {
  const config = configOrExit();
  const log = createLogger({ ...config.log, level: opts.logLevel ?? (config.log.level === 'info' ? 'warn' : config.log.level) }, undefined, { stderr: true });
  const ctx = openContext(config, log, { redisRole: 'command', dbConnectTimeoutSeconds: COMMAND_DB_CONNECT_TIMEOUT_S });
  // The errors of a connection that could not reach Redis (BullMQ rejects a call with the last
  // of them once the connection gives up): said as such, naming the variable to check.
  const redisErrors = new WeakSet<object>();
  // The connection keeps trying for COMMAND_REDIS_GIVE_UP_MS (a Redis restarting is waited for):
  // said once, a second after the first failure, so that wait is not silent. A command that
  // does not need Redis has usually finished by then; one that did is told why it waits.
  let waiting: NodeJS.Timeout | undefined;
  let saidWaiting = false;
  ctx.producerRedis.on('error', (err: unknown) => {
    if (typeof err === 'object' && err !== null) redisErrors.add(err);
    if (waiting || saidWaiting) return;
    waiting = setTimeout(() => {
      saidWaiting = true;
      process.stderr.write(
        `fleet: waiting for redis at ${redisTarget(config.queues.redisUrl)} (REDIS_URL): ${redisWhy((err as Error).message)}; trying again for up to ${COMMAND_REDIS_GIVE_UP_MS / 1000} s\n`,
      );
    }, 1_000).unref();
  });
  ctx.producerRedis.on('ready', () => {
    clearTimeout(waiting);
    waiting = undefined;
  });
  try {
    return await fn(ctx);
  } catch (err) {
    if (typeof err === 'object' && err !== null && redisErrors.has(err)) {
      throw new CliError(`redis not reachable at ${redisTarget(config.queues.redisUrl)} (REDIS_URL): ${redisWhy((err as Error).message)}`, 1);
    }
    // A command that waited for the connection itself (the lock of a dead-letter action, a schedule's registration).
    if (err instanceof RedisNotReadyError) {
      throw new CliError(`redis not reachable at ${redisTarget(config.queues.redisUrl)} (REDIS_URL): ${err.lastError ? redisWhy(err.lastError) : `no answer within ${err.waitMs} ms`}`, 1);
    }
    if (!(err instanceof CliError)) await throwIfPostgresUnreachable(config, ctx.database, { failure: err, connectTimeoutSeconds: COMMAND_DB_CONNECT_TIMEOUT_S });
    throw err;
  } finally {
    clearTimeout(waiting);
    await ctx.close();
  }
}

/** ioredis's reply timeout says only "Command timed out": a Redis that took the connection and does not answer. */
function redisWhy(message: string): string {
  return message === 'Command timed out' ? `connected, but no reply within ${COMMAND_REDIS_REPLY_TIMEOUT_MS / 1000} s` : message;
}

/**
 * After a command failed: when PostgreSQL cannot be reached (or the database is not there),
 * throws a CliError saying so and naming DATABASE_URL; otherwise returns, and the caller
 * rethrows its own error. Asked again (`select 1`) rather than read from the error, which comes
 * wrapped differently from drizzle, postgres.js and the migrator. `database`: the command's
 * pool; without it a connection of its own is opened and closed. `missingDatabase: false`: a
 * database that does not exist is not worth saying (`fleet migrate` creates it). `failure`: the
 * command's error; one of a connection attempt that got no answer in `connectTimeoutSeconds` (a
 * PostgreSQL stopped or hung, taking connections and never answering) is said as such without
 * asking again, not as `write CONNECT_TIMEOUT 127.0.0.1:5432`.
 */
export async function throwIfPostgresUnreachable(
  config: Config,
  database?: Database,
  opts: { missingDatabase?: boolean; failure?: unknown; connectTimeoutSeconds?: number } = {},
): Promise<void> {
  if (hasErrorCode(opts.failure, 'CONNECT_TIMEOUT')) {
    throw new CliError(`postgres not reachable at ${urlTarget(config.db.url, 5432, 'DATABASE_URL')} (DATABASE_URL): no answer within ${opts.connectTimeoutSeconds ?? 30} s while connecting`, 1);
  }
  const own = database ? null : openDatabase({ ...config.db, poolMax: 1 });
  let unreachable: { message: string; code: unknown } | null;
  try {
    unreachable = await postgresUnreachable((database ?? own)!);
  } finally {
    await own?.close(1);
  }
  const at = urlTarget(config.db.url, 5432, 'DATABASE_URL');
  // Reached, but the database is not there (undefined_database): a fresh machine, where
  // `fleet migrate` creates it, or (more often) a terminal without the fleet's DATABASE_URL,
  // where `fleet migrate` would create a second, empty database: the message says both.
  if (unreachable?.code === '3D000') {
    if (opts.missingDatabase === false) return;
    throw new CliError(
      `postgres at ${at} (DATABASE_URL): ${unreachable.message}; is DATABASE_URL the fleet's? (the CLI reads the environment only: export the fleet's DATABASE_URL and QUEUE_PREFIX in this terminal too) A new database: \`fleet migrate\` creates it`,
      1,
    );
  }
  if (unreachable) throw new CliError(`postgres not reachable at ${at} (DATABASE_URL): ${unreachable.message}`, 1);
}

/** The error of a `select 1` when PostgreSQL cannot be reached now (null: it answers, or not within 3 s). */
async function postgresUnreachable(database: Database): Promise<{ message: string; code: unknown } | null> {
  try {
    await settlesWithin(database.sql`select 1`, 3_000);
    return null;
  } catch (err) {
    return { message: (err as Error).message, code: (err as { code?: unknown }).code };
  }
}

function loginName(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined; // a uid without a passwd entry (some containers)
  }
}

/**
 * Who ran an operator command, for the audit table: `--actor`, else $FLEET_OPERATOR, else the
 * login name ($SUDO_USER, $USER, then the user database, as USER is often unset in containers
 * and cron), `unknown` only when none of them names anyone.
 */
export function operatorName(explicit?: string): string {
  const candidates = [explicit, process.env.FLEET_OPERATOR, process.env.SUDO_USER, process.env.USER];
  for (const c of candidates) if (c?.trim()) return c.trim();
  return loginName()?.trim() || 'unknown';
}

/** A count or id given on the command line: a whole number >= 1, else a usage error (exit 2) naming it. */
export function positiveInt(label: string, raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new CliError(`${label}: expected a whole number >= 1 (got ${JSON.stringify(raw)})`, 2);
  return n;
}

/** Same limit as the /ops pages. */
const MAX_REASON = 500;

/** The required `--reason` of an audited operator action; a usage error (exit 2) when it is missing or blank. */
export function requiredReason(reason: string | undefined): string {
  const text = reason?.trim() ?? '';
  if (!text) throw new CliError('--reason <text> is required: say why (it is written to the audit table with who and when)', 2);
  if (text.length > MAX_REASON) throw new CliError(`--reason: at most ${MAX_REASON} characters`, 2);
  return text;
}

/**
 * A file path given on the command line, absolute: relative to the folder the command was
 * typed in. `npm run fleet` runs the CLI in the package folder and names the folder it was
 * started from in INIT_CWD; without it (node dist/apps/cli/main.js) the process's own folder.
 */
export function argPath(p: string): string {
  return path.resolve(process.env.INIT_CWD || process.cwd(), p);
}

/** How an error names a path given on the command line: as typed, and where it was looked for when that was relative. */
export function shownPath(p: string): string {
  return path.isAbsolute(p) ? p : `${p} (${argPath(p)})`;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
