ALTER TABLE "fleet"."deliveries" ADD COLUMN "batch_id" uuid;--> statement-breakpoint
ALTER TABLE "fleet"."deliveries" ADD COLUMN "batch_leader_id" uuid;--> statement-breakpoint
ALTER TABLE "fleet"."deliveries" ADD COLUMN "claimed_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "deliveries_batch_idx" ON "fleet"."deliveries" USING btree ("batch_id") WHERE "fleet"."deliveries"."batch_id" is not null;