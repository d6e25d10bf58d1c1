import { open } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { FolderError, withoutFileName } from './folder-error.js';

/** The error a write through a file handle gives on a full disk (/dev/full answers every write with ENOSPC). */
async function fullDiskError(): Promise<NodeJS.ErrnoException> {
  const fd = await open('/dev/full', 'w');
  try {
    await fd.writeFile(Buffer.from('{"registration_token":"x"}'));
  } catch (err) {
    return err as NodeJS.ErrnoException;
  } finally {
    await fd.close();
  }
  throw new Error('/dev/full accepted a write');
}

describe('withoutFileName', () => {
  it('names the folder of an error that named a file, and drops the file name', () => {
    const err = Object.assign(new Error("EACCES: permission denied, open '/data/backup/.12-Muller_Jurgen.json.ab.tmp'"), {
      code: 'EACCES',
      syscall: 'open',
      path: '/data/backup/.12-Muller_Jurgen.json.ab.tmp',
    });
    const out = withoutFileName(err, '/data/backup');
    expect(out).toBeInstanceOf(FolderError);
    expect((out as FolderError).message).toBe('EACCES: permission denied (open in the folder /data/backup)');
  });

  it('names the folder of a full disk too: a write through a file handle carries no path (the drill: BACKUP_DIR full)', async () => {
    const err = await fullDiskError();
    expect(err.code).toBe('ENOSPC');
    const out = withoutFileName(err, '/data/backup');
    expect(out).toBeInstanceOf(FolderError);
    expect((out as FolderError).code).toBe('ENOSPC');
    expect((out as FolderError).message).toBe('ENOSPC: no space left on device (write in the folder /data/backup)');
  });

  it('leaves errors that are not file system errors as they are', () => {
    const plain = new Error('refusing a file name outside the target folder');
    expect(withoutFileName(plain, '/data/backup')).toBe(plain);
    const coded = Object.assign(new Error('something'), { code: 'E_CUSTOM' });
    expect(withoutFileName(coded, '/data/backup')).toBe(coded);
  });
});
