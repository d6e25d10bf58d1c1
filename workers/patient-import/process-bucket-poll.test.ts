import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../libs/log/index.js';
import { StorageError, type BucketPort, type StoredObject } from '../../libs/storage/port.js';
import { pollBucket } from './process-bucket-poll.js';

const obj = (name: string): StoredObject => ({ bucket: 'b', name, generation: '1', size: 2, updated: '' });

describe('pollBucket', () => {
  it('a listing that hands back a page token it gave before is an error, not an endless poll', async () => {
    let calls = 0;
    const bucket = {
      driver: 'gcs',
      bucket: 'b',
      async list() {
        if (++calls > 5) throw new Error('listed more than 5 times');
        return { items: [obj(`registrations/${calls}.json`)], nextPageToken: 'again' };
      },
    } as unknown as BucketPort;
    const recorded: string[] = [];
    const err = await pollBucket({
      bucket,
      prefix: 'registrations/',
      pageSize: 1,
      record: async (objects) => (recorded.push(...objects.map((o) => o.name)), { ids: [], known: [] }),
      openIds: async () => [],
      enqueue: async () => {},
      restoreDeadLetters: async () => 0,
      log: silentLogger(),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).code).toBe('bad_response');
    expect(calls).toBe(2);
    expect(recorded).toEqual(['registrations/1.json', 'registrations/2.json']);
  });
});
