ALTER TABLE "fleet"."therapist_import_files" ADD COLUMN "error_code" text;--> statement-breakpoint
ALTER TABLE "fleet"."therapist_import_files" ADD COLUMN "dead_letter_discarded_at" timestamp with time zone;--> statement-breakpoint
-- Files that failed before the column existed: the job's failures by the reason the import wrote.
UPDATE "fleet"."therapist_import_files" SET "error_code" = CASE
  WHEN "reason" LIKE 'import failed after retries:%' THEN 'gave_up'
  WHEN "reason" LIKE 'import abandoned:%' THEN 'worker_died'
END
WHERE "status" = 'failed' AND ("reason" LIKE 'import failed after retries:%' OR "reason" LIKE 'import abandoned:%');
