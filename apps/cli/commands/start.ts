import type { Command } from 'commander';
import { ConfigError } from '../../../libs/config/index.js';
import { createLogger } from '../../../libs/log/index.js';
import { openContext } from '../../../libs/runtime/index.js';
import { checkRoleFolders, resolveRoles, roles } from '../../fleet/roles.js';
import { startFleet, stopOnSignals } from '../../fleet/runtime.js';
import { CliError, configOrExit, throwIfPostgresUnreachable } from '../context.js';
import { checkPlatformSchema, migrateAndCheck } from './migrate.js';

export function registerStart(program: Command): void {
  program
    .command('start')
    .description('run producers, workers and the dashboard in this process (all roles by default)')
    .option('--only <roles>', `comma-separated subset of roles: ${Object.keys(roles).join(', ') || '(none registered)'}`)
    .option('--no-migrate', 'do not apply migrations before starting')
    .addHelpText('after', () => `\nRoles:\n${Object.entries(roles).map(([n, r]) => `  ${n.padEnd(18)} ${r.description}`).join('\n')}\n`)
    .action(async (opts: { only?: string; migrate: boolean }) => {
      const config = configOrExit();
      let roleNames: string[];
      try {
        roleNames = resolveRoles(opts.only);
      } catch (err) {
        throw new CliError((err as Error).message, 2);
      }
      // The folders first (nothing to connect to): a bad one is a configuration error, exit 2.
      await checkRoleFolders(config, roleNames);
      const log = createLogger(config.log);
      if (opts.migrate) {
        const sets = await migrateAndCheck(config);
        log.info({ sets }, 'migrations applied');
      }
      let fleet;
      try {
        // The check of the platform's tables runs without migrating too (the way Kubernetes
        // starts the fleet): a missing column stops the start, instead of failing every job.
        if (!opts.migrate) await checkPlatformSchema(config);
        fleet = await startFleet(openContext(config, log), roleNames);
      } catch (err) {
        // PostgreSQL out of reach (or the database missing) is said as other commands say it.
        if (!(err instanceof CliError) && !(err instanceof ConfigError)) await throwIfPostgresUnreachable(config, undefined, { failure: err });
        throw err;
      }
      stopOnSignals(fleet, (code) => process.exit(code));
    });
}
