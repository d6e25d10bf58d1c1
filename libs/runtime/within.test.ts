import { describe, expect, it } from 'vitest';
import { settlesWithin, within } from './within.js';

const after = <T>(ms: number, value: T) => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));
const failAfter = (ms: number, message: string) => new Promise<never>((_, reject) => setTimeout(() => reject(new Error(message)), ms));

describe('within', () => {
  it('answers with the work, or rejects naming the time limit', async () => {
    await expect(within(after(5, 'done'), 1_000)).resolves.toBe('done');
    await expect(within(after(1_000, 'late'), 20)).rejects.toThrow('no answer within 20 ms');
    await expect(within(failAfter(5, 'refused'), 1_000)).rejects.toThrow('refused');
  });
});

describe('settlesWithin', () => {
  it('says whether the work fulfilled in time, and passes a rejection on', async () => {
    await expect(settlesWithin(after(5, 'done'), 1_000)).resolves.toBe(true);
    await expect(settlesWithin(after(1_000, 'late'), 20)).resolves.toBe(false);
    await expect(settlesWithin(failAfter(5, 'refused'), 1_000)).rejects.toThrow('refused');
  });
});
