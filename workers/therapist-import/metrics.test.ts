import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../libs/metrics/index.js';
import { metricValues } from '../../libs/testing/metrics.js';
import { therapistImportMetrics } from './metrics.js';

describe('therapist import counters', () => {
  // The alerts read increase() over an hour; Prometheus takes a series' first sample as its
  // start, so a counter that appears only with the first failed file (at 1) shows no increase:
  // the weekly drop's failed file in a freshly started process never alerted.
  it('are exported at 0 for every status and outcome before the first file finishes', async () => {
    const metrics = createMetrics();
    therapistImportMetrics(metrics);
    expect(await metricValues(metrics.registry, 'fleet_therapist_import_files_total', 'status')).toEqual({ imported: 0, partial: 0, failed: 0, skipped: 0 });
    expect(await metricValues(metrics.registry, 'fleet_therapist_import_therapists_total', 'outcome')).toEqual({
      created: 0,
      updated: 0,
      unchanged: 0,
      deactivated: 0,
      skipped: 0,
      failed: 0,
    });
  });
});
