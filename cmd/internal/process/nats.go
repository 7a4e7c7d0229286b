package process

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/certs/svid"
)

type NATSOptions struct {
	Listen   string
	HTTPPort int
	Sync     string
	Trace    bool
	// AuditAccount puts the audit streams in their own account (see
	// natsconf.Config.AuditAccount and docs/audit.md).
	AuditAccount bool
}

func (g *Env) NATSConfig(o NATSOptions) (natsconf.Config, error) {
	fed, err := g.Federation()
	if err != nil {
		return natsconf.Config{}, err
	}
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return natsconf.Config{}, UsageError{fmt.Errorf("--listen %q: %w", o.Listen, err)}
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return natsconf.Config{}, UsageError{fmt.Errorf("--listen %q: bad port", o.Listen)}
	}
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	cfg := natsconf.Config{
		Federation: fed, Host: host, Port: port, HTTPPort: o.HTTPPort,
		StoreDir: abs(filepath.Join(g.DataDir, "jetstream")), SyncInterval: o.Sync,
		AuditAccount: o.AuditAccount,
	}
	if os.Getenv(svid.EndpointSocketEnv) != "" {
		// SPIRE: the server's SVID and bundle come from the Workload API
		// (StartNATS), so the configuration names no files.
		cfg.WorkloadAPI = true
		return cfg, nil
	}
	cert, key := svid.Paths(g.CertsDir, fed.ID("nats"))
	cfg.CertFile, cfg.KeyFile, cfg.CAFile = abs(cert), abs(key), abs(svid.BundlePath(g.CertsDir))
	return cfg, nil
}

func StartNATS(ctx context.Context, g *Env, o NATSOptions) (*natsserver.Server, error) {
	cfg, err := g.NATSConfig(o)
	if err != nil {
		return nil, err
	}
	src, err := g.Source(ctx, cfg.Federation.ID("nats"))
	if err != nil {
		return nil, err
	}
	opts := []natsserver.Option{natsserver.OnShutdown(func() { _ = src.Close() })}
	if o.Trace {
		opts = append(opts, natsserver.WithProtocolTrace())
	}
	s, err := natsserver.Start(ctx, cfg, src, g.Log, opts...)
	if err != nil {
		src.Close()
		return nil, err
	}
	// The server's own SVID: jisr_svid_expiry_timestamp_seconds{identity="nats"}.
	telemetry.RegisterSVIDExpiry(g.Registry(), "nats", func() (time.Time, error) { return svid.ExpiresAt(src) })
	g.Log.Info("NATS listening", "url", s.ClientURL(), "config", s.ConfigPath())
	return s, nil
}
