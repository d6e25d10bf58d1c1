import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileTooLargeError, NotRegularFileError, readRegularFile } from './file-size.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'file-size-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('readRegularFile', () => {
  it('reads a regular file within the limit', async () => {
    await writeFile(path.join(dir, 'a.json'), '{"x":1}');
    expect((await readRegularFile(path.join(dir, 'a.json'), 100)).toString()).toBe('{"x":1}');
  });

  it('refuses a file over the limit by its size, before reading it', async () => {
    await writeFile(path.join(dir, 'b.json'), 'x'.repeat(200));
    await expect(readRegularFile(path.join(dir, 'b.json'), 100)).rejects.toMatchObject({ name: 'FileTooLargeError', sizeBytes: 200, maxBytes: 100 });
  });

  it('refuses a file whose content outgrows the limit after its size was read (a /proc file says size 0)', async () => {
    const err = await readRegularFile('/proc/self/status', 100).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FileTooLargeError);
    expect((err as FileTooLargeError).sizeBytes).toBeGreaterThan(100);
  });

  it('names what a path that is no regular file is, without reading it', async () => {
    execFileSync('mkfifo', [path.join(dir, 'pipe.json')]);
    await expect(readRegularFile(path.join(dir, 'pipe.json'), 100)).rejects.toEqual(new NotRegularFileError('a named pipe'));
    await expect(readRegularFile(dir, 100)).rejects.toEqual(new NotRegularFileError('a folder'));
    await expect(readRegularFile('/dev/null', 100)).rejects.toEqual(new NotRegularFileError('a device'));
  });
});
