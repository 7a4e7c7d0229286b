package main

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/spf13/cobra"
)

func newAdapterCmd(g *process.Env) *cobra.Command {
	var o process.AdapterOptions
	cmd := &cobra.Command{
		Use:   "adapter --member NAME",
		Short: "Run a member's adapter: its backend's gRPC door to the federation",
		Long: `Run the generic adapter of one member.

Consumer side: serves every federation service over gRPC on --listen. The
member's backend calls the method it wants from a peer (for example
jisr.civilregistry.v1.CivilRegistry/GetPerson) with metadata jisr-purpose and,
unless a mandate applies, jisr-consent (a consent token). The adapter sends the
call to the gateway over NATS with the member's SVID.

Provider side (members that provide a service): takes the gateway's requests
and calls the member's backend at --backend.

Plaintext gRPC is allowed only on loopback addresses (the sidecar case);
anywhere else both links use mTLS with the member's SVID.`,
		Example: `  jisr adapter --member cnss --listen 127.0.0.1:7003 --backend 127.0.0.1:7103
  grpcurl -plaintext 127.0.0.1:7003 list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Member == "" {
				return process.UsageError{Err: errors.New("--member is required")}
			}
			ctx := cmd.Context()
			var started atomic.Pointer[process.AdapterNode]
			stop, err := g.StartStandalone(ctx, "adapter", o.Member, o.HTTP, func(ctx context.Context) error {
				if n := started.Load(); n != nil {
					return n.Ready(ctx)
				}
				return errors.New("starting")
			})
			if err != nil {
				return err
			}
			defer stop()
			n, err := process.StartAdapter(ctx, g, o)
			if err != nil {
				return err
			}
			started.Store(n)
			return process.UntilDone(ctx, 10*time.Second, n.Stop)
		},
	}
	cmd.Flags().StringVar(&o.Member, "member", "", "the member this adapter serves (a name from the federation file)")
	cmd.Flags().StringVar(&o.Listen, "listen", "", "consumer-side gRPC listen address (default: the member's dev port, 127.0.0.1:700N)")
	cmd.Flags().StringVar(&o.HTTP, "http", "", "HTTP listen address for /metrics, /healthz and /readyz (NATS connected, backend SERVING over gRPC health) (default: none)")
	cmd.Flags().StringVar(&o.Backend, "backend", "", "provider-side backend gRPC address (default: the member's dev backend port, 127.0.0.1:710N)")
	cmd.Flags().IntVar(&o.NATSConns, "nats-conns", 0, "NATS connections the adapter uses (0: one per 4 cores, from 1 to 4): queries are spread over them, life events too (by citizen), provider requests taken on each")
	cmd.Flags().StringVar(&o.EventSink, "event-sink", "", "the backend's jisr.events.v1.EventSink address, when an event rule delivers to the member (default: the backend's address; off: none)")
	cmd.Flags().DurationVar(&o.EventAckWait, "event-ack-wait", 30*time.Second, "how long an event delivered to the backend may stay unacknowledged before it is delivered again (after a crash)")
	cmd.Flags().IntVar(&o.EventInFlight, "event-in-flight", 0, "events delivered to the backend at once, at most one per citizen, in order for each (0: 64); one delivering adapter per member, else 1")
	cmd.Flags().StringVar(&o.GovernancePub, "governance-pub", "", "the governance public key that verifies the signed federation versions the adapter applies without a restart (default <certs>/governance/governance.pub); the bucket jisr_federation must exist (jisr nats init)")
	return cmd
}
