/** CPU time of the processes a benchmark drives (Linux /proc; PostgreSQL and Redis run on this machine). */
import { readdirSync, readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';

/** CPU seconds (user + system) of a process from /proc (Linux); 0 when it is gone. */
export function procCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

/**
 * CPU seconds of PostgreSQL, split into the backends serving the benchmark's database and
 * the server's own background processes (WAL writer, checkpointer, ...; shared with anything
 * else running on the machine). Read from /proc: the server runs on this machine.
 */
export function postgresCpu(dbName: string): { backends: Map<number, number>; background: number } {
  const backends = new Map<number, number>();
  let background = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (!cmd.startsWith('postgres: ')) continue;
    if (cmd.includes(` ${dbName} `)) backends.set(Number(d), procCpuSeconds(Number(d)));
    else if (!/ postgres \S+ \d+\.\d+\.\d+\.\d+\(|\[local\]/.test(cmd)) background += procCpuSeconds(Number(d));
  }
  return { backends, background };
}

export async function redisCpu(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const v = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return v('used_cpu_sys') + v('used_cpu_user');
}
