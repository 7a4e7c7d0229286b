package process

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

	// A hub node (jisr nats-server --cluster-listen …): ServerName names it
	// (unique in the hub), ClusterListen is its route address, Routes the
	// route URLs of every node of the hub.
	ServerName    string
	ClusterListen string
	Routes        []string
	ClusterName   string
	Domain        string
}

// Clustered reports whether the options make a hub node.
func (o NATSOptions) Clustered() bool { return o.ClusterListen != "" || len(o.Routes) > 0 }

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
	var cluster *natsconf.Cluster
	if o.Clustered() {
		if o.ServerName == "" || o.ClusterListen == "" || len(o.Routes) == 0 {
			return natsconf.Config{}, UsageError{fmt.Errorf("a hub node needs --server-name, --cluster-listen and --routes")}
		}
		ch, cp, err := net.SplitHostPort(o.ClusterListen)
		if err != nil {
			return natsconf.Config{}, UsageError{fmt.Errorf("--cluster-listen %q: %w", o.ClusterListen, err)}
		}
		cport, err := strconv.Atoi(cp)
		if err != nil || cport <= 0 {
			return natsconf.Config{}, UsageError{fmt.Errorf("--cluster-listen %q: bad port", o.ClusterListen)}
		}
		cluster = &natsconf.Cluster{Name: o.ClusterName, Host: ch, Port: cport, Routes: o.Routes, Domain: o.Domain}
	}
	cfg := natsconf.Config{
		ServerName: o.ServerName, Cluster: cluster,
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

// HubNode is one rendered node of the hub.
type HubNode struct{ Name, Host, Text string }

// HubConfigs renders every node of a hub from specs (name=host): each
// listens for clients on --listen's port and for routes on clusterPort (on
// host when it is an address, else on every interface), and routes to
// every node.
func HubConfigs(g *Env, o NATSOptions, specs []string, clusterPort int) ([]HubNode, error) {
	_, clientPort, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, UsageError{fmt.Errorf("--listen %q: %w", o.Listen, err)}
	}
	var nodes []HubNode
	seen := map[string]bool{}
	var routes []string
	for _, sp := range specs {
		name, host, ok := strings.Cut(sp, "=")
		if !ok || name == "" || host == "" || seen[name] {
			return nil, UsageError{fmt.Errorf("--cluster %q: want distinct name=host entries", sp)}
		}
		seen[name] = true
		nodes = append(nodes, HubNode{Name: name, Host: host})
		routes = append(routes, "tls://"+net.JoinHostPort(host, strconv.Itoa(clusterPort)))
	}
	if len(nodes) < 3 {
		return nil, UsageError{fmt.Errorf("--cluster: a hub needs at least 3 nodes for R3 streams to survive losing one (got %d)", len(nodes))}
	}
	for i, n := range nodes {
		listen := "0.0.0.0"
		if net.ParseIP(n.Host) != nil {
			listen = n.Host
		}
		no := o
		no.ServerName, no.Routes = n.Name, routes
		no.Listen = net.JoinHostPort(listen, clientPort)
		no.ClusterListen = net.JoinHostPort(listen, strconv.Itoa(clusterPort))
		cfg, err := g.NATSConfig(no)
		if err != nil {
			return nil, err
		}
		if nodes[i].Text, err = natsconf.Render(cfg); err != nil {
			return nil, err
		}
	}
	return nodes, nil
}
