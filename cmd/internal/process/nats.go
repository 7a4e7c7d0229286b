package process

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
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
	cert, key := svid.Paths(g.CertsDir, fed.ID("nats"))
	return natsconf.Config{
		Federation: fed, Host: host, Port: port, HTTPPort: o.HTTPPort,
		CertFile: abs(cert), KeyFile: abs(key), CAFile: abs(svid.BundlePath(g.CertsDir)),
		StoreDir: abs(filepath.Join(g.DataDir, "jetstream")), SyncInterval: o.Sync,
		AuditAccount: o.AuditAccount,
	}, nil
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
	g.Log.Info("NATS listening", "url", s.ClientURL(), "config", s.ConfigPath())
	return s, nil
}
