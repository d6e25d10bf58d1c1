/**
 * Drill helpers shared by the crash drills: a `fleet start --only ...` child process that is ready
 * (its /ready answers 200), stopping one with a signal, and a CLI call. The child's stdout and
 * stderr go to a log file of its own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts `fleet start --only <only>` and waits until /ready on `port` answers 200 (every 250 ms, `readyTries` times). */
export async function startReadyFleet(o: { only: string; env: NodeJS.ProcessEnv; logFile: string; port: number; name: string; readyTries?: number }): Promise<ChildProcess> {
  const out = createWriteStream(o.logFile, { flags: 'a' });
  const child = spawn(process.execPath, ['--import', 'tsx', 'apps/cli/main.ts', 'start', '--only', o.only], { env: o.env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  for (let i = 0; i < (o.readyTries ?? 120); i++) {
    if (child.exitCode !== null) throw new Error(`fleet ${o.name} exited ${child.exitCode} (see ${o.logFile})`);
    const ok = await fetch(`http://127.0.0.1:${o.port}/ready`).then((r) => r.status === 200).catch(() => false);
    if (ok) return child;
    await sleep(250);
  }
  throw new Error(`fleet ${o.name} did not become ready (see ${o.logFile})`);
}

/** Stops `child` with `signal` and waits for it to be gone; ms it took (0: it was not running). */
export async function stopProcess(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<number> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return 0;
  const t0 = Date.now();
  const gone = once(child, 'exit');
  child.kill(signal);
  await gone;
  return Date.now() - t0;
}

/** Runs `fleet <args>` to its end; its exit code and its stdout and stderr together. */
export function fleetCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'apps/cli/main.ts', ...args], { env });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', (code) => resolve({ code: code ?? -1, out }));
  });
}
