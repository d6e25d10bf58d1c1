import postgres from 'postgres';
import { inject } from 'vitest';
import { openDatabase, type Database } from '../db/client.js';
import { TEST_ADMIN_DB_URL, randomSuffix, withDatabase } from './services.js';

export interface TestDatabase extends Database {
  url: string;
  name: string;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

/**
 * A fresh, fully migrated database of this test file's own (a clone of the run's template),
 * dropped by `drop()`. Use in beforeAll/afterAll.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const template = inject('templateDatabase');
  const name = `fleet_test_${randomSuffix()}`;
  const admin = postgres(TEST_ADMIN_DB_URL, { max: 1, onnotice: () => {} });
  // Cloning needs the template to be idle; parallel clones take turns.
  for (let i = 0; ; i++) {
    try {
      await admin.unsafe(`create database "${name}" template "${template}"`);
      break;
    } catch (err) {
      if (i >= 50 || !/being accessed by other users/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
  const url = withDatabase(TEST_ADMIN_DB_URL, name);
  const database = openDatabase({ url, poolMax: 5, statementTimeoutMs: 30_000, idleInTransactionTimeoutMs: 60_000 });
  return {
    ...database,
    url,
    name,
    async drop() {
      await database.close(1);
      await admin.unsafe(`drop database if exists "${name}" with (force)`);
      await admin.end({ timeout: 1 });
    },
  };
}
