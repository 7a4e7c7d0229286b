package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/certs/svid"
)

type NATSOptions struct {
	Listen   string
	HTTPPort int
	Sync     string
	Trace    bool
}

func (o *NATSOptions) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.Listen, "listen", "127.0.0.1:4222", "client listen address")
	cmd.Flags().IntVar(&o.HTTPPort, "monitor-port", 0, "NATS monitoring HTTP port (0: off)")
	cmd.Flags().StringVar(&o.Sync, "sync", "1s", `JetStream fsync interval, or "always" (see docs/audit.md)`)
	cmd.Flags().BoolVar(&o.Trace, "trace", false, "log the subject of every publish and delivery at debug level (payloads cut to one byte; needs --log-level debug)")
}

func (g *globals) NATSConfig(o NATSOptions) (natsconf.Config, error) {
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
	}, nil
}

func newNATSConfigCmd(g *globals) *cobra.Command {
	var o NATSOptions
	cmd := &cobra.Command{
		Use:   "nats-config",
		Short: "Print the NATS server configuration derived from the federation file",
		Long: `Print the configuration of a standalone nats-server for this federation: mTLS
with verify_and_map on the SPIFFE URI SAN, one user per SPIFFE ID, and
allow-list permissions derived from the federation file (anything not listed is
denied). It is the exact text the embedded server of jisr dev runs.

The embedded server (jisr dev, jisr nats-server) also closes each client's
connection when its SVID expires, and takes a rotated trust bundle at the next
handshake. A stock nats-server run with this file checks a certificate only when
the client connects: an SVID that expires later keeps its connection open.`,
		Example: `  jisr nats-config > nats.conf && nats-server -c nats.conf`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.NATSConfig(o)
			if err != nil {
				return err
			}
			text, err := natsconf.Render(cfg)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), text)
			return err
		},
	}
	o.flags(cmd)
	return cmd
}

func newNATSServerCmd(g *globals) *cobra.Command {
	var o NATSOptions
	cmd := &cobra.Command{
		Use:   "nats-server",
		Short: "Run the federation's NATS server (embedded nats-server, JetStream under --data)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := StartNATS(cmd.Context(), g, o)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			g.Log.Info("shutting down NATS")
			s.Shutdown()
			return nil
		},
	}
	o.flags(cmd)
	return cmd
}

func StartNATS(ctx context.Context, g *globals, o NATSOptions) (*natsserver.Server, error) {
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
