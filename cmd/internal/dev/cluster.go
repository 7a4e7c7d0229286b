package dev

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// ClusterOptions are what `jisr dev --cluster N` adds to Options.
type ClusterOptions struct {
	// Nodes is the number of hub nodes (3); 0 runs the single-process dev.
	Nodes int
	// Gateways is the number of gateway replicas (default 2).
	Gateways int
	// Exe and Env run the children (default: this executable, this
	// environment).
	Exe string
	Env []string
	// Link, when it returns a URL for a member, is that member's own way to
	// the hub (a test puts a link it can cut there); default every node.
	Link func(member string) string
}

// HubNode is one NATS node of the hub, a `jisr nats-server` child process.
type HubNode struct {
	Name      string `json:"name"`
	ClientURL string `json:"url"`
	RouteURL  string `json:"route"`
	Monitor   string `json:"monitor"`
	Proc      *Proc  `json:"-"`
	PID       int    `json:"pid"`
}

// GatewayReplica is one gateway replica, a `jisr gateway` child process.
type GatewayReplica struct {
	Instance string `json:"instance"`
	HTTP     string `json:"http"`
	GRPC     string `json:"grpc"`
	Proc     *Proc  `json:"-"`
	PID      int    `json:"pid"`
}

// ClusterInfo is the hub's part of demo.json.
type ClusterInfo struct {
	Nodes    []*HubNode        `json:"nodes"`
	Gateways []*GatewayReplica `json:"gateways"`
	// NATSURL lists every node, as the members' adapters dial it.
	NATSURL string `json:"nats_url"`
	Logs    string `json:"logs"`
}

// Cluster is a running `jisr dev --cluster`: the hub's nodes and gateway
// replicas as child processes; the consent service, the backends, the
// adapters and the demo OpenID Provider in this process.
type Cluster struct {
	Info     ClusterInfo
	Consent  *process.ConsentNode
	Backends []*process.BackendNode
	Adapters []*process.AdapterNode
	fed      devFederation // the in-process parts, stopped as in Run
}

