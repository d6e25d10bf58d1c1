ALTER TABLE "fleet"."outbox" ADD COLUMN "parked_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "fleet"."outbox" ADD COLUMN "park_reason" text;--> statement-breakpoint
CREATE INDEX "outbox_parked_idx" ON "fleet"."outbox" USING btree ("topic","key","id") WHERE "fleet"."outbox"."parked_at" is not null;