//go:build postgres

package sql_test

import (
	"context"

	"github.com/jackc/pgx/v5"
)

func pgxConnect(ctx context.Context, url string) (*pgx.Conn, error) { return pgx.Connect(ctx, url) }
