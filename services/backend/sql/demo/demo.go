// Package demo is the reference civil registry in PostgreSQL: its schema
// (civil-registry.sql), its mapping for `jisr backend sql`
// (civil-registry.yaml) and the loading of the synthetic citizens
// (services/demodata) into it, for `jisr dev --postgres URL` and the tests.
//
// Invariant: Load leaves the database holding exactly the population asked
// for, or fails; it never mixes two populations.
package demo

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	sqlbackend "github.com/jisr-bus/jisr/services/backend/sql"
	"github.com/jisr-bus/jisr/services/demodata"
)

// Schema creates the civil registry's tables in the schema "civil".
//
//go:embed civil-registry.sql
var Schema string

// Mapping is the mapping file of the civil registry.
//
//go:embed civil-registry.yaml
var Mapping []byte

// CivilRegistry returns the civil registry's mapping, on the database at url.
func CivilRegistry(url string) (*sqlbackend.Config, error) {
	c, err := sqlbackend.ParseConfig(Mapping)
	if err != nil {
		return nil, err
	}
	c.Database.URL, c.Database.URLEnv = url, ""
	return c, nil
}

// Load writes the civil registry of the synthetic population (citizens,
// rounded up to blocks of four, from seed) into the database at url, in one
// transaction; it does nothing when the database already holds it, and
// replaces another population.
func Load(ctx context.Context, url string, citizens int, seed uint64) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("civil registry database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	n := demodata.Population(citizens)
	var have int
	var haveSeed int64
	err = conn.QueryRow(ctx, "SELECT citizens, seed FROM civil.jisr_meta").Scan(&have, &haveSeed)
	if err == nil && have == n && uint64(haveSeed) == seed {
		return nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS civil CASCADE"); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, Schema); err != nil {
		return fmt.Errorf("civil registry schema: %w", err)
	}
	var people, acts [][]any
	for b := 0; b < demodata.Blocks(n); b++ {
		blk := demodata.Block(seed, b)
		for _, c := range blk {
			people = append(people, []any{c.EID, int16(c.Sex), c.GivenLatin, c.FamilyLatin, c.GivenArabic, c.FamilyArabic,
				date(c.Birth), c.Commune, c.Province, c.Deceased, date(c.Death), int16(c.Marital),
				c.FatherName, c.MotherName, c.Household, int16(c.Relation)})
			acts = append(acts, []any{c.EID, c.ActNumber, c.RegistryOffice, int32(c.RegistrationYear), notes(&c)})
		}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"civil", "person"}, []string{"eid", "sex", "given_latin", "family_latin",
		"given_arabic", "family_arabic", "birth_date", "commune", "province", "deceased", "death_date", "marital",
		"father_name", "mother_name", "household_id", "relation"}, pgx.CopyFromRows(people)); err != nil {
		return fmt.Errorf("civil registry people: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"civil", "birth_act"}, []string{"eid", "act_number", "registry_office",
		"registration_year", "marginal_notes"}, pgx.CopyFromRows(acts)); err != nil {
		return fmt.Errorf("civil registry birth acts: %w", err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO civil.jisr_meta VALUES ($1, $2, now())", int64(seed), n); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// notes are the birth act's marginal notes, as the reference backend
// writes them.
func notes(c *demodata.Citizen) []string {
	out := []string{}
	if c.Marital != demodata.Single {
		out = append(out, "Mariage inscrit en marge")
	}
	if c.Marital == demodata.Divorced {
		out = append(out, "Divorce inscrit en marge")
	}
	if c.Deceased {
		out = append(out, "Décès le "+c.Death.String())
	}
	return out
}

func date(d demodata.Date) any {
	if d.Y == 0 {
		return nil
	}
	return time.Date(d.Y, time.Month(d.M), d.D, 0, 0, 0, 0, time.UTC)
}
