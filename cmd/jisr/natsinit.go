package main

import (
	"context"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

func newNATSCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nats",
		Short: "Manage the federation's JetStream state (as the operator)",
	}
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create, or check, every stream and bucket of the federation (as the operator)",
		Long: `Connect to --nats as the operator identity (spiffe://<td>/operator) and create
every JetStream stream and key-value bucket the federation keeps its state in:
the audit records (JISR_AUDIT) and checkpoints (JISR_CHECKPOINTS), and the
consent grants, revocations and use counters (jisr_consents, jisr_revocations,
jisr_usage). Each denies deletes and purges, allows no roll-up and no
per-message TTL, and refuses new messages when full.

Existing ones are checked. One that allows deletes, purges or roll-ups, or
drops old messages when full (a bucket made by an older jisr), has those
rights taken away — nothing stored is removed; one that cannot be made safe
(per-message TTLs, other subjects, storage or retention) is refused, named,
and left as it is. The gateway, the consent service and the auditor only
open them, and refuse to start until this has run. The audit retention comes
from the --audit-* flags (default: the JISR_AUDIT_* variables), as for the gateway.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return NATSInit(cmd.Context(), g, cmd.OutOrStdout())
		},
	}
	g.Audit.register(initCmd)
	cmd.AddCommand(initCmd)
	return cmd
}

// NATSInit connects as the operator and creates or checks every stream and
// bucket; out (when not nil) gets one line per stream or bucket.
func NATSInit(ctx context.Context, g *globals, out io.Writer) error {
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
