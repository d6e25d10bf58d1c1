import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { safeFileName, writeDurably } from './file-keeper.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('writeDurably', () => {
  it('many files at once (shared directory fsyncs): every file complete, no temporary file left', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'file-keeper-'));
    dirs.push(dir);
    const names = Array.from({ length: 40 }, (_, i) => `${i}-file.json`);
    const paths = await Promise.all(names.map((n, i) => writeDurably(dir, n, Buffer.from(`{"i":${i}}`))));
    expect(paths).toEqual(names.map((n) => path.join(dir, n)));
    for (const [i, p] of paths.entries()) expect((await readFile(p)).toString()).toBe(`{"i":${i}}`);
    expect((await readdir(dir)).sort()).toEqual([...names].sort());
  });

  it('creates a missing folder for the fleet\'s user only (the names hold patient names)', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'file-keeper-'));
    dirs.push(dir);
    const p = await writeDurably(path.join(dir, 'backup'), '1-Muster_Max.json', Buffer.from('{}'));
    expect((await stat(path.dirname(p))).mode & 0o777).toBe(0o700);
    expect((await stat(p)).mode & 0o777).toBe(0o600);
  });

  it('a retry replaces the copy of an earlier attempt', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'file-keeper-'));
    dirs.push(dir);
    await writeDurably(dir, 'a.json', Buffer.from('first'));
    await writeDurably(dir, 'a.json', Buffer.from('again'));
    expect((await readFile(path.join(dir, 'a.json'))).toString()).toBe('again');
    expect(await readdir(dir)).toEqual(['a.json']);
  });

  it('refuses names outside the folder; safe names carry the ledger id', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'file-keeper-'));
    dirs.push(dir);
    await expect(writeDurably(dir, '../x.json', Buffer.from('x'))).rejects.toThrow(/outside/);
    expect(safeFileName({ id: 7, objectName: 'registrations/../../Müller_Jürgen.json' })).toBe('7-Muller_Jurgen.json');
  });
});
