/**
 * Reads .env.example (the documented list of settings) into rows, and renders the README's
 * configuration table from it, so the two cannot drift apart (a test compares them).
 */
export interface EnvDocRow {
  group: string;
  name: string;
  defaultValue: string;
  description: string;
}

export function parseEnvExample(text: string): EnvDocRow[] {
  const rows: EnvDocRow[] = [];
  let group = '';
  let comment: string[] = [];
  let afterVariable = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const heading = /^# --- (.+) ---$/.exec(line);
    if (heading) {
      group = heading[1]!;
      comment = [];
    } else if (line.startsWith('#')) {
      if (afterVariable) comment = [];
      comment.push(line.replace(/^#\s?/, ''));
    } else if (/^[A-Z][A-Z0-9_]*=/.test(line)) {
      const eq = line.indexOf('=');
      // a comment above several variables in a row describes all of them
      rows.push({ group, name: line.slice(0, eq), defaultValue: line.slice(eq + 1), description: comment.join(' ') });
    } else {
      comment = [];
    }
    afterVariable = /^[A-Z][A-Z0-9_]*=/.test(line);
  }
  return rows;
}

const cell = (s: string) => s.replaceAll('|', '\\|');

export function renderConfigTable(rows: EnvDocRow[]): string {
  const out = ['| group | variable | default | meaning |', '|---|---|---|---|'];
  for (const r of rows) {
    out.push(`| ${cell(r.group)} | \`${r.name}\` | ${r.defaultValue ? `\`${cell(r.defaultValue)}\`` : '(empty)'} | ${cell(r.description)} |`);
  }
  return out.join('\n');
}

export const CONFIG_TABLE_START = '<!-- config-table:start (generated from .env.example by scripts/config-table.ts) -->';
export const CONFIG_TABLE_END = '<!-- config-table:end -->';

/** Replaces the table between the markers; returns null when the markers are missing. */
export function withConfigTable(readme: string, table: string): string | null {
  const a = readme.indexOf(CONFIG_TABLE_START);
  const b = readme.indexOf(CONFIG_TABLE_END);
  if (a < 0 || b < a) return null;
  return `${readme.slice(0, a + CONFIG_TABLE_START.length)}\n${table}\n${readme.slice(b)}`;
}
