import { Counter } from 'prom-client';
import { oncePerRegistry } from '../../libs/metrics/index.js';
import type { EmailMetrics } from './process-delivery.js';

export const emailMetrics = oncePerRegistry((registry): EmailMetrics => {
  const requests = new Counter({ name: 'fleet_email_requests_total', help: 'Provider requests by outcome', labelNames: ['outcome'], registers: [registry] });
  // Exported from the start, so the alert on refusals sees the first one as an increase.
  requests.inc({ outcome: 'refused' }, 0);
  const deliveries = new Counter({ name: 'fleet_email_deliveries_total', help: 'Deliveries finished, by status', labelNames: ['status'], registers: [registry] });
  // Likewise for FleetEmailFailures (increase over an hour): a series first seen at 1 shows no increase.
  for (const status of ['sent', 'failed', 'dropped'] as const) deliveries.inc({ status }, 0);
  return { requests: (outcome) => requests.inc({ outcome }), deliveries: (status, n) => deliveries.inc({ status }, n) };
});
