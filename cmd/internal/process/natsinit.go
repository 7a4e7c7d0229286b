package process

import (
	"context"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// NATSInit connects as the operator and creates or checks every stream and
// bucket; out (when not nil) gets one line per stream or bucket.
func NATSInit(ctx context.Context, g *Env, out io.Writer) error {
	return NATSInitWith(ctx, g, out, false)
}

// NATSInitWith is NATSInit; with auditAccount (a server rendered with
// --audit-account) the audit streams are created in the AUDIT account by
// its operator, spiffe://<td>/audit-operator, whose SVID must be in the
// certs directory; the operator creates the buckets in FED.
func NATSInitWith(ctx context.Context, g *Env, out io.Writer, auditAccount bool) error {
	settings, err := g.Audit.Settings()
	if err != nil {
		return err
	}
	nc, src, err := g.Connect(ctx, subject.Operator, nats.MaxReconnects(0))
	if err != nil {
		return err
	}
	defer func() { nc.Close(); src.Close() }()
	var rs []natsstate.Result
	if auditAccount {
		anc, asrc, err := g.Connect(ctx, natsconf.AuditOperator, nats.MaxReconnects(0))
		if err != nil {
			return err
		}
		defer func() { anc.Close(); asrc.Close() }()
		rs, err = natsstate.InitSplit(ctx, nc, anc, settings.Stream)
	} else {
		rs, err = natsstate.Init(ctx, nc, settings.Stream)
	}
	if err != nil {
		return err
	}
	// The life events' streams (docs/events.md), in the federation's account.
	fed, err := g.Federation()
	if err != nil {
		return err
	}
	ers, err := natsstate.InitSpecs(ctx, nc, natsstate.EventSpecs(fed, settings.Stream.Replicas))
	rs = append(rs, ers...)
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
		if r.Replicated {
			what += fmt.Sprintf(", replicas raised to %d", r.Config.Replicas)
		}
		kind := "stream"
		if r.Bucket != "" {
			kind = "bucket"
		}
		if out != nil {
			fmt.Fprintf(out, "%-7s %-18s R%d %s\n", kind, r.Name(), max(r.Config.Replicas, 1), what)
		}
	}
	if out == nil { // jisr dev: into its log instead
		natsstate.Log(g.Log, rs)
	}
	return nil
}
