import type { Command } from 'commander';
import { assertPlatformSchema, runMigrations } from '../../../libs/db/migrate.js';
import { openDatabase } from '../../../libs/db/client.js';
import type { Config } from '../../../libs/config/index.js';
import { configOrExit, throwIfPostgresUnreachable } from '../context.js';

/**
 * Applies migrations (platform set only when standalone), or checks the platform's tables.
 * PostgreSQL out of reach is said as other commands say it (naming DATABASE_URL).
 */
export async function migrateAndCheck(config: Config): Promise<string[]> {
  try {
    const result = await runMigrations(config.db.url, { platform: config.db.platformMigrations });
    await checkPlatformSchema(config);
    return result.sets;
  } catch (err) {
    // A database that does not exist is created here: one missing after a failure is not the cause.
    await throwIfPostgresUnreachable(config, undefined, { missingDatabase: false, failure: err });
    throw err;
  }
}

/** With PLATFORM_MIGRATIONS=false: stops with the platform tables and columns the fleet needs and does not find. */
export async function checkPlatformSchema(config: Config): Promise<void> {
  if (config.db.platformMigrations) return;
  const database = openDatabase({ ...config.db, poolMax: 1 });
  try {
    await assertPlatformSchema(database.sql);
  } finally {
    await database.close();
  }
}

export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('apply database migrations (safe to run twice or from several processes at once)')
    .action(async () => {
      const config = configOrExit();
      const sets = await migrateAndCheck(config);
      const skipped = config.db.platformMigrations ? '' : ' (platform tables checked, not created: PLATFORM_MIGRATIONS=false)';
      process.stdout.write(`migrations applied: ${sets.join(', ')}${skipped}\n`);
    });
}