// freeAddr is a free loopback port (ports of children are chosen here and
// passed to them). It is drawn below Linux's ephemeral range (32768 and
// up by default): a node killed and restarted listens again on its own
// port, and a port from the ephemeral range may meanwhile have become the
// local end of some outgoing connection ("address already in use").
func freeAddr() (string, error) {
	for range 64 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		l.Close()
		return addr, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func addrAt(base, i int) string { return "127.0.0.1:" + strconv.Itoa(base+i) }

// StartCluster brings the hub up: three `jisr nats-server` nodes routed to
// each other, the streams and buckets created with three replicas, the
// consent service, the backends, the gateway replicas (`jisr gateway`
// processes) and the adapters. Stop it with Stop.
func StartCluster(ctx context.Context, g *process.Env, o Options) (c *Cluster, err error) {
	co := o.Cluster
	if co.Nodes < 3 {
		return nil, process.UsageError{Err: fmt.Errorf("--cluster %d: a hub has at least 3 nodes (R3 streams survive losing one)", co.Nodes)}
	}
	if o.NATS.AuditAccount {
		return nil, process.UsageError{Err: errors.New("--cluster with --audit-account is not supported yet: the hub keeps the audit streams in the federation's account")}
	}
	if co.Gateways == 0 {
		co.Gateways = 2
	}
	if co.Exe == "" {
		if co.Exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if co.Env == nil {
		co.Env = os.Environ()
	}
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	dir := abs(filepath.Join(g.DataDir, "cluster"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	c = &Cluster{Info: ClusterInfo{Logs: dir}}
	started := c
	defer func() {
		if err != nil { // stop what was started
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
			defer cancel()
			_ = started.Stop(sctx, g)
		}
	}()
	level := g.LogLevel
	if level == "" {
		level = "info"
	}
	common := []string{"--federation", abs(g.FederationPath), "--certs", abs(g.CertsDir), "--log-level", level}
	pick := func(base, i int) (string, error) {
		if o.AnyPort {
			return freeAddr()
		}
		return addrAt(base, i), nil
	}

	// The hub's nodes.
	var routes, urls []string
	for i := range co.Nodes {
		n := &HubNode{Name: fmt.Sprintf("n%d", i+1)}
		var client, route, mon string
		if client, err = pick(4222, i); err != nil {
			return nil, err
		}
		if route, err = pick(6222, i); err != nil {
			return nil, err
		}
		if mon, err = pick(8222, i); err != nil {
			return nil, err
		}
		n.ClientURL, n.RouteURL, n.Monitor = "tls://"+client, "tls://"+route, "http://"+mon
		routes, urls = append(routes, n.RouteURL), append(urls, n.ClientURL)
		_, monPort, _ := net.SplitHostPort(mon)
		n.Proc = &Proc{Name: n.Name, Exe: co.Exe, Env: co.Env, Log: filepath.Join(dir, n.Name+".log"),
			Args: append(append([]string{}, common...), "--data", filepath.Join(dir, n.Name), "nats-server",
				"--server-name", n.Name, "--listen", client, "--cluster-listen", route, "--monitor-port", monPort,
				"--sync", cmp.Or(o.NATS.Sync, "1s"), "--fast-failover")}
		c.Info.Nodes = append(c.Info.Nodes, n)
	}
	for _, n := range c.Info.Nodes {
		n.Proc.Args = append(n.Proc.Args, "--routes", strings.Join(routes, ","))
		if err := n.Proc.Start(); err != nil {
			return nil, err
		}
		n.PID = n.Proc.PID()
	}
	c.Info.NATSURL = strings.Join(urls, ",")
	g.NATSURL = c.Info.NATSURL
	for _, n := range c.Info.Nodes {
		if err := waitHTTP(ctx, n.Monitor+"/healthz", n.Proc, 60*time.Second); err != nil {
			return nil, fmt.Errorf("hub node %s: %w (log: %s)", n.Name, err, n.Proc.Log)
		}
	}
	// The operator creates every stream and bucket with three replicas, once
	// the nodes have elected a meta leader.
	g.Audit.Replicas = "3"
	if err := retry(ctx, 60*time.Second, func() error { return process.NATSInit(ctx, g, nil) }); err != nil {
		return nil, fmt.Errorf("nats init --replicas 3: %w", err)
	}
	g.Log.Info("hub up", "nodes", co.Nodes, "nats", c.Info.NATSURL)

	if err := c.fed.startBackends(ctx, g, fed, o); err != nil {
		return nil, err
	}
	c.Backends = c.fed.backends
	signin, err := c.fed.startIdP(g, o)
	if err != nil {
		return nil, err
	}
	if c.Consent, err = process.StartConsentService(ctx, g); err != nil {
		return nil, fmt.Errorf("consent service: %w", err)
	}
	c.fed.consent = c.Consent

	// The gateway replicas.
	for i := range co.Gateways {
		r := &GatewayReplica{Instance: fmt.Sprintf("gw-%d", i+1)}
		if r.HTTP, err = pick(8080, i); err != nil {
			return nil, err
		}
		if r.GRPC, err = pick(7000, 10*i); err != nil {
			return nil, err
		}
		args := append(append([]string{}, common...), "--data", filepath.Join(dir, r.Instance), "--nats", c.Info.NATSURL,
			"gateway", "--instance", r.Instance, "--http", r.HTTP, "--grpc", r.GRPC, "--audit-replicas", "3",
			"--oidc-issuer", signin.OIDCIssuer, "--oidc-client-id", signin.OIDCClientID)
		if o.DemoLogin {
			args = append(args, "--demo-login")
		}
		env := append(append([]string{}, co.Env...), "JISR_OIDC_CLIENT_SECRET="+signin.OIDCClientSecret)
		r.Proc = &Proc{Name: r.Instance, Exe: co.Exe, Env: env, Log: filepath.Join(dir, r.Instance+".log"), Args: args}
		c.fed.idp.AllowRedirect(process.RedirectURLFor(r.HTTP, false))
		if err := r.Proc.Start(); err != nil {
			return nil, err
		}
		r.PID = r.Proc.PID()
		c.Info.Gateways = append(c.Info.Gateways, r)
	}
	for _, r := range c.Info.Gateways {
		if err := waitHTTP(ctx, "http://"+r.HTTP+"/readyz", r.Proc, 60*time.Second); err != nil {
			return nil, fmt.Errorf("gateway %s: %w (log: %s)", r.Instance, err, r.Proc.Log)
		}
	}

	// The adapters, each over its member's own link when one is given.
	backendAddr := map[string]string{}
	for _, b := range c.Backends {
		backendAddr[b.Member] = b.Addr
	}
	for _, m := range fed.Members {
		ao := process.AdapterOptions{Member: m.Name, Backend: backendAddr[m.Name]}
		if o.AnyPort {
			ao.Listen = "127.0.0.1:0"
		}
		if co.Link != nil {
			ao.NATSURL = co.Link(m.Name)
		}
		a, err := process.StartAdapter(ctx, g, ao)
		if err != nil {
			return nil, err
		}
		c.fed.adapters = append(c.fed.adapters, a)
	}
	c.Adapters = c.fed.adapters
	return c, nil
}

// Stop stops the adapters, the gateway replicas, the consent service, the
// backends and the hub's nodes, in that order.
func (c *Cluster) Stop(ctx context.Context, g *process.Env) error {
	var errs []error
	for _, a := range c.fed.adapters {
		errs = append(errs, a.Stop(ctx))
	}
	c.fed.adapters = nil
	for _, r := range c.Info.Gateways {
		errs = append(errs, r.Proc.Stop(15*time.Second))
	}
	errs = append(errs, c.fed.stop(ctx, g))
	for _, n := range c.Info.Nodes {
		errs = append(errs, n.Proc.Stop(10*time.Second))
	}
	return errors.Join(errs...)
}

// Endpoints are where the cluster's parts listen (the first gateway
// replica stands for the gateway).
func (c *Cluster) Endpoints() Endpoints {
	gw := c.Info.Gateways[0]
	ep := Endpoints{NATS: c.Info.NATSURL, GatewayHTTP: "http://" + gw.HTTP, GatewayGRPC: gw.GRPC, OIDCIssuer: c.fed.idp.Issuer()}
	for _, a := range c.Adapters {
		ep.Adapters = append(ep.Adapters, Endpoint{Member: a.Member(), Addr: a.Addr()})
	}
	for _, b := range c.Backends {
		ep.Backends = append(ep.Backends, Endpoint{Member: b.Member, Addr: b.Addr})
	}
	return ep
}

// runCluster is `jisr dev --cluster N`.
func runCluster(ctx context.Context, g *process.Env, o Options, out io.Writer, fed *federation.Federation, start time.Time) (err error) {
	c, err := StartCluster(ctx, g, o)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 40*time.Second)
		defer cancel()
		if serr := c.Stop(sctx, g); serr != nil && err == nil {
			err = serr
		}
	}()
	keyer, err := g.Keyer()
	if err != nil {
		return err
	}
	ep := c.Endpoints()
	demo, err := Write(ctx, g.DataDir, fed, keyer, c.Consent.Service, ep, &c.Info)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nThe hub (kill -9 any one node or gateway replica; the rest carry on):\n")
	for _, n := range c.Info.Nodes {
		fmt.Fprintf(out, "  NATS node %-4s pid %-7d %s  routes %s  monitor %s\n", n.Name, n.PID, n.ClientURL, n.RouteURL, n.Monitor)
	}
	for _, r := range c.Info.Gateways {
		fmt.Fprintf(out, "  gateway %-6s pid %-7d http://%s  gRPC %s\n", r.Instance, r.PID, r.HTTP, r.GRPC)
	}
	fmt.Fprintf(out, "  logs               %s\n", c.Info.Logs)
	fmt.Fprintf(out, "  status             jisr status --nats %s --monitor %s\n", c.Info.NATSURL, monitors(c.Info.Nodes))
	Print(out, fed, ep, demo, time.Since(start))
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "\nshutting down…")
			return nil
		case <-time.After(time.Second):
		}
		for _, p := range append(nodeProcs(c.Info.Nodes), gatewayProcs(c.Info.Gateways)...) {
			if !p.Running() && !p.reported {
				p.reported = true
				g.Log.Warn("a child of the hub exited", "name", p.Name, "log", p.Log)
			}
		}
	}
}

func monitors(nodes []*HubNode) string {
	var ms []string
	for _, n := range nodes {
		ms = append(ms, n.Monitor)
	}
	return strings.Join(ms, ",")
}

func nodeProcs(ns []*HubNode) []*Proc {
	var out []*Proc
	for _, n := range ns {
		out = append(out, n.Proc)
	}
	return out
}

func gatewayProcs(rs []*GatewayReplica) []*Proc {
	var out []*Proc
	for _, r := range rs {
		out = append(out, r.Proc)
	}
	return out
}

// waitHTTP waits until url answers 200, or p exits, or timeout.
func waitHTTP(ctx context.Context, url string, p *Proc, timeout time.Duration) error {
	return retry(ctx, timeout, func() error {
		if !p.Running() {
			return errStop{fmt.Errorf("%s exited", p.Name)}
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

// errStop ends retry at once.
type errStop struct{ error }

// retry calls f until it succeeds, returns errStop, ctx ends or timeout
// passes; it returns f's last error.
func retry(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		var stop errStop
		if err == nil || errors.As(err, &stop) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
