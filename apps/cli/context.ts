import { ConfigError, loadConfig, type Config } from '../../libs/config/index.js';
import { createLogger } from '../../libs/log/index.js';
import { openContext, type FleetContext } from '../../libs/runtime/index.js';

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

/** Opens the fleet's connections for one command and closes them afterwards. */
export async function withContext<T>(fn: (ctx: FleetContext) => Promise<T>, opts: { logLevel?: string } = {}): Promise<T> {
  const config = configOrExit();
  const log = createLogger({ ...config.log, level: opts.logLevel ?? (config.log.level === 'info' ? 'warn' : config.log.level) }, undefined);
  const ctx = openContext(config, log);
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}

/** Who ran an operator command, for the audit table. */
export function operatorName(explicit?: string): string {
  return explicit ?? process.env.FLEET_OPERATOR ?? process.env.SUDO_USER ?? process.env.USER ?? 'unknown';
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
