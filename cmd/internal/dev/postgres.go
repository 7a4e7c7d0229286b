package dev

import (
	"context"
	"fmt"
	"time"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/services/backend/sql/demo"
	"github.com/jisr-bus/jisr/services/demodata"
)

// civilRegistry is the member `jisr dev --postgres` serves from PostgreSQL.
const civilRegistry = "civil-registry"

// startPostgresCivilRegistry loads the synthetic civil registry into the
// database of o.Postgres (unless it already holds this population) and
// serves it with the SQL backend and the reference mapping.
func startPostgresCivilRegistry(ctx context.Context, g *process.Env, o Options, listen string) (*process.BackendNode, error) {
	begin := time.Now()
	if err := demo.Load(ctx, o.Postgres, o.Citizens, demodata.DefaultSeed); err != nil {
		return nil, fmt.Errorf("--postgres: loading the civil registry: %w", err)
	}
	g.Log.Info("civil registry loaded into PostgreSQL", "schema", "civil", "took", time.Since(begin).Round(time.Millisecond))
	cfg, err := demo.CivilRegistry(o.Postgres)
	if err != nil {
		return nil, err
	}
	return process.StartSQLBackend(ctx, g, process.SQLBackendOptions{Config: cfg, Listen: listen})
}
