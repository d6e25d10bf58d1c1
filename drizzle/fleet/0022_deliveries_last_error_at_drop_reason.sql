ALTER TABLE "fleet"."deliveries" ADD COLUMN "last_error_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "fleet"."deliveries" ADD COLUMN "drop_reason" text;