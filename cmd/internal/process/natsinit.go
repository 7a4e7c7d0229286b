package process

import (
	"context"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// NATSInit connects as the operator and creates or checks every stream and
// bucket; out (when not nil) gets one line per stream or bucket.
func NATSInit(ctx context.Context, g *Env, out io.Writer) error {
	settings, err := g.Audit.Settings()
	if err != nil {
		return err
	}
	nc, src, err := g.Connect(ctx, subject.Operator, nats.MaxReconnects(0))
	if err != nil {
		return err
	}
	defer func() { nc.Close(); src.Close() }()
	rs, err := natsstate.Init(ctx, nc, settings.Stream)
	if err != nil {
		return err
	}
	for _, r := range rs {
		what := "ok"
		switch {
		case r.Created:
			what = "created"
		case r.Hardened:
			what = "hardened (deletes, purges and roll-ups taken away)"
		}
		kind := "stream"
		if r.Bucket != "" {
			kind = "bucket"
		}
		if out != nil {
			fmt.Fprintf(out, "%-7s %-18s %s\n", kind, r.Name(), what)
		}
	}
	if out == nil { // jisr dev: into its log instead
		natsstate.Log(g.Log, rs)
	}
	return nil
}
