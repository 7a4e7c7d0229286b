package sql_test

import (
	"errors"
	"strings"
	"testing"

	sqlbackend "github.com/jisr-bus/jisr/services/backend/sql"
	"github.com/jisr-bus/jisr/services/backend/sql/demo"
)

func TestParseConfigRefusesWhatCannotBeServed(t *testing.T) {
	const head = "member: m\nservice: a.v1.S\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", head + "methods: {M: {sql: x, columns: {a: b}}}\nextra: 1\n", "field extra not found"},
		{"no member", "service: a.v1.S\nmethods: {M: {sql: x, columns: {a: b}}}\n", "member is required"},
		{"no methods", head, "at least one method"},
		{"sql and predicate", head + "methods: {M: {sql: x, predicate: y, from: z}}\n", "exclude each other"},
		{"sql without columns", head + "methods: {M: {sql: x}}\n", "sql needs columns"},
		{"predicate without from", head + "methods: {M: {predicate: y}}\n", "predicate needs from"},
		{"bad duration", head + "database: {statement_timeout: soon}\nmethods: {M: {sql: x, columns: {a: b}}}\n", `invalid duration "soon"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sqlbackend.ParseConfig([]byte(tc.yaml))
			if !errors.Is(err, sqlbackend.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrConfig with %q", err, tc.want)
			}
		})
	}
}

func TestReferenceMappingParses(t *testing.T) {
	c, err := demo.CivilRegistry("host=/nowhere")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Methods) != 5 || c.Database.URL != "host=/nowhere" || c.Database.URLEnv != "" {
		t.Fatalf("%+v", c)
	}
}
