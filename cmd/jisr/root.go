package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/certs/svid"
)

// globals are the flags every subcommand shares, loaded once.
type globals struct {
	FederationPath string
	CertsDir       string
	DataDir        string
	NATSURL        string
	LogFormat         string
	Command        string // the subcommand run, for --log-format auto
	LogLevel       string

	OTLP        string
	TraceMemory int
	PprofAddr   string

	// audit is the audit's settings: flags of gateway, nats init and dev.
	Audit AuditFlags

	Log       *slog.Logger
	fed       *federation.Federation
	telemetry telemetryState
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "jisr",
		Short: "jisr — the interoperability bus for public information systems",
		Long: `jisr lets public information systems answer each other's questions about a
citizen through one gateway that checks consent or another legal basis, applies
the access rules, releases only the agreed fields and audits every look.

Start here:
  jisr dev                 the whole federation on this machine, with demo data
  jisr certs init          a dev CA and an SVID for every identity of the federation
  jisr nats-config         the NATS server configuration derived from the federation file

Every part also runs on its own, as deployed:
  jisr nats-server | jisr gateway | jisr adapter --member M | jisr backend --member M`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.Command = cmd.Name()
			return g.Init()
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&g.FederationPath, "federation", EnvOr("JISR_FEDERATION", "deploy/federation.yaml"), "the federation file (env JISR_FEDERATION)")
	f.StringVar(&g.CertsDir, "certs", EnvOr("JISR_CERTS", "var/certs"), "directory of the dev CA, SVIDs and keys (env JISR_CERTS); ignored for SVIDs when SPIFFE_ENDPOINT_SOCKET is set")
	f.StringVar(&g.DataDir, "data", EnvOr("JISR_DATA", "var"), "directory for JetStream and backend stores (env JISR_DATA)")
	f.StringVar(&g.NATSURL, "nats", EnvOr("JISR_NATS", "tls://127.0.0.1:4222"), "NATS server URL, mTLS only (env JISR_NATS)")
	f.StringVar(&g.LogFormat, "log-format", EnvOr("JISR_LOG_FORMAT", "auto"), "log format: text, json, or auto (json for gateway, adapter, backend and nats-server; text for dev and the other commands) (env JISR_LOG_FORMAT)")
	f.StringVar(&g.LogLevel, "log-level", EnvOr("JISR_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env JISR_LOG_LEVEL)")
	f.StringVar(&g.OTLP, "otlp", os.Getenv("JISR_OTLP"), "export traces to this OTLP endpoint: host:port (gRPC; plaintext only on loopback, else TLS) or https://… (default: the OTEL_EXPORTER_OTLP_* variables; none: no export) (env JISR_OTLP)")
	f.IntVar(&g.TraceMemory, "trace-memory", 10000, "spans the gateway keeps in memory for GET /v1/traces/{id} (0: none)")
	f.StringVar(&g.PprofAddr, "pprof-addr", "", "serve Go profiles (/debug/pprof/) on this loopback address (profiling only)")
	_ = f.MarkHidden("pprof-addr")

	for _, c := range subcommands(g) {
		root.AddCommand(c)
	}
	return root
}

func EnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (g *globals) Init() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.LogLevel)); err != nil {
		return UsageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", g.LogLevel)}
	}
	hopts := &slog.HandlerOptions{Level: level}
	// Lines logged with a query's context carry its trace_id and span_id.
	switch LogFormatFor(g.LogFormat, g.Command) {
	case "text":
		g.Log = slog.New(telemetry.LogHandler(slog.NewTextHandler(os.Stderr, hopts)))
	case "json":
		g.Log = slog.New(telemetry.LogHandler(slog.NewJSONHandler(os.Stderr, hopts)))
	default:
		return UsageError{fmt.Errorf("--log-format %q: use text, json or auto", g.LogFormat)}
	}
	if g.PprofAddr != "" {
		return g.servePprof(g.PprofAddr)
	}
	return nil
}

// LogFormatFor resolves --log-format auto: JSON for the components that are
// deployed and whose logs are collected (gateway, adapter, backend,
// nats-server), text for jisr dev and the command-line tools a person reads.
func LogFormatFor(flag, command string) string {
	if flag != "auto" {
		return flag
	}
	switch command {
	case "gateway", "adapter", "backend", "nats-server":
		return "json"
	}
	return "text"
}

// federation loads the federation file once.
func (g *globals) Federation() (*federation.Federation, error) {
	if g.fed != nil {
		return g.fed, nil
	}
	fed, err := federation.Load(g.FederationPath)
	if err != nil {
		return nil, fmt.Errorf("%w (set --federation to the federation file)", err)
	}
	g.fed = fed
	return fed, nil
}

// keyer loads the federation's citizen key from the certs directory.
func (g *globals) Keyer() (*ckey.Keyer, error) {
	return ckey.Load(CitizenKeyPath(g.CertsDir))
}

func CitizenKeyPath(certsDir string) string { return filepath.Join(certsDir, "citizen.key") }

// source opens the SVID source of one identity.
func (g *globals) Source(ctx context.Context, id spiffeid.ID) (svid.Source, error) {
	return svid.Open(ctx, g.CertsDir, id, g.Log)
}

// connect dials NATS as an identity ("gateway", "consent", "auditor" or a member).
func (g *globals) Connect(ctx context.Context, identity string, opts ...nats.Option) (*nats.Conn, svid.Source, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, nil, err
	}
	id := fed.ID(identity)
	if m, err := fed.Member(identity); err == nil {
		id = m.ID
	}
	src, err := g.Source(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	nc, err := bus.Connect(ctx, g.NATSURL, identity, src, fed.ID("nats"), bus.WithLogger(g.Log), bus.WithNATSOptions(opts...))
	if err != nil {
		src.Close()
		if errors.Is(err, nats.ErrNoServers) { // nats.go's word for "every dial was refused"
			err = fmt.Errorf("%w (is the NATS server running? start it with `jisr nats-server` or `jisr dev`)", err)
		}
		return nil, nil, err
	}
	telemetry.RegisterConnection(g.Registry(), identity, nc)
	telemetry.RegisterSVIDExpiry(g.Registry(), identity, func() (time.Time, error) { return svid.ExpiresAt(src) })
	return nc, src, nil
}

// UntilDone waits for ctx to end (SIGINT or SIGTERM), then stops what runs,
// giving it timeout to drain.
func UntilDone(ctx context.Context, timeout time.Duration, stop func(context.Context) error) error {
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	return stop(sctx)
}

// subcommands builds jisr's subcommands, each with the shared globals.
// A new subcommand is added here.
func subcommands(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newDevCmd(g),
		newCertsCmd(g),
		newNATSConfigCmd(g),
		newNATSServerCmd(g),
		newNATSCmd(g),
		newGatewayCmd(g),
		newConsentCmd(g),
		newAdapterCmd(g),
		newBackendCmd(g),
		newAuditCmd(g),
		newBenchCmd(g),
	}
}
