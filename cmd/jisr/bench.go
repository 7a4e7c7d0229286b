package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/cmd/internal/bench"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/consent"
)

const benchLong = `Start a federation from scratch in a temporary directory — 'jisr certs init',
then NATS, gateway, consumer adapter (cnss), provider adapter and reference
backend (civil registry), each as its own process, as deployed — and drive
real gRPC calls (CivilRegistry/GetPerson with a consent token) through the
consumer adapter.

In the same run it measures a raw two-hop baseline over the same NATS, mTLS,
identities and payload sizes (client as cnss → relay as the gateway →
responder as civil-registry, no checks) — at every load, and at 128 callers
again in rounds alternating with the full path, which the ratio target is
judged on —, the cost of each safeguard (consent, audit, minimisation
switched off in turn, against a control in alternating rounds, at full load
and again with both paced to one offered rate), 10,000 vs 1,000,000
citizens (alternating rounds), two gateway replicas, revocation lag on each replica, the start-up time and
memory of 'jisr dev'. CPU per query is read from /proc for every process,
heap allocations per query from each process's pprof endpoint. With
--scaling (the default) it measures the full path and the baseline again
with every component but NATS limited to 1, 2, 4, … cores (GOMAXPROCS) and
writes the curve.

The report (Markdown, JSON and an SVG chart of throughput and p99 against
concurrency) goes to --out as latest.* and a dated copy, with the targets,
whether each is met and notes on what limits those that are not; a CPU
profile of every component under the heaviest load is saved beside it.`

