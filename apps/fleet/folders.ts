import { randomBytes } from 'node:crypto';
import { mkdir, open, opendir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../../libs/config/index.js';

/** A folder a role uses, by the variable that names it. */
export interface FolderNeed {
  variable: string;
  dir: string;
  /** Created when missing (what the role's code does on first use). */
  create?: boolean;
  /** The role writes files into it (checked by writing and removing a temporary file). */
  write?: boolean;
  /** Created listable by the fleet's user only (0700): the names of the files in it hold patient names. */
  private?: boolean;
}

function reason(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/** Why the folder cannot be used as `need` says; undefined: it can. */
async function problem(need: FolderNeed): Promise<string | undefined> {
  const dir = path.resolve(need.dir);
  if (need.create) {
    try {
      await mkdir(dir, { recursive: true, ...(need.private ? { mode: 0o700 } : {}) });
    } catch (err) {
      // EEXIST: a file is where the folder should be (said below as "not a directory")
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return `cannot be created (${reason(err)})`;
    }
  }
  try {
    if (!(await stat(dir)).isDirectory()) return 'not a directory';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist (ENOENT)' : `not readable (${reason(err)})`;
  }
  try {
    const d = await opendir(dir);
    try {
      await d.read();
    } finally {
      await d.close();
    }
  } catch (err) {
    return `not readable (${reason(err)})`;
  }
  if (need.write) {
    const probe = path.join(dir, `.fleet-write-probe.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      const fd = await open(probe, 'wx', 0o600);
      try {
        await fd.writeFile('probe');
      } finally {
        await fd.close();
      }
    } catch (err) {
      await unlink(probe).catch(() => {});
      return `not writable (${reason(err)})`;
    }
    try {
      await unlink(probe);
    } catch (err) {
      return `not writable (cannot remove a file: ${reason(err)})`;
    }
  }
  return undefined;
}

/**
 * Checks at start that every folder the given needs name can be used: a wrong path, a file
 * where the folder should be, a read-only mount. Without it the first import or email failed,
 * retried and ended as a dead letter, while the fleet looked healthy. Throws one ConfigError
 * naming every variable, its path and why (exit 2, like every configuration error).
 */
export async function checkFolders(needs: FolderNeed[]): Promise<void> {
  // One check per variable, with everything any role asks of it.
  const merged = new Map<string, FolderNeed>();
  for (const n of needs) {
    const m = merged.get(n.variable);
    merged.set(n.variable, m ? { ...m, create: m.create || n.create, write: m.write || n.write, private: m.private || n.private } : { ...n });
  }
  const lines: string[] = [];
  for (const n of merged.values()) {
    const why = await problem(n);
    if (!why) continue;
    const abs = path.resolve(n.dir);
    lines.push(`${n.variable}=${n.dir}${abs === n.dir ? '' : ` (${abs})`}: ${why}`);
  }
  if (lines.length) throw new ConfigError(`invalid configuration: ${lines.join('; ')}`);
}
