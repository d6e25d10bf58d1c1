#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../../libs/config/index.js';
import { registerDlq } from './commands/dlq.js';
import { registerImports } from './commands/imports.js';
import { registerEvents } from './commands/events.js';
import { registerMigrate } from './commands/migrate.js';
import { registerStart } from './commands/start.js';
import { registerStatus } from './commands/status.js';
import { registerWeekly } from './commands/weekly.js';
import { registerTherapists } from './commands/therapists.js';
import { CliError } from './context.js';

const program = new Command()
  .name('fleet')
  .description('Curavani Fleet: imports, notifications and events on a durable job queue')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

registerStart(program);
registerMigrate(program);
registerStatus(program);
registerDlq(program);
registerWeekly(program);
registerImports(program);
registerTherapists(program);
registerEvents(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  if (err instanceof CliError) {
    process.stderr.write(`fleet: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`fleet: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`fleet: ${(err as Error).message ?? String(err)}\n`);
  if (process.env.FLEET_DEBUG) console.error(err);
  process.exit(1);
}
