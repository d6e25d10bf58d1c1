/**
 * Writes the README's configuration table from .env.example.
 *   npx tsx scripts/config-table.ts          # rewrite README.md in place
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseEnvExample, renderConfigTable, withConfigTable } from '../libs/config/env-doc.js';

const root = new URL('../', import.meta.url);
const table = renderConfigTable(parseEnvExample(readFileSync(new URL('.env.example', root), 'utf8')));
const readme = readFileSync(new URL('README.md', root), 'utf8');
const updated = withConfigTable(readme, table);
if (updated === null) {
  console.error('README.md has no config-table markers');
  process.exit(1);
}
writeFileSync(new URL('README.md', root), updated);
console.log(`README.md: configuration table with ${table.split('\n').length - 2} variables`);
