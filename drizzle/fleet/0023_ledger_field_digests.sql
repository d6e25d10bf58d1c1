ALTER TABLE "fleet"."patient_import_ledger" ADD COLUMN "differing_compared_with" text;--> statement-breakpoint
ALTER TABLE "fleet"."patient_import_ledger" ADD COLUMN "field_digests" jsonb;