import { Counter } from 'prom-client';
import type { TherapistImportCounts } from '../../libs/db/schema/fleet-therapist-import.js';
import { importBacklog } from '../../libs/db/repositories/therapist-import.js';
import { collectedGauge, oncePerRegistry, scrapeRead, type Metrics } from '../../libs/metrics/index.js';
import type { FleetContext } from '../../libs/runtime/index.js';
import { outcomeKeys } from './report.js';

/**
 * Prometheus metrics of the therapist import. Labels are file statuses and therapist outcomes
 * only (never paths, postcodes or names).
 *
 * Counters (what this process finished): `fleet_therapist_import_files_total{status}` (imported,
 * partial, failed, skipped) and `fleet_therapist_import_therapists_total{outcome}` (created,
 * updated, unchanged, deactivated, skipped, failed). Gauges read from PostgreSQL at scrape
 * time (the same in every process: aggregate with max; absent when PostgreSQL cannot be read): files queued and importing, the age of
 * the oldest of them, and when the watcher's last run closed.
 */
export interface TherapistImportMetrics {
  /** A file reached its final state (its report is stored). */
  fileFinished(status: string, counts: TherapistImportCounts | null): void;
}

/** The statuses a file ends in (`fileFinished`). */
const finalFileStatuses = ['imported', 'partial', 'failed', 'skipped'] as const;

const metricsOf = oncePerRegistry((registry): TherapistImportMetrics => {
  const files = new Counter({
    name: 'fleet_therapist_import_files_total',
    help: 'Therapist files finished by this process, by final status (imported, partial, failed, skipped)',
    labelNames: ['status'],
    registers: [registry],
  });
  const therapists = new Counter({
    name: 'fleet_therapist_import_therapists_total',
    help: 'Therapists of the files finished by this process, by outcome (the outcomes of a file add up to its therapists)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  // Exported at 0 from the start: the alerts read increase() over an hour, and Prometheus takes a
  // series' first sample as its start, so a series first seen at 1 (the failed file of the
  // week's drop in a freshly started process) would show no increase and never alert.
  for (const status of finalFileStatuses) files.inc({ status }, 0);
  for (const outcome of outcomeKeys) therapists.inc({ outcome }, 0);
  return {
    fileFinished(status, counts) {
      files.inc({ status });
      if (!counts) return;
      for (const outcome of outcomeKeys) if (counts[outcome] > 0) therapists.inc({ outcome }, counts[outcome]);
    },
  };
});

export function therapistImportMetrics(metrics: Metrics): TherapistImportMetrics {
  return metricsOf(metrics.registry);
}

const BACKLOG_METRIC = 'fleet_therapist_import_pending_files';

/** Registers the backlog gauges once per registry; one PostgreSQL read per scrape serves all three. */
export function registerTherapistImportGauges(ctx: FleetContext): void {
  if (ctx.metrics.registry.getSingleMetric(BACKLOG_METRIC)) return;
  // When PostgreSQL cannot be read the scrape still answers, without these gauges (the
  // readiness check reports the database).
  const read = scrapeRead(
    () => importBacklog(ctx.database.db, ctx.clock.now()),
    (err) => ctx.log.warn({ err }, 'metrics: could not read the therapist import backlog'),
  );
  collectedGauge(ctx.metrics, BACKLOG_METRIC, 'Therapist files waiting for or in import, by status (queued, importing)', ['status'], async () => {
    const b = await read();
    if (!b) return [];
    return [
      { labels: { status: 'queued' }, value: b.queued },
      { labels: { status: 'importing' }, value: b.importing },
    ];
  });
  collectedGauge(
    ctx.metrics,
    'fleet_therapist_import_oldest_pending_seconds',
    'Age of the oldest therapist file queued or importing, since the watcher found it (0 when none)',
    [],
    async () => {
      const b = await read();
      return b ? [{ labels: {}, value: b.oldestPendingAgeSeconds }] : [];
    },
  );
  collectedGauge(
    ctx.metrics,
    'fleet_therapist_import_last_run_closed_timestamp_seconds',
    "Unix time the scraper watcher's last closed import run stopped taking files (absent before the first; a run closed again after a requeue keeps its time)",
    [],
    async () => {
      const at = (await read())?.lastWatcherRunClosedAt;
      return at ? [{ labels: {}, value: at.getTime() / 1000 }] : [];
    },
  );
}
