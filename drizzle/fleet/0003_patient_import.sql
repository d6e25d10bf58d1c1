CREATE TABLE "fleet"."patient_consents" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"patient_id" integer NOT NULL,
	"ledger_id" bigint NOT NULL,
	"registration_token" text NOT NULL,
	"registration_timestamp" text,
	"ip_address" text,
	"user_agent" text,
	"consented_at" timestamp with time zone,
	"voucher_booking" boolean DEFAULT false NOT NULL,
	"metadata" jsonb NOT NULL,
	"signed" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "fleet"."patient_import_ledger" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"source" text DEFAULT 'bucket' NOT NULL,
	"bucket" text NOT NULL,
	"object_name" text NOT NULL,
	"generation" text NOT NULL,
	"source_uri" text NOT NULL,
	"size" bigint,
	"md5_hash" text,
	"crc32c" text,
	"sha256" text,
	"status" text DEFAULT 'received' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"reason" text,
	"error_code" text,
	"validation" text,
	"patient_id" integer,
	"duplicate_of_patient_id" integer,
	"duplicate_kind" text,
	"possible_duplicate_of_patient_id" integer,
	"unknown_fields" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"backup_path" text,
	"failed_path" text,
	"delete_outcome" text,
	"staff_delivery_id" uuid,
	"failure_delivery_id" uuid,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	"downloaded_at" timestamp with time zone,
	"backed_up_at" timestamp with time zone,
	"imported_at" timestamp with time zone,
	"deleted_at" timestamp with time zone,
	"failed_at" timestamp with time zone,
	"discarded_at" timestamp with time zone,
	"last_attempt_at" timestamp with time zone,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "patient_consents_token_uq" ON "fleet"."patient_consents" USING btree ("registration_token");--> statement-breakpoint
CREATE INDEX "patient_consents_patient_idx" ON "fleet"."patient_consents" USING btree ("patient_id");--> statement-breakpoint
CREATE UNIQUE INDEX "patient_import_ledger_object_uq" ON "fleet"."patient_import_ledger" USING btree ("bucket","object_name","generation");--> statement-breakpoint
CREATE INDEX "patient_import_ledger_status_idx" ON "fleet"."patient_import_ledger" USING btree ("status","id");--> statement-breakpoint
CREATE INDEX "patient_import_ledger_open_idx" ON "fleet"."patient_import_ledger" USING btree ("id") WHERE "fleet"."patient_import_ledger"."status" in ('received', 'downloaded', 'backed_up', 'imported', 'duplicate');