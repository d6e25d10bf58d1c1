import type postgres from 'postgres';
import type { Database } from './client.js';

/**
 * A lease: a session-level advisory lock, so that one process at a time does a job (the outbox
 * relay publishes, the scraper watcher watches the drop folder). PostgreSQL drops the lock the
 * moment the session ends (crash, SIGKILL, network loss), and a standby takes it on its next try.
 *
 * The lock is held on a connection of its own (`Database.ownConnection`), not one reserved from
 * the pool: in the PostgreSQL outage test, unlocking on a reserved connection whose session had
 * ended waited forever, and the watcher's stop with it. The own connection reconnects by
 * itself; a new session simply does not hold the lock, which `held` reports.
 *
 * Keys are two int4 (class, object): the class says "Curavani Fleet", the object which lease.
 */
const FLEET_LOCK_CLASS = 0x0f1ee7;

export const LOCK_KEYS = {
  /** The publishing outbox relay. */
  outboxRelay: [FLEET_LOCK_CLASS, 1],
  /** Held shared by the relay for each drain, exclusively by an operator putting parked events back. */
  outboxParking: [FLEET_LOCK_CLASS, 2],
  /** The one active scraper watcher. */
  scraperWatcher: [FLEET_LOCK_CLASS, 3],
} as const satisfies Record<string, readonly [number, number]>;

export interface Lease {
  /** The connection whose session holds the lock (work done over it is fenced by `held`). */
  conn: postgres.Sql;
  /** True while this session still holds the lock. Rejects when PostgreSQL cannot be reached. */
  held(): Promise<boolean>;
  /** Gives the lock up (idempotent; a session that ended has dropped it already). */
  release(): Promise<void>;
}

export interface LeaseHolder {
  /** Takes the lease when it is free: the lease, or null while another session holds it. Rejects when PostgreSQL cannot be reached. */
  acquire(): Promise<Lease | null>;
  /** Gives up a lease still held and ends the connection. */
  close(): Promise<void>;
}

/** Tries for the lease `key` over a connection of its own (opened on first use). */
export function leaseHolder(database: Database, key: readonly [number, number], purpose: string): LeaseHolder {
  const [cls, obj] = key;
  let conn: postgres.Sql | null = null;
  let current: Lease | null = null;
  return {
    async acquire() {
      await current?.release();
      conn ??= database.ownConnection(purpose);
      const c = conn;
      const [row] = await c<{ ok: boolean }[]>`select pg_try_advisory_lock(${cls}::int4, ${obj}::int4) as ok`;
      if (!row?.ok) return null;
      let released = false;
      const lease: Lease = {
        conn: c,
        async held() {
          if (released) return false;
          // objsubid 2: a lock taken with two int4 keys.
          const [r] = await c<{ held: boolean }[]>`
            select exists (select 1 from pg_locks where locktype = 'advisory' and granted and pid = pg_backend_pid()
              and classid = ${cls}::int4::oid and objid = ${obj}::int4::oid and objsubid = 2) as held`;
          return r?.held === true;
        },
        async release() {
          if (released) return;
          released = true;
          if (current === lease) current = null;
          // In a new session (the old one ended) there is nothing to unlock, and nothing is said.
          await c`select pg_advisory_unlock(${cls}::int4, ${obj}::int4)`.catch(() => {});
        },
      };
      current = lease;
      return lease;
    },
    async close() {
      await current?.release();
      const c = conn;
      conn = null;
      await c?.end({ timeout: 1 });
    },
  };
}

/** Who holds a lease now, as PostgreSQL sees it (for `fleet status`). */
export interface LeaseHolderInfo {
  lease: keyof typeof LOCK_KEYS;
  /** The holding connection's application_name: `curavani-fleet[:<FLEET_INSTANCE>]:<purpose>`. */
  applicationName: string;
  /** When the holding session began. */
  since: Date;
}

/** The sessions holding the fleet's leases in this database (the shared parking lock is left out: it is held per drain). */
export async function currentLeaseHolders(sql: postgres.Sql): Promise<LeaseHolderInfo[]> {
  const leases = (['outboxRelay', 'scraperWatcher'] as const).map((lease) => ({ lease, obj: LOCK_KEYS[lease][1] }));
  // The time as epoch milliseconds: the pool's clients parse timestamps differently (drizzle reads them as text).
  const rows = await sql<Array<{ obj: number; application_name: string; since_ms: number }>>`
    select l.objid::int as obj, a.application_name, (extract(epoch from a.backend_start) * 1000)::float8 as since_ms
    from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and l.mode = 'ExclusiveLock' and l.objsubid = 2
      and l.database = (select oid from pg_database where datname = current_database())
      and l.classid = ${FLEET_LOCK_CLASS}::int4::oid and l.objid = any(${leases.map((l) => l.obj)}::int4[]::oid[])
    order by l.objid`;
  return rows.map((r) => ({ lease: leases.find((l) => l.obj === r.obj)!.lease, applicationName: r.application_name, since: new Date(r.since_ms) }));
}
