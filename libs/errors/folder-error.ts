/**
 * A file system error without the file's name: Node puts the path (and a rename's target) into
 * the message and into `path`/`dest`, and these names can carry personal data (a registration
 * file's object name has the patient's name) or are one message's among many (an .eml of the
 * outbox folder). The error goes to logs, job failures and dead letters, so it names only the
 * folder, the operation and the errno code (`EACCES`, `ENOSPC`, `EROFS`, ...), kept as `code`.
 */
export class FolderError extends Error {
  override name = 'FolderError';
  constructor(
    readonly code: string,
    readonly syscall: string | undefined,
    readonly folder: string,
    description: string,
  ) {
    super(`${code}: ${description} (${syscall ?? 'file operation'} in the folder ${folder})`);
  }
}

/**
 * `err` as a FolderError when it is a file system error: one naming a file (`path`, `dest`), or
 * one of an open file handle, which names none (a write on a full disk: `ENOSPC: no space left
 * on device, write`) and would otherwise not say which folder is full. Anything else as it is.
 */
export function withoutFileName(err: unknown, folder: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (!(e instanceof Error) || typeof e.code !== 'string') return err;
  const systemError = typeof e.errno === 'number' && typeof e.syscall === 'string';
  if (!('path' in e || 'dest' in e || systemError)) return err;
  // "EACCES: permission denied, open '/dir/.12-Muller_Jurgen_....tmp'" -> "permission denied";
  // "ENOSPC: no space left on device, write" -> "no space left on device"
  const rest = e.message.replace(new RegExp(`^${e.code}: `), '');
  const description = (e.syscall ? rest.split(`, ${e.syscall}`)[0]! : rest.split("'")[0]!).trim();
  return new FolderError(e.code, e.syscall, folder, description || 'failed');
}
