import postgres from 'postgres';
import type { TestProject } from 'vitest/node';
import { runMigrations } from '../db/migrate.js';
import { TEST_ADMIN_DB_URL, assertServicesUp, randomSuffix, withDatabase } from './services.js';

declare module 'vitest' {
  export interface ProvidedContext {
    templateDatabase: string;
  }
}

/**
 * Runs once per test run: checks that PostgreSQL and Redis are up (failing loudly if not),
 * migrates a template database, and hands its name to the test files, which each clone it
 * into a database of their own.
 */
export default async function setup(project: TestProject) {
  await assertServicesUp();
  const template = `fleet_tpl_${randomSuffix()}`;
  const admin = postgres(TEST_ADMIN_DB_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database "${template}"`);
  await runMigrations(withDatabase(TEST_ADMIN_DB_URL, template), { platform: true });
  project.provide('templateDatabase', template);
  return async () => {
    await admin.unsafe(`drop database if exists "${template}" with (force)`);
    await admin.end({ timeout: 5 });
  };
}
