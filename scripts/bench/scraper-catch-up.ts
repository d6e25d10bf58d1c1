/**
 * Benchmark of the scraper watcher's start-up catch-up on a folder that keeps its history: a
 * year of weekly full drops (`--folders` date folders x `--files` postcode files of `--per-file`
 * therapists). Starts the watcher alone (no import workers) on the same folder: first, then
 * twice with nothing new, then once with the stat keys cleared (every file read and hashed, as
 * before stat keys were kept). Prints, per start, the wall time until caught up, how many files
 * were read and hashed and how many were known by their stat key (not read), and peak RSS.
 * `--cold` drops the page cache before each start (needs root): as after a reboot, or a network
 * file system without a warm cache. Run with `node --expose-gc --import tsx` for an RSS before
 * each start taken after a forced collection.
 *
 *   npx tsx scripts/bench/scraper-catch-up.ts [--folders 52] [--files 400] [--per-file 100] [--cold]
 *
 * Uses a scratch database and queue prefix of its own and removes them, and its folder, after.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { scraperWatcherComponent } from '../../apps/producers/scraper-watcher.js';
import { loadConfig } from '../../libs/config/index.js';
import { runMigrations } from '../../libs/db/migrate.js';
import { silentLogger } from '../../libs/log/index.js';
import { openContext } from '../../libs/runtime/index.js';
import { deleteQueueKeys } from '../../libs/testing/redis.js';
import { ADULT_VT, scraperFile, therapistLine } from '../../workers/therapist-import/fixtures.js';

const { values: args } = parseArgs({
  options: {
    folders: { type: 'string', default: '52' },
    files: { type: 'string', default: '400' },
    'per-file': { type: 'string', default: '100' },
    cold: { type: 'boolean', default: false },
  },
});
const FOLDERS = Number(args.folders);
const FILES = Number(args.files);
const PER_FILE = Number(args['per-file']);

const adminUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const suffix = Math.random().toString(36).slice(2, 8);
const dbName = `bench_catch_up_${suffix}`;
const prefix = `bench_cu_${suffix}`;
const withDb = (name: string) => {
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
};

/** Weekly folders back from 2025-12-29, oldest first. */
function folders(): string[] {
  const last = Date.UTC(2025, 11, 29);
  return Array.from({ length: FOLDERS }, (_, i) => new Date(last - (FOLDERS - 1 - i) * 7 * 86_400_000).toISOString().slice(0, 10).replace(/-/g, ''));
}

async function writeHistory(dir: string): Promise<number> {
  const old = new Date(Date.now() - 3600_000);
  let bytes = 0;
  for (let f = 0; f < FILES; f++) {
    const plz = String(10000 + f * 223).padStart(5, '0');
    const lines = Array.from({ length: PER_FILE }, (_, j) =>
      therapistLine({ id: `p${j}`, first: `Vorname${j}`, last: `Nachname${j}`, plz, phone: `0${plz} ${j}`, email: `praxis${j}@example.org`, methods: [ADULT_VT] }),
    );
    for (const d of folders()) {
      const abs = path.join(dir, d, `${plz}.json`);
      await mkdir(path.dirname(abs), { recursive: true });
      const text = scraperFile(lines, { scrape_id: `${plz}_${d}`, postcode_area: `${plz.slice(0, 2)}XXX` });
      bytes += Buffer.byteLength(text);
      await writeFile(abs, text);
      await utimes(abs, old, old);
    }
  }
  return bytes;
}

async function main() {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database "${dbName}"`);
  const dir = await mkdtemp(path.join(tmpdir(), 'scraper-catch-up-bench-'));
  try {
    await runMigrations(withDb(dbName), { platform: true });
    const t = performance.now();
    const bytes = await writeHistory(dir);
    process.stdout.write(`wrote ${FOLDERS} folders x ${FILES} files (${(bytes / 1024 / 1024).toFixed(0)} MB) in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
    const ctx = openContext(loadConfig({ DATABASE_URL: withDb(dbName), REDIS_URL: redisUrl, QUEUE_PREFIX: prefix, SCRAPER_DROP_DIR: dir, LOG_LEVEL: 'silent' }), silentLogger());
    const rows: Array<Record<string, string>> = [];
    try {
      const sql = postgres(withDb(dbName), { max: 1, onnotice: () => {} });
      for (const start of ['1. first start', '2. restart, nothing new', '3. restart, nothing new', '4. restart, stat keys cleared']) {
        if (start.startsWith('4.')) await sql`update fleet.therapist_import_files set stat_key = null`;
        if (args.cold) execFileSync('sh', ['-c', 'sync && echo 3 > /proc/sys/vm/drop_caches']);
        (globalThis as { gc?: () => void }).gc?.();
        const before = process.memoryUsage().rss;
        let peak = before;
        const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
        const t0 = performance.now();
        const watcher = scraperWatcherComponent(ctx);
        await watcher.start();
        await watcher.caughtUp();
        const wall = (performance.now() - t0) / 1000;
        clearInterval(sampler);
        const s = watcher.catchUpStats();
        await watcher.stop(10_000);
        if (start.startsWith('4.')) await sql.end({ timeout: 5 });
        rows.push({ start, 'wall s': wall.toFixed(1), files: String(s?.files), 'read and hashed': String(s?.read), 'known by stat key': String(s?.knownByStat), 'RSS before MB': (before / 1024 / 1024).toFixed(0), 'peak RSS MB': (peak / 1024 / 1024).toFixed(0) });
      }
    } finally {
      await ctx.close();
    }
    process.stdout.write(`page cache: ${args.cold ? 'dropped before each start' : 'warm'}\n`);
    console.table(rows);
  } finally {
    await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
    await admin.end({ timeout: 5 });
    await deleteQueueKeys(prefix, redisUrl);
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
