import { afterAll, beforeAll } from 'vitest';
import { createTestDatabase, type TestDatabase } from './db.js';
import { createTestQueues } from './queues.js';

export type TestQueues = ReturnType<typeof createTestQueues>;

/**
 * A test file's own database (migrated) and queue prefix, opened before its tests and dropped
 * after them (vitest hooks registered by this call): `db` and `t` are there inside the tests.
 */
export function useDatabaseAndQueues(): { readonly db: TestDatabase; readonly t: TestQueues } {
  let db: TestDatabase | undefined;
  let t: TestQueues | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
    t = createTestQueues();
  });
  afterAll(async () => {
    await t?.close();
    await db?.drop();
  });
  const opened = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error('useDatabaseAndQueues: used outside a test (before beforeAll ran)');
    return v;
  };
  return {
    get db() {
      return opened(db);
    },
    get t() {
      return opened(t);
    },
  };
}
