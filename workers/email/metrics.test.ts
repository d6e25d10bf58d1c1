import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../libs/metrics/index.js';
import { metricValues } from '../../libs/testing/metrics.js';
import { emailMetrics } from './metrics.js';

describe('email counters', () => {
  // FleetEmailFailures reads increase() over an hour; Prometheus takes a series' first sample as
  // its start, so a counter that appears only with the first failed email (at 1) shows no
  // increase: one email failing for good in a freshly started process never alerted.
  it('export failed deliveries (and refused requests) at 0 before anything happened', async () => {
    const { registry } = createMetrics();
    emailMetrics(registry);
    expect(await metricValues(registry, 'fleet_email_deliveries_total', 'status')).toMatchObject({ failed: 0 });
    expect(await metricValues(registry, 'fleet_email_requests_total', 'outcome')).toMatchObject({ refused: 0 });
  });
});
