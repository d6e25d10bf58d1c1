import type { Registry } from 'prom-client';

/** A metric's current values keyed by the value of `label` ('' without one); throws when it is not registered. */
export async function metricValues(registry: Registry, name: string, label?: string): Promise<Record<string, number>> {
  const m = await registry.getSingleMetric(name)?.get();
  if (!m) throw new Error(`metric ${name} is not registered`);
  return Object.fromEntries(m.values.map((v) => [label ? String(v.labels[label]) : '', v.value]));
}
