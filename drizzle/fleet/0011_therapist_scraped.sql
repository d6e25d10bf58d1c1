CREATE TABLE "fleet"."therapist_scraped" (
	"therapist_id" integer PRIMARY KEY NOT NULL,
	"fields" json NOT NULL,
	"digest" text NOT NULL,
	"row_version" text,
	"last_file_id" bigint,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "fleet"."therapist_import_files" ADD COLUMN "replaced_corrections" jsonb DEFAULT '[]'::jsonb NOT NULL;