import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type postgres from 'postgres';

/**
 * A few figures of the machine a benchmark ran on, printed next to its results: a ratio to a
 * baseline that waits on round trips and commits (the naive importer) moves with the disk and
 * the network as much as with the code, and a CPU-bound pipeline with the CPU. With these,
 * runs on different machines can be told apart.
 */
export interface MachineFigures {
  /** `select 1`, one round trip (median). */
  roundTripUs: number;
  /** A one-row insert in its own transaction: a round trip and a commit (WAL flush; median). */
  commitUs: number;
  /** A fixed amount of node work (sha256 of 64 MB, JSON of a 100-therapist file 200 times). */
  cpuMs: number;
}

export async function measureMachine(sql: postgres.Sql, sampleJson: string): Promise<MachineFigures> {
  const n = 500;
  /** Median of n timings of `op` in µs (a VM's hiccups move a mean, hardly a median). */
  const median = async (op: (i: number) => Promise<unknown>) => {
    const us: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await op(i);
      us.push((performance.now() - t0) * 1000);
    }
    return us.sort((a, b) => a - b)[n >> 1]!;
  };
  await sql`create table if not exists bench_machine_probe (x int)`;
  try {
    const roundTripUs = await median(() => sql`select 1`);
    const commitUs = await median((i) => sql`insert into bench_machine_probe values (${i})`);
    const t = performance.now();
    createHash('sha256').update(Buffer.alloc(64 * 1024 * 1024, 7)).digest('hex');
    for (let i = 0; i < 200; i++) JSON.stringify(JSON.parse(sampleJson));
    const cpuMs = performance.now() - t;
    return { roundTripUs: Math.round(roundTripUs), commitUs: Math.round(commitUs), cpuMs: Math.round(cpuMs) };
  } finally {
    await sql`drop table if exists bench_machine_probe`;
  }
}

export const describeMachine = (m: MachineFigures) =>
  `machine: PostgreSQL round trip ${m.roundTripUs} µs, autocommit insert ${m.commitUs} µs, node CPU calibration ${m.cpuMs} ms (lower is faster)`;
