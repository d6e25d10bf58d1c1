import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { Redis } from 'ioredis';

/** Where the test suite finds the machine's services; override with TEST_DATABASE_URL / TEST_REDIS_URL. */
export const TEST_ADMIN_DB_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export function randomSuffix(): string {
  return `${process.pid}_${randomBytes(4).toString('hex')}`;
}

export function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Fails loudly, naming the service and the start command, when PostgreSQL or Redis is down. */
export async function assertServicesUp(): Promise<void> {
  const sql = postgres(TEST_ADMIN_DB_URL, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    await sql`select 1`;
  } catch (err) {
    throw new Error(
      `PostgreSQL is not reachable at ${TEST_ADMIN_DB_URL} (${(err as Error).message}). ` +
        `Start it (see README, "Quick start": on 127.0.0.1, or with docker compose) or run bash .ci/run, which starts it.`,
      { cause: err },
    );
  } finally {
    await sql.end({ timeout: 1 });
  }
  const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    throw new Error(
      `Redis is not reachable at ${TEST_REDIS_URL} (${(err as Error).message}). ` +
        `Start it (see README, "Quick start": on 127.0.0.1, or with docker compose) or run bash .ci/run, which starts it.`,
      { cause: err },
    );
  } finally {
    redis.disconnect();
  }
}

/** Drops a database made for a test or a benchmark (connections are closed by force). */
export async function dropDatabase(name: string, adminUrl: string = TEST_ADMIN_DB_URL): Promise<void> {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`drop database if exists "${name.replaceAll('"', '""')}" with (force)`);
  } finally {
    await admin.end({ timeout: 1 });
  }
}
