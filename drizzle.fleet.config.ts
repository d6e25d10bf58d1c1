import { defineConfig } from 'drizzle-kit';

// The fleet's own tables (schema `fleet`), always migrated.
export default defineConfig({
  dialect: 'postgresql',
  schema: './libs/db/schema/fleet*.ts',
  out: './drizzle/fleet',
  schemaFilter: ['fleet'],
});
