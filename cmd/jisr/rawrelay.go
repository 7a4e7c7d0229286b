package main

import (
	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/cmd/internal/rawrelay"
)

// newRawRelayCmd is `make bench-ghz`'s independent baseline (mk/ghz.mk):
// ghz → front → relay → responder on a plain NATS server of its own, each
// role its own process, none of jisr's code on the way (cmd/internal/rawrelay).
func newRawRelayCmd() *cobra.Command {
	var url, listen string
	var size int
	cmd := &cobra.Command{
		Use:    "raw-relay",
		Short:  "The independent raw NATS two-hop baseline of make bench-ghz (plain NATS, no checks; one role per process)",
		Hidden: true,
	}
	role := func(use, short string, run func(c *cobra.Command) error) *cobra.Command {
		c := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs, RunE: func(c *cobra.Command, _ []string) error { return run(c) }}
		c.Flags().StringVar(&url, "url", "", "the plain NATS server's URL (from `jisr raw-relay nats`)")
		c.Flags().IntVar(&size, "size", 0, "reply size in bytes")
		return c
	}
	front := role("front", "Take CivilRegistry/GetPerson over gRPC on --listen and send each as a NATS request", func(c *cobra.Command) error {
		return rawrelay.Front(c.Context(), url, listen, c.OutOrStdout())
	})
	front.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "gRPC address (loopback)")
	var adapterAddr, backendAddr, eid, purpose, token string
	probe := role("probe", "Print the request and reply sizes of one GetPerson call through the consumer adapter and at the backend (JSON)", func(c *cobra.Command) error {
		return rawrelay.Probe(c.Context(), adapterAddr, backendAddr, eid, purpose, token, c.OutOrStdout())
	})
	probe.Flags().StringVar(&adapterAddr, "adapter", "", "the consumer adapter's gRPC address")
	probe.Flags().StringVar(&backendAddr, "backend", "", "the provider's backend gRPC address")
	probe.Flags().StringVar(&eid, "eid", "", "the citizen's eID")
	probe.Flags().StringVar(&purpose, "purpose", "", "jisr-purpose")
	probe.Flags().StringVar(&token, "token", "", "jisr-consent")
	cmd.AddCommand(
		role("nats", "Run a plain NATS server on a free loopback port; print its URL", func(c *cobra.Command) error {
			return rawrelay.NATS(c.Context(), c.OutOrStdout())
		}),
		role("relay", "Forward raw.q.> to raw.p.>; answer with a GetPersonResponse of --size bytes", func(c *cobra.Command) error {
			return rawrelay.Relay(c.Context(), url, size, c.OutOrStdout())
		}),
		role("responder", "Answer raw.p.> with a GetPersonResponse of --size bytes", func(c *cobra.Command) error {
			return rawrelay.Responder(c.Context(), url, size, c.OutOrStdout())
		}),
		front, probe,
	)
	return cmd
}
