import { describe, expect, it } from 'vitest';
import { collectedGauge, createMetrics, scrapeRead } from './index.js';

describe('scrapeRead', () => {
  it('shares a read in flight, reads again once it settled, and turns a failure into null', async () => {
    let reads = 0;
    let fail = false;
    const errors: unknown[] = [];
    const read = scrapeRead(
      async () => {
        reads++;
        await new Promise((r) => setTimeout(r, 5));
        if (fail) throw new Error('database down');
        return reads;
      },
      (err) => errors.push(err),
    );
    expect(await Promise.all([read(), read(), read()])).toEqual([1, 1, 1]);
    expect(await read()).toBe(2);
    fail = true;
    expect(await Promise.all([read(), read()])).toEqual([null, null]);
    expect(errors).toHaveLength(1);
    fail = false;
    expect(await read()).toBe(4);
  });

  it('gives null for a read that does not answer within the wait (a hung PostgreSQL); while it hangs no other is started, one is after retryHungMs', async () => {
    const errors: unknown[] = [];
    let answer = false;
    let reads = 0;
    const read = scrapeRead(
      () => {
        reads++;
        return answer ? Promise.resolve('rows') : new Promise<string>(() => {});
      },
      (err) => errors.push(err),
      50,
      300,
    );
    expect(await read()).toBeNull();
    expect(String(errors[0])).toContain('no answer within 50 ms');
    answer = true;
    // Scrapes while it hangs: null at once, no read piling up behind the hung one.
    const started = Date.now();
    expect(await Promise.all([read(), read()])).toEqual([null, null]);
    expect(await read()).toBeNull();
    expect(Date.now() - started).toBeLessThan(40);
    expect(reads).toBe(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(await read()).toBe('rows');
    expect(reads).toBe(2);
  });

  it('reads again at once when the hung read settles at last', async () => {
    let release: (v: string) => void = () => {};
    let reads = 0;
    const read = scrapeRead(
      () => {
        reads++;
        return reads === 1 ? new Promise<string>((r) => (release = r)) : Promise.resolve('fresh');
      },
      () => {},
      50,
      60_000,
    );
    expect(await read()).toBeNull();
    expect(await read()).toBeNull();
    release('late');
    await new Promise((r) => setTimeout(r, 0));
    expect(await read()).toBe('fresh');
    expect(reads).toBe(2);
  });
});

describe('collectedGauge', () => {
  it('is left out of the scrape when its read gives no rows, also without labels (not 0)', async () => {
    const metrics = createMetrics();
    let value: number | null = 7;
    collectedGauge(metrics, 'fleet_test_value', 'a test gauge', [], async () => (value === null ? [] : [{ labels: {}, value }]));
    expect(await metrics.registry.metrics()).toMatch(/^fleet_test_value 7$/m);
    value = null;
    const text = await metrics.registry.metrics();
    expect(text).toContain('# TYPE fleet_test_value gauge');
    expect(text).not.toMatch(/^fleet_test_value /m);
  });
});
