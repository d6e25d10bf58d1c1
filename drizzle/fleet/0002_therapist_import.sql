CREATE TABLE "fleet"."therapist_external_ids" (
	"scope" text NOT NULL,
	"external_id" text NOT NULL,
	"therapist_id" integer,
	"deleted_at" timestamp with time zone,
	"first_file_id" bigint,
	"last_file_id" bigint,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "fleet"."therapist_import_files" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"run_id" bigint,
	"path" text NOT NULL,
	"postcode" text,
	"date_folder" text,
	"urgent" boolean DEFAULT false NOT NULL,
	"content_hash" text,
	"size_bytes" bigint,
	"status" text NOT NULL,
	"reason" text,
	"file_errors" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"metadata_disagreements" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"failures" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"status_mismatches" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"counts" jsonb,
	"attempts" integer DEFAULT 0 NOT NULL,
	"discovered_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"duration_ms" integer
);
--> statement-breakpoint
CREATE TABLE "fleet"."therapist_import_runs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"trigger" text NOT NULL,
	"state" text DEFAULT 'collecting' NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"sealed_at" timestamp with time zone,
	"closed_at" timestamp with time zone,
	"file_count" integer DEFAULT 0 NOT NULL,
	"file_status_counts" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"counts" jsonb,
	"summary_delivery_id" uuid
);
--> statement-breakpoint
ALTER TABLE "fleet"."therapist_import_files" ADD CONSTRAINT "therapist_import_files_run_id_therapist_import_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "fleet"."therapist_import_runs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "therapist_external_ids_pk" ON "fleet"."therapist_external_ids" USING btree ("scope","external_id");--> statement-breakpoint
CREATE INDEX "therapist_external_ids_therapist_idx" ON "fleet"."therapist_external_ids" USING btree ("therapist_id");--> statement-breakpoint
CREATE UNIQUE INDEX "therapist_import_files_hash_uq" ON "fleet"."therapist_import_files" USING btree ("content_hash") WHERE "fleet"."therapist_import_files"."status" <> 'skipped';--> statement-breakpoint
CREATE UNIQUE INDEX "therapist_import_files_skipped_uq" ON "fleet"."therapist_import_files" USING btree ("path",coalesce("content_hash", '')) WHERE "fleet"."therapist_import_files"."status" = 'skipped';--> statement-breakpoint
CREATE INDEX "therapist_import_files_run_idx" ON "fleet"."therapist_import_files" USING btree ("run_id","status");--> statement-breakpoint
CREATE INDEX "therapist_import_files_postcode_idx" ON "fleet"."therapist_import_files" USING btree ("postcode","date_folder");--> statement-breakpoint
CREATE INDEX "therapist_import_files_discovered_idx" ON "fleet"."therapist_import_files" USING btree ("discovered_at");--> statement-breakpoint
CREATE INDEX "therapist_import_runs_open_idx" ON "fleet"."therapist_import_runs" USING btree ("state") WHERE "fleet"."therapist_import_runs"."state" <> 'closed';