func newBenchCmd(g *process.Env) *cobra.Command {
	var (
		out                string
		duration, warmup   time.Duration
		concurrency        []int
		large, revocations int
		profile, quick     bool
		scaling            bool
		natsConns          int
		keep, eventsOnly   bool
		safeguardsOnly     []string
		compare            string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the full query path against the transport's own limit, and write the report",
		Long:  benchLong,
		Example: `  make bench
  jisr bench --duration 10s --concurrency 1,16,128,512
  jisr bench --quick       # a smoke run of a few seconds
  jisr bench --quick --scaling --large 0   # the scaling curve, quickly
  jisr bench --concurrency 1,16,128,512 --compare bench/results/latest.json --out /tmp/b16   # on a bigger machine, against this one
  jisr bench --safeguards-only audit --concurrency 128 --out /tmp/b   # only the audit's cost`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			opts := []bench.Option{bench.WithDuration(duration), bench.WithWarmup(warmup), bench.WithConcurrency(concurrency...),
				bench.WithLarge(large), bench.WithRevocations(revocations), bench.WithProfile(profile), bench.WithKeep(keep), bench.WithEventsOnly(eventsOnly),
				bench.WithStdout(cmd.OutOrStdout()), bench.WithProgress(cmd.ErrOrStderr()), bench.WithNATSConns(natsConns)}
			if len(safeguardsOnly) > 0 {
				opts = append(opts, bench.WithSafeguardsOnly(safeguardsOnly...))
			}
			if scaling {
				opts = append(opts, bench.WithScaling(bench.ScalingSteps(runtime.NumCPU())...))
			}
			if compare != "" {
				opt, err := bench.WithCompare(compare)
				if err != nil {
					return process.UsageError{Err: fmt.Errorf("--compare: %w", err)}
				}
				opts = append(opts, opt)
			}
			if quick {
				opts = append(opts, bench.Quick())
				if cmd.Flags().Changed("scaling") && scaling {
					opts = append(opts, bench.WithScaling(bench.ScalingSteps(runtime.NumCPU())...))
				}
			}
			cfg := bench.Config{Exe: exe, Federation: g.FederationPath, Out: out, Clients: benchClientsOf}
			return bench.Run(cmd.Context(), cfg, opts...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "bench/results", "directory for the report (latest.md, latest.json, latest.svg and dated copies)")
	f.DurationVar(&duration, "duration", 3*time.Second, "measured time of each scenario")
	f.DurationVar(&warmup, "warmup", 700*time.Millisecond, "unmeasured warm-up before each scenario")
	f.IntSliceVar(&concurrency, "concurrency", []int{1, 16, 128, 512}, "concurrent callers of the full path and of the baseline (the safeguards, replicas, scaling and profiles at the last; the life events, and both ratio targets, at 128 where it is listed)")
	f.IntVar(&large, "large", 1000000, "citizens of the large-population run (0: skip it)")
	f.IntVar(&revocations, "revocations", 20, "revocations timed on two gateway replicas")
	f.BoolVar(&profile, "profile", true, "save a CPU profile of every component under the heaviest load")
	f.BoolVar(&quick, "quick", false, "a smoke run: short scenarios, a 20,000-citizen \"large\" population, no profile")
	f.BoolVar(&scaling, "scaling", true, "measure the full path and the baseline with each component limited to 1, 2, 4, … cores (GOMAXPROCS); with --quick only when given")
	f.StringVar(&compare, "compare", "", "the latest.json of a run on a smaller machine: adds the target that the full path at the heaviest load is at least 5× that run's")
	f.IntVar(&natsConns, "nats-conns", 0, "start the gateway and the adapters with --nats-conns N (0: their default)")
	f.BoolVar(&eventsOnly, "events-only", false, "measure only the full path and the life events beside it (no safeguards, scaling, baseline or start-up)")
	f.StringSliceVar(&safeguardsOnly, "safeguards-only", nil, "measure only the cost of these safeguards (consent, audit, minimise: with and without each, alternating rounds, at the last --concurrency, then again with both sides paced to 70% of the control's throughput), nothing else; with --profile, the first round with and without each are profiled as <safeguard>-{on,off}-<component>-*.pprof")
	f.BoolVar(&keep, "keep", false, "keep the temporary directory (logs of every process)")
	cmd.AddCommand(newBenchRelayCmd(g), newBenchResponderCmd(g))
	return cmd
}

// benchClients are the bench harness's clients of the federation it
// started: the process.Env of that federation, made as for any other command.
type benchClients struct{ g *process.Env }

func benchClientsOf(env bench.Env) bench.Clients {
	return benchClients{&process.Env{FederationPath: env.Federation, CertsDir: env.Certs, DataDir: env.Data,
		NATSURL: env.NATS, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
}

func (c benchClients) Federation() (*federation.Federation, error) { return c.g.Federation() }
func (c benchClients) Keyer() (*ckey.Keyer, error)                 { return c.g.Keyer() }

func (c benchClients) Connect(ctx context.Context, identity string) (*nats.Conn, io.Closer, error) {
	return c.g.Connect(ctx, identity)
}

func (c benchClients) ConsentService(ctx context.Context) (*consent.Service, func(), error) {
	return c.g.ConsentService(ctx, false)
}

func newBenchRelayCmd(g *process.Env) *cobra.Command {
	var size int
	cmd := &cobra.Command{
		Use:    "relay",
		Short:  "Baseline relay: forwards every query to its provider, no checks (as the gateway identity); replies --size bytes, as the gateway's trimmed reply",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchServe(cmd.Context(), g, "gateway", func(ctx context.Context, nc *nats.Conn) error {
				return bench.Relay(ctx, nc, size, g.Log)
			})
		},
	}
	cmd.Flags().IntVar(&size, "size", -1, "reply payload size in bytes (-1: as the responder sent it)")
	return cmd
}

func newBenchResponderCmd(g *process.Env) *cobra.Command {
	var member string
	var size int
	cmd := &cobra.Command{
		Use:    "responder",
		Short:  "Baseline responder: answers every provider query with a fixed payload (as a member)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchServe(cmd.Context(), g, member, func(ctx context.Context, nc *nats.Conn) error {
				return bench.Responder(ctx, nc, member, size, g.Log)
			})
		},
	}
	cmd.Flags().StringVar(&member, "member", "civil-registry", "the provider member whose identity answers")
	cmd.Flags().IntVar(&size, "size", 200, "reply payload size in bytes")
	return cmd
}

// benchServe connects to NATS as identity and runs serve on the connection.
func benchServe(ctx context.Context, g *process.Env, identity string, serve func(context.Context, *nats.Conn) error) error {
	nc, src, err := g.Connect(ctx, identity)
	if err != nil {
		return err
	}
	defer func() { nc.Close(); src.Close() }()
	return serve(ctx, nc)
}
