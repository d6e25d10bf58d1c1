import { execFile, execFileSync } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';

/**
 * The Prometheus alert rules (infra/prometheus/alerts.yml): valid for Prometheus, behaving as
 * their unit tests (alerts.test.yml) say, and naming only metrics the fleet exports.
 * Needs `promtool`: scripts/promtool/ensure.sh installs the Debian package prometheus when it
 * is missing (as root; otherwise these tests fail and say what to install).
 */
const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const rules = path.join(root, 'infra/prometheus/alerts.yml');

async function promtool(...args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run('promtool', args, { cwd: root });
    return stdout + stderr;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error('promtool not found: install the Debian package prometheus (apt-get install --no-install-recommends prometheus)', { cause: err });
    throw new Error(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`, { cause: err });
  }
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

/** Installs promtool when it is missing; a failed install is reported by the tests that need it. */
function ensurePromtool(): void {
  try {
    execFileSync('bash', [path.join(root, 'scripts/promtool/ensure.sh')], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    console.error(`scripts/promtool/ensure.sh could not install promtool: ${stderr || (err as Error).message}`);
  }
}

describe('alert rules', () => {
  beforeAll(ensurePromtool, 120_000);

  it('are valid Prometheus rules', async () => {
    expect(await promtool('check', 'rules', rules)).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('pass their unit tests (alerts.test.yml)', async () => {
    expect(await promtool('test', 'rules', path.join(root, 'infra/prometheus/alerts.test.yml'))).toContain('SUCCESS');
  });

  it('name only metrics the fleet registers', async () => {
    const text = await readFile(rules, 'utf8');
    const used = new Set([...text.matchAll(/\b(fleet_[a-z_]+)/g)].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, '')));
    expect(used.size).toBeGreaterThan(10);
    const sources = (await Promise.all(['apps', 'libs', 'workers'].map((d) => sourceFiles(path.join(root, d))))).flat();
    const code = (await Promise.all(sources.map((f) => readFile(f, 'utf8')))).join('\n');
    const missing = [...used].filter((name) => !code.includes(`'${name}'`));
    expect(missing).toEqual([]);
  });
});
