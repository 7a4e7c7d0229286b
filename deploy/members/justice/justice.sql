-- The ministry of justice's criminal record as it might hold it in
-- PostgreSQL (the onboarding tour, docs/onboarding.md): one row per person
-- on the national register, with the number of convictions on bulletin n° 3.
-- The tour inserts its own rows.
CREATE SCHEMA IF NOT EXISTS justice;
CREATE TABLE justice.record (
  eid         text PRIMARY KEY,
  convictions integer NOT NULL DEFAULT 0
);
