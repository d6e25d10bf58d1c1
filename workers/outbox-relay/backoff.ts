/**
 * Exponential backoff with a cap and "equal jitter": after the n-th failure in a row
 * (n >= 1) wait between half and all of min(maxMs, minMs * 2^(n-1)).
 */
export function backoffMs(failures: number, opts: { minMs: number; maxMs: number }, random: () => number = Math.random): number {
  const n = Math.max(1, failures);
  const ceiling = Math.min(opts.maxMs, opts.minMs * 2 ** Math.min(n - 1, 30));
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}
