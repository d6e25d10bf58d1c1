import { catalog, fleetSchedulers, type FleetSchedulerId } from '../../libs/queues/index.js';
import { settlesWithin, type Component, type FleetContext } from '../../libs/runtime/index.js';

/**
 * A component that registers one of the fleet's schedules at start and keeps it registered:
 * every SCHEDULE_CHECK_MS it checks that Redis still holds the schedule and, when not (Redis
 * restarted without its data, or someone removed it by hand), registers it again. Without
 * this, a schedule lost while the process runs stays lost until the next restart: no poll,
 * no weekly emails, no retention sweep. `register` is the component's whole registration,
 * called with why (what it enqueues besides the schedule must be idempotent).
 */
export function scheduleComponent(
  ctx: FleetContext,
  o: { name: string; schedulerId: FleetSchedulerId; register: (why: 'start' | 'restored') => Promise<void> },
): Component {
  const queue = ctx.queues.queue(catalog[fleetSchedulers[o.schedulerId].jobName].queue);
  let timer: NodeJS.Timeout | null = null;
  let checking: Promise<void> | null = null;
  let failing = false;
  const check = async () => {
    try {
      if (!(await queue.getJobScheduler(o.schedulerId))) {
        ctx.log.warn({ schedulerId: o.schedulerId }, 'schedule missing from Redis (restarted without its data, or removed by hand): registering it again');
        await o.register('restored');
      }
      failing = false;
    } catch (err) {
      // Redis down: /ready and the queue metrics say so; one line per outage here is enough.
      if (!failing) ctx.log.warn({ err, schedulerId: o.schedulerId }, 'could not check the schedule; checking again later');
      failing = true;
    } finally {
      checking = null;
    }
  };
  return {
    name: o.name,
    async start() {
      await o.register('start');
      timer = setInterval(() => void (checking ??= check()), ctx.config.queues.scheduleCheckMs);
      timer.unref();
    },
    async stop(timeoutMs) {
      if (timer) clearInterval(timer);
      timer = null;
      // A check under way finishes before the process closes its connections, unless Redis is
      // silent (the producer connection has no command timeout): then stopping does not wait on it.
      if (checking) await settlesWithin(checking, Math.min(timeoutMs, 5_000));
    },
  };
}
