import { defineConfig } from 'drizzle-kit';

// The platform's tables, created only when the fleet runs standalone (PLATFORM_MIGRATIONS=true).
export default defineConfig({
  dialect: 'postgresql',
  schema: './libs/db/schema/platform.ts',
  out: './drizzle/platform',
  schemaFilter: ['patient_service', 'therapist_service', 'matching_service'],
});
