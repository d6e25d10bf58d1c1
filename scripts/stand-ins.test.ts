import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { closedPort } from '../libs/testing/ports.js';

/** The stand-ins run by hand (docs/email.md, docs/events.md): their command lines and stdin commands. */
const root = path.resolve(import.meta.dirname, '..');
const running: ChildProcessWithoutNullStreams[] = [];

function run(script: string, args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, script), ...args], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
  running.push(child);
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    lines.push(l);
    for (const w of waiters.splice(0)) w();
  });
  /** The first line (from `from` on) matching, waiting for it. */
  const line = async (match: RegExp, from = 0): Promise<string> => {
    for (;;) {
      const found = lines.slice(from).find((l) => match.test(l));
      if (found) return found;
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return { child, lines, line, send: (l: string) => child.stdin.write(`${l}\n`) };
}

afterEach(() => {
  for (const c of running.splice(0)) c.kill('SIGTERM');
});

describe('scripts/resend-stand-in.ts', () => {
  it('takes faults on stdin: fail <status> [count], refuse 401|key|domain, ok', { timeout: 60_000 }, async () => {
    const s = run('scripts/resend-stand-in.ts', ['--port', '0']);
    const url = (JSON.parse(await s.line(/^\{"url"/)) as { url: string }).url;
    const send = () =>
      fetch(`${url}/emails`, {
        method: 'POST',
        headers: { authorization: 'Bearer re_test', 'content-type': 'application/json' },
        body: JSON.stringify({ from: 'f@example.org', to: 't@example.org', subject: 's', text: 'x' }),
      }).then((r) => r.status);

    s.send('fail 500 2');
    await s.line(/^fail 500 2: the next 2 request\(s\) answer 500$/);
    expect([await send(), await send(), await send()]).toEqual([500, 500, 200]);
    s.send('refuse key');
    await s.line(/^refuse key: every request is refused \(403 invalid_api_key\) until ok$/);
    expect(await send()).toBe(403);
    s.send('refuse 401');
    await s.line(/^refuse 401: /);
    expect(await send()).toBe(401);
    s.send('ok');
    await s.line(/^ok: answering normally$/);
    expect(await send()).toBe(200);
  });
});

describe('scripts/kafka-mock/run.ts', () => {
  it('listens on --port when given (a random port otherwise)', { timeout: 90_000 }, async () => {
    const port = await closedPort();
    const k = run('scripts/kafka-mock/run.ts', ['--port', String(port)]);
    expect(await k.line(/^KAFKA_BROKERS=/)).toBe(`KAFKA_BROKERS=127.0.0.1:${port}`);
  });
});
