CREATE SCHEMA "matching_service";
--> statement-breakpoint
CREATE SCHEMA "patient_service";
--> statement-breakpoint
CREATE SCHEMA "therapist_service";
--> statement-breakpoint
CREATE TABLE "patient_service"."patienten" (
	"id" serial PRIMARY KEY NOT NULL,
	"anrede" varchar(20) NOT NULL,
	"geschlecht" varchar(20) NOT NULL,
	"vorname" varchar(100) NOT NULL,
	"nachname" varchar(100) NOT NULL,
	"strasse" varchar(255),
	"plz" varchar(10),
	"ort" varchar(100),
	"email" varchar(255),
	"telefon" varchar(50),
	"hausarzt" varchar(255),
	"krankenkasse" varchar(100),
	"geburtsdatum" date,
	"symptome" jsonb,
	"erfahrung_mit_psychotherapie" boolean,
	"letzte_sitzung_vorherige_psychotherapie" date,
	"empfehler_der_unterstuetzung" text,
	"verkehrsmittel" varchar(50),
	"offen_fuer_gruppentherapie" boolean DEFAULT false NOT NULL,
	"zeitliche_verfuegbarkeit" jsonb,
	"raeumliche_verfuegbarkeit" jsonb,
	"bevorzugtes_therapeutengeschlecht" varchar(20),
	"bevorzugtes_therapieverfahren" varchar(100),
	"zahlungsreferenz" varchar(20) NOT NULL,
	"vertraege_unterschrieben" boolean DEFAULT false NOT NULL,
	"zahlung_eingegangen" boolean DEFAULT false NOT NULL,
	"status" varchar(50) DEFAULT 'offen' NOT NULL,
	"startdatum" date,
	"weekly_update_opt_out" boolean DEFAULT false NOT NULL,
	"weekly_update_last_sent" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "matching_service"."platzsuche" (
	"id" serial PRIMARY KEY NOT NULL,
	"patient_id" integer NOT NULL,
	"status" varchar(20) NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "matching_service"."therapeut_anfrage_patient" (
	"id" serial PRIMARY KEY NOT NULL,
	"therapeutenanfrage_id" integer NOT NULL,
	"platzsuche_id" integer NOT NULL,
	"status" varchar(20) NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "therapist_service"."therapeuten" (
	"id" serial PRIMARY KEY NOT NULL,
	"anrede" varchar(20) NOT NULL,
	"geschlecht" varchar(20) NOT NULL,
	"titel" varchar(50),
	"vorname" varchar(100) NOT NULL,
	"nachname" varchar(100) NOT NULL,
	"strasse" varchar(255),
	"plz" varchar(10) NOT NULL,
	"ort" varchar(100),
	"telefon" varchar(50),
	"fax" varchar(50),
	"email" varchar(255),
	"telefonische_erreichbarkeit" jsonb,
	"fremdsprachen" jsonb,
	"psychotherapieverfahren" varchar(100),
	"status" varchar(20) DEFAULT 'aktiv' NOT NULL,
	"sperrgrund" text,
	"sperrdatum" date,
	"kassensitz" boolean DEFAULT true NOT NULL,
	"potenziell_verfuegbar" boolean DEFAULT false NOT NULL,
	"potenziell_verfuegbar_notizen" text,
	"ueber_curavani_informiert" boolean DEFAULT false NOT NULL,
	"naechster_kontakt_moeglich" date,
	"bevorzugte_diagnosen" jsonb,
	"alter_min" integer,
	"alter_max" integer,
	"geschlechtspraeferenz" varchar(50),
	"arbeitszeiten" jsonb,
	"bevorzugt_gruppentherapie" boolean DEFAULT false NOT NULL,
	"letzter_kontakt_email" date,
	"letzter_kontakt_telefon" date,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "matching_service"."therapeutenanfrage" (
	"id" serial PRIMARY KEY NOT NULL,
	"therapist_id" integer NOT NULL,
	"gesendet_datum" timestamp with time zone,
	"antwort_datum" timestamp with time zone,
	"antworttyp" varchar(30),
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "patienten_zahlungsreferenz_uq" ON "patient_service"."patienten" USING btree ("zahlungsreferenz");--> statement-breakpoint
CREATE INDEX "platzsuche_patient_idx" ON "matching_service"."platzsuche" USING btree ("patient_id","status");--> statement-breakpoint
CREATE INDEX "tap_platzsuche_idx" ON "matching_service"."therapeut_anfrage_patient" USING btree ("platzsuche_id");--> statement-breakpoint
CREATE INDEX "tap_anfrage_idx" ON "matching_service"."therapeut_anfrage_patient" USING btree ("therapeutenanfrage_id");--> statement-breakpoint
CREATE INDEX "therapeuten_name_plz_idx" ON "therapist_service"."therapeuten" USING btree ("vorname","nachname","plz");--> statement-breakpoint
CREATE INDEX "therapeuten_plz_idx" ON "therapist_service"."therapeuten" USING btree ("plz");