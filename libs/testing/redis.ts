import { Redis } from 'ioredis';
import { TEST_REDIS_URL, randomSuffix } from './services.js';

/** Deletes every key under a queue prefix (`{prefix}*`), e.g. after a test or a benchmark. */
export async function deleteQueueKeys(prefix: string, url: string = TEST_REDIS_URL): Promise<void> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `{${prefix}}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/** A queue prefix of this test's own; `cleanup()` deletes every key under it. */
export function testQueuePrefix(): { prefix: string; cleanup(): Promise<void> } {
  const prefix = `t_${randomSuffix()}`;
  return { prefix, cleanup: () => deleteQueueKeys(prefix) };
}
