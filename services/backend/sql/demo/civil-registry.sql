-- The reference civil registry as a ministry might hold it in PostgreSQL:
-- what `jisr dev --postgres URL` loads from the synthetic citizens, and
-- what civil-registry.yaml maps to jisr.civilregistry.v1.CivilRegistry.
CREATE SCHEMA IF NOT EXISTS civil;
CREATE TABLE civil.person (
  eid           text PRIMARY KEY,
  sex           smallint NOT NULL,
  given_latin   text NOT NULL,
  family_latin  text NOT NULL,
  given_arabic  text NOT NULL,
  family_arabic text NOT NULL,
  birth_date    date,
  commune       text NOT NULL,
  province      text NOT NULL,
  deceased      boolean NOT NULL,
  death_date    date,
  marital       smallint NOT NULL,
  father_name   text NOT NULL,
  mother_name   text NOT NULL,
  household_id  text NOT NULL,
  relation      smallint NOT NULL
);
CREATE INDEX person_household ON civil.person (household_id);
CREATE TABLE civil.birth_act (
  eid               text PRIMARY KEY REFERENCES civil.person,
  act_number        text NOT NULL,
  registry_office   text NOT NULL,
  registration_year integer NOT NULL,
  marginal_notes    text[] NOT NULL
);
CREATE TABLE civil.jisr_meta (seed bigint NOT NULL, citizens integer NOT NULL, loaded_at timestamptz NOT NULL);
