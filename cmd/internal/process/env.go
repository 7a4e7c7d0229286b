package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/certs/svid"
)

// Env is what every subcommand shares: the global flags' values, the log,
// the federation file (loaded once) and the process's telemetry.
type Env struct {
	FederationPath string
	CertsDir       string
	DataDir        string
	NATSURL        string
	LogFormat      string
	Command        string // the subcommand run, for --log-format auto
	LogLevel       string

	OTLP        string
	TraceMemory int
	PprofAddr   string

	// TracesFrom: the tracing backend the console reads traces from
	// (--traces-from jaeger=URL; "" for the in-memory store only).
	TracesFrom string

	// audit is the audit's settings: flags of gateway, nats init and dev.
	Audit AuditFlags

	Log       *slog.Logger
	fed       *federation.Federation
	telemetry telemetryState
}

func EnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (g *Env) Init() error {
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

// Federation loads the federation file once.
func (g *Env) Federation() (*federation.Federation, error) {
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

// DescriptorSets are the descriptor sets the federation file names
// (descriptor_sets), read from the federation file's directory by Load.
func (g *Env) DescriptorSets() (map[string][]byte, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	return fed.Descriptors, nil
}

// Services are the services the federation file may name: those of its
// descriptor sets (checked against their digests). No ministry's schema is
// linked in for them, the reference ministries' included.
func (g *Env) Services() ([]protoreflect.ServiceDescriptor, map[string][]byte, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, nil, err
	}
	svcs, err := descset.Services(fed, fed.Descriptors, nil)
	return svcs, fed.Descriptors, err
}

// Keyer loads the federation's citizen key from the certs directory.
func (g *Env) Keyer() (*ckey.Keyer, error) {
	return ckey.Load(CitizenKeyPath(g.CertsDir))
}

func CitizenKeyPath(certsDir string) string { return filepath.Join(certsDir, "citizen.key") }

// Source opens the SVID source of one identity.
func (g *Env) Source(ctx context.Context, id spiffeid.ID) (svid.Source, error) {
	return svid.Open(ctx, g.CertsDir, id, g.Log)
}

// Connect dials NATS as an identity ("gateway", "consent", "auditor" or a member).
func (g *Env) Connect(ctx context.Context, identity string, opts ...nats.Option) (*nats.Conn, svid.Source, error) {
	return g.ConnectURL(ctx, g.NATSURL, identity, opts...)
}

// ConnectURL is Connect to the server(s) at url (a comma-separated list of
// a hub's nodes, or a ministry's own link to the hub).
func (g *Env) ConnectURL(ctx context.Context, url, identity string, opts ...nats.Option) (*nats.Conn, svid.Source, error) {
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
	nc, err := bus.Connect(ctx, bus.Config{URL: url, Identity: identity, Source: src, ServerID: fed.ID("nats")}, bus.WithLogger(g.Log), bus.WithNATSOptions(opts...))
	if err != nil {
		src.Close()
		if errors.Is(err, nats.ErrNoServers) { // nats.go's word for "every dial was refused"
			err = fmt.Errorf("%w at %s (is the federation running? `make run` (jisr dev) starts it on this machine and writes its endpoints to var/demo.json; deployed, `jisr nats-server`; another URL: --nats or `jisr context`)", err, g.NATSURL)
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
