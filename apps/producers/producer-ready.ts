import type { FleetContext } from '../../libs/runtime/index.js';

/**
 * Waits until the producer connection is up: it fails fast instead of queueing commands, so a
 * schedule registered right at start would fail while Redis is still connecting.
 */
export async function producerReady(ctx: FleetContext, what: string, timeoutMs = 10_000): Promise<void> {
  if (ctx.producerRedis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis not ready within ${timeoutMs / 1000} s: cannot register ${what}`)), timeoutMs);
    ctx.producerRedis.once('ready', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
