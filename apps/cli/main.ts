#!/usr/bin/env node
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Help } from 'commander';
import { ConfigError } from '../../libs/config/index.js';
import { errorMessage, withoutQueryData } from '../../libs/errors/index.js';
import { registerDaily } from './commands/daily.js';
import { registerDlq } from './commands/dlq.js';
import { registerImports } from './commands/imports.js';
import { registerEvents } from './commands/events.js';
import { registerMigrate } from './commands/migrate.js';
import { registerRetention } from './commands/retention.js';
import { registerStart } from './commands/start.js';
import { registerStatus } from './commands/status.js';
import { registerWeekly } from './commands/weekly.js';
import { registerTherapists } from './commands/therapists.js';
import { CliError } from './context.js';

/** The version of package.json above this file (apps/cli in development, dist/apps/cli when built). */
function fleetVersion(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'curavani-fleet' && pkg.version) return pkg.version;
    }
    if (path.dirname(dir) === dir) return 'unknown';
  }
}

/** SQLSTATEs of a missing table, column or schema: undefined_table, undefined_column, invalid_schema_name. */
const SCHEMA_MISSING = new Set(['42P01', '42703', '3F000']);

/** The SQLSTATE of a failed query: postgres.js's error, or the cause of drizzle's. */
function sqlState(err: unknown): string | undefined {
  for (const e of [err, (err as { cause?: unknown } | null)?.cause]) {
    const code = (e as { code?: unknown } | null | undefined)?.code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

const program = new Command()
  .name('fleet')
  .description('Curavani Fleet: imports, notifications and events on a durable job queue')
  .version(fleetVersion())
  .showHelpAfterError('(run with --help for usage)')
  // Commander's own errors (unknown command or option, missing argument) begin "error:"; every
  // other error of the CLI begins "fleet:". Subcommands inherit this output configuration.
  .configureOutput({ outputError: (str, write) => write(str.replace(/^error: /, 'fleet: ')) })
  // Defaults read one way in every command's help, `(default: 50)`: commander quotes a text
  // default (`(default: "50")`), and options take their defaults as text.
  .configureHelp({
    optionDescription(option) {
      if (typeof option.defaultValue === 'string' && option.defaultValueDescription === undefined) option.defaultValueDescription = option.defaultValue;
      return Help.prototype.optionDescription.call(this, option);
    },
  })
  .exitOverride()
  // The README's first-day slip: a second terminal without the fleet's variables looks at the
  // defaults (another database, another key prefix) and finds nothing, or the wrong things.
  .addHelpText(
    'after',
    `
Environment: the CLI reads the same variables as the fleet (DATABASE_URL, REDIS_URL, QUEUE_PREFIX, ...)
from the environment only, no .env file: export the values the fleet runs with in this terminal too.
Exit codes: 0 done, 1 failure, 2 bad usage or configuration, 3 not found. FLEET_DEBUG=1 adds the stack
of an unexpected failure.`,
  );

registerStart(program);
registerMigrate(program);
registerStatus(program);
registerDaily(program);
registerDlq(program);
registerWeekly(program);
registerImports(program);
registerRetention(program);
registerTherapists(program);
registerEvents(program);

// Output into a pipe whose reader has gone (`fleet status | head -3`): the rest of the output is
// not wanted, the command itself still finishes (a requeue is not cut off halfway) and exits as
// it would have; without a listener the failed write ended the CLI with a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') return;
  throw err;
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Commander has already printed its message. Exit code 0: --help, --version; anything else is
  // bad usage (unknown command or option, missing or invalid argument, a group without its
  // subcommand), which is exit 2 like every usage error of the fleet (commander says 1).
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  if (err instanceof CliError) {
    process.stderr.write(`fleet: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`fleet: ${err.message}\n`);
    process.exit(2);
  }
  // A database error says what PostgreSQL said (connection refused, no such table), not
  // drizzle's statement and parameters (which carry personal data and hide the cause); a
  // table, column or schema missing most likely means a database older than this release.
  const hint = SCHEMA_MISSING.has(sqlState(err) ?? '') ? ' (is the database migrated for this release? run fleet migrate)' : '';
  process.stderr.write(`fleet: ${errorMessage(err)}${hint}\n`);
  if (process.env.FLEET_DEBUG) console.error(withoutQueryData(err));
  process.exit(1);
}
