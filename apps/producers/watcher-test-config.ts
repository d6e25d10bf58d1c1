/**
 * The configuration the scraper watcher's integration tests run with: their own database,
 * queue prefix and drop folder, short settle and quiet times, fast retries.
 */
export function watcherTestEnv(o: {
  databaseUrl: string;
  redisUrl: string;
  queuePrefix: string;
  dropDir: string;
  stabilityMs?: number;
  quietMs?: number;
}): Record<string, string> {
  return {
    DATABASE_URL: o.databaseUrl,
    REDIS_URL: o.redisUrl,
    QUEUE_PREFIX: o.queuePrefix,
    SCRAPER_DROP_DIR: o.dropDir,
    SCRAPER_STABILITY_MS: String(o.stabilityMs ?? 300),
    SCRAPER_POLL_INTERVAL_MS: '50',
    SCRAPER_RUN_QUIET_MS: String(o.quietMs ?? 300),
    RETRY_BACKOFF_SCALE: '0.001',
    LOG_LEVEL: 'silent',
  };
}
