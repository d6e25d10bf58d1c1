import type { Component, FleetContext } from '../../libs/runtime/index.js';
import type { DeadLetterHooks } from '../../libs/ops/dead-letters.js';

/**
 * The roles a fleet process can take. `fleet start` runs them all; `--only a,b` runs a
 * subset, so the same build scales out as separate processes on several machines.
 * Each job family adds one line here.
 */
export interface RoleSpec {
  description: string;
  components(ctx: FleetContext): Component[] | Promise<Component[]>;
}

export const roles: Record<string, RoleSpec> = {};

/** Domain bookkeeping for operator actions on dead letters, per job name. */
export const deadLetterHooks: DeadLetterHooks = {};

export class UnknownRoleError extends Error {
  override name = 'UnknownRoleError';
}

export function resolveRoles(only?: string): string[] {
  const all = Object.keys(roles);
  if (!only) return all;
  const asked = only.split(',').map((r) => r.trim()).filter(Boolean);
  const unknown = asked.filter((r) => !all.includes(r));
  if (unknown.length) {
    throw new UnknownRoleError(`unknown role(s): ${unknown.join(', ')}; known roles: ${all.join(', ')}`);
  }
  return asked;
}
