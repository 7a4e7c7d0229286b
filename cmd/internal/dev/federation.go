package dev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/citizen/devidp"
	"github.com/jisr-bus/jisr/gateway/console"
)

// Options are the flags of `jisr dev`.
type Options struct {
	Citizens int
	HTTPAddr string
	GRPCAddr string
	// ConsoleAddr is the auditor's console ("" for none).
	ConsoleAddr string
	NATS        process.NATSOptions
	// IdPAddr is the embedded demo OpenID Provider's loopback address.
	IdPAddr string
	// DemoLogin turns on sign-in by eID alone (loopback only).
	DemoLogin bool
	// ConsoleOIDC also lets the demo provider's auditor (DemoAuditor, with
	// the role "auditor") sign in to the console by OIDC.
	ConsoleOIDC bool
	// AgentEIDs are counter agents' eIDs: the embedded provider lets them
	// sign in, and the gateway treats them as counter agents.
	AgentEIDs []string
	// SignInEIDs are more eIDs the embedded provider lets sign in, beside
	// the showcase citizens (tests of assisted access: a family's members).
	SignInEIDs []string
	// AnyPort binds every listener to 127.0.0.1:0 (tests run several
	// federations side by side).
	AnyPort bool
	// Backends replaces members' reference backends with the caller's own
	// (member → gRPC address; `jisr dev --backend cnss=127.0.0.1:9000`): no
	// reference backend is started for them, and their adapters call these.
	Backends map[string]string
	// Postgres, when set, is a PostgreSQL database: the civil registry is
	// loaded into it (schema civil) and served by the SQL backend with its
	// reference mapping instead of the SQLite reference backend.
	Postgres string
	// Cluster runs the hub instead: NATS nodes and gateway replicas as
	// processes of their own (jisr dev --cluster 3).
	Cluster ClusterOptions
}

// checkBackends refuses a --backend for a member that is not in the
// federation file or provides no service.
func checkBackends(fed *federation.Federation, backends map[string]string) error {
	for member, addr := range backends {
		m, err := fed.Member(member)
		if err != nil {
			return process.UsageError{Err: fmt.Errorf("--backend %s=%s: no member %q in the federation file", member, addr, member)}
		}
		if len(m.Provides) == 0 {
			return process.UsageError{Err: fmt.Errorf("--backend %s=%s: member %s provides no service, so it has no backend to replace", member, addr, member)}
		}
		if addr == "" {
			return process.UsageError{Err: fmt.Errorf("--backend %s=: give the backend's gRPC address, e.g. %s=127.0.0.1:9000", member, member)}
		}
	}
	return nil
}

// devFederation is a running dev federation, stopped in reverse order.
type devFederation struct {
	idp         *devidp.Provider
	consoleOIDC bool // the console takes the OIDC sign-in too
	NATS        *natsserver.Server
	backends    []*process.BackendNode
	gateway     *process.GatewayNode
	consent     *process.ConsentNode // the consent service, apart from the gateway: it alone holds the signing key
	adapters    []*process.AdapterNode
	external    map[string]string // members' own backends (--backend)
	// stopWatch ends the NATS server's watch of the federation versions.
	stopWatch func()
}

// Run starts the whole federation in one process (certificates, NATS and
// its streams, backends, the demo OpenID Provider, the gateway, the consent
// service, adapters), writes <data>/demo.json, prints where everything is,
// and stops it all in reverse order when ctx ends.
func Run(ctx context.Context, g *process.Env, o Options, out io.Writer) (err error) {
	start := time.Now()
	fed, err := g.Federation()
	if err != nil {
		return err
	}
	res, err := process.InitCerts(g, fed)
	if err != nil {
		return err
	}
	g.Log.Info("certificates", "dir", g.CertsDir, "summary", res)
	stopTelemetry, err := g.StartTelemetry(ctx, "dev", true)
	g.PerComponentTracing() // jisr-gateway, jisr-adapter-cnss, … (docs/observability.md)
	if err != nil {
		return err
	}
	defer stopTelemetry()

	if o.AnyPort {
		o.NATS.Listen, o.HTTPAddr, o.GRPCAddr, o.IdPAddr = "127.0.0.1:-1", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		if o.ConsoleAddr != "" {
			o.ConsoleAddr = "127.0.0.1:0"
		}
	}
	if o.Cluster.Nodes > 0 {
		return runCluster(ctx, g, o, out, fed, start)
	}
	d := &devFederation{}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		if serr := d.stop(sctx, g); serr != nil && err == nil {
			err = serr
		}
	}()
	if err := d.startNATS(ctx, g, o); err != nil {
		return err
	}

	if err := checkBackends(fed, o.Backends); err != nil {
		return err
	}
	if err := d.watchFederation(ctx, g); err != nil {
		return err
	}
	if err := d.startBackends(ctx, g, fed, o); err != nil {
		return err
	}
	signin, err := d.startIdP(g, o)
	if err != nil {
		return err
	}
	gwo := process.GatewayOptions{HTTPAddr: o.HTTPAddr, GRPCAddr: o.GRPCAddr, ConsoleAddr: o.ConsoleAddr, Instance: "gw-1", SignIn: signin}
	if o.ConsoleOIDC {
		d.consoleOIDC = true
		gwo.ConsoleSignIn = process.ConsoleSignInOptions{Issuer: d.idp.Issuer(), ClientID: d.idp.ClientID(),
			ClientSecret: signin.OIDCClientSecret, AllowRedirect: d.idp.AllowRedirect}
	}
	// The consent service's audit log key, before the gateway loads the
	// logs' public keys (its access log indexes that log too).
	if _, err := process.EnsureAuditKey(g.CertsDir, fed, subject.ConsentAuditLog); err != nil {
		return err
	}
	if d.gateway, err = process.StartGateway(ctx, g, gwo); err != nil {
		return err
	}
	d.idp.AllowRedirect(process.RedirectURLFor(d.gateway.Addr(), d.gateway.Secure()))
	if d.consent, err = process.StartConsentService(ctx, g); err != nil {
		return fmt.Errorf("consent service: %w", err)
	}
	if err := d.startAdapters(ctx, g, fed, o); err != nil {
		return err
	}
	if err := d.seedEvents(ctx); err != nil {
		return err
	}
	if err := d.writeDemo(ctx, g, fed, out, start); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(out, "\nshutting down…")
	return nil
}

// startNATS starts the NATS server, and creates the streams and buckets
// as the operator: every other part only opens them.
func (d *devFederation) startNATS(ctx context.Context, g *process.Env, o Options) (err error) {
	if d.NATS, err = process.StartNATS(ctx, g, o.NATS); err != nil {
		return err
	}
	g.NATSURL = d.NATS.ClientURL()
	return process.NATSInit(ctx, g, nil)
}

// startBackends starts the reference backend of every member that
// provides a service.
func (d *devFederation) startBackends(ctx context.Context, g *process.Env, fed *federation.Federation, o Options) error {
	for _, m := range fed.Members {
		if len(m.Provides) == 0 || o.Backends[m.Name] != "" {
			continue
		}
		bo := process.BackendOptions{Member: m.Name, Citizens: o.Citizens}
		if o.AnyPort {
			bo.Listen = "127.0.0.1:0"
		}
		var b *process.BackendNode
		var err error
		if m.Name == civilRegistry && o.Postgres != "" {
			b, err = startPostgresCivilRegistry(ctx, g, o, bo.Listen)
		} else {
			b, err = process.StartBackend(ctx, g, bo)
		}
		if err != nil {
			return err
		}
		d.backends = append(d.backends, b)
	}
	return nil
}

// startAdapters starts every member's adapter, in front of its backend.
func (d *devFederation) startAdapters(ctx context.Context, g *process.Env, fed *federation.Federation, o Options) error {
	backendAddr := map[string]string{}
	for _, b := range d.backends {
		backendAddr[b.Member] = b.Addr
	}
	for member, addr := range o.Backends {
		backendAddr[member] = addr
	}
	d.external = o.Backends
	for _, m := range fed.Members {
		ao := process.AdapterOptions{Member: m.Name, Backend: backendAddr[m.Name]}
		if o.AnyPort {
			ao.Listen = "127.0.0.1:0"
		}
		a, err := process.StartAdapter(ctx, g, ao)
		if err != nil {
			return err
		}
		d.adapters = append(d.adapters, a)
		for _, b := range d.backends {
			if b.Member == m.Name && len(m.Publishes) > 0 { // its life events go through this adapter
				if err := b.PublishEventsThrough(a.Addr()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// stop shuts down in reverse order of dependency: adapters stop taking
// calls, the gateway finishes and audits what is in flight, backends stop,
// and NATS goes last.
func (d *devFederation) stop(ctx context.Context, g *process.Env) error {
	var errs []error
	for _, a := range d.adapters {
		errs = append(errs, a.Stop(ctx))
	}
	if d.gateway != nil {
		errs = append(errs, d.gateway.Stop(ctx))
	}
	if d.consent != nil {
		d.consent.Stop()
	}
	for _, b := range d.backends {
		errs = append(errs, b.Stop(ctx))
	}
	if d.stopWatch != nil {
		d.stopWatch()
	}
	if d.NATS != nil {
		d.NATS.Shutdown()
	}
	if d.idp != nil {
		errs = append(errs, d.idp.Close(ctx))
	}
	return errors.Join(errs...)
}

// DemoAuditor is the demo provider's user with the auditor's role.
const DemoAuditor = "auditor"

// startIdP starts the embedded demo OpenID Provider for the demo citizens
// and returns the gateway's sign-in options for it.
func (d *devFederation) startIdP(g *process.Env, o Options) (process.SignInOptions, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return process.SignInOptions{}, err
	}
	var citizens []devidp.Citizen
	for _, c := range Showcase() {
		citizens = append(citizens, devidp.Citizen{EID: c.EID, Description: c.Description})
	}
	citizens = append(citizens, devidp.Citizen{EID: DemoAuditor, Roles: []string{process.DefaultConsoleRole},
		Description: "the demo auditor: role auditor, for the console's sign-in (jisr dev --console-oidc); not a citizen"})
	for _, e := range o.AgentEIDs {
		citizens = append(citizens, devidp.Citizen{EID: e, Description: "counter agent"})
	}
	for _, e := range o.SignInEIDs {
		citizens = append(citizens, devidp.Citizen{EID: e, Description: "test citizen"})
	}
	cfg := devidp.Config{
		Citizens: citizens, ClientSecret: hex.EncodeToString(secret), ACR: citizen.DefaultACR,
		EIDClaim: citizen.DefaultEIDClaim, Log: g.Log,
	}
	p, err := devidp.Start(o.IdPAddr, cfg)
	if err != nil {
		return process.SignInOptions{}, process.UsageError{Err: fmt.Errorf("--idp: %w", err)}
	}
	d.idp = p
	g.Log.Info("demo OpenID Provider for citizen sign-in", "issuer", p.Issuer())
	return process.SignInOptions{
		OIDCIssuer: p.Issuer(), OIDCClientID: p.ClientID(), OIDCClientSecret: cfg.ClientSecret,
		OIDCEIDClaim: cfg.EIDClaim, OIDCACR: []string{cfg.ACR}, DemoLogin: o.DemoLogin, Agents: o.AgentEIDs,
	}, nil
}

// endpoints are where the running dev federation listens.
func (d *devFederation) endpoints() Endpoints {
	scheme := "http://"
	if d.gateway.Secure() {
		scheme = "https://"
	}
	ep := Endpoints{NATS: d.NATS.ClientURL(), GatewayHTTP: scheme + d.gateway.Addr(), GatewayGRPC: d.gateway.GRPCAddr(), OIDCIssuer: d.idp.Issuer()}
	if a := d.gateway.ConsoleAddr(); a != "" {
		ep.Console = "https://" + a + "/console/"
		if d.consoleOIDC {
			ep.ConsoleLogin = "https://" + a + console.PathLogin
		}
	}
	for _, a := range d.adapters {
		ep.Adapters = append(ep.Adapters, Endpoint{Member: a.Member(), Addr: a.Addr()})
	}
	for _, b := range d.backends {
		ep.Backends = append(ep.Backends, Endpoint{Member: b.Member, Addr: b.Addr})
	}
	for _, a := range d.adapters {
		if addr := d.external[a.Member()]; addr != "" {
			ep.Backends = append(ep.Backends, Endpoint{Member: a.Member(), Addr: addr, Yours: true})
		}
	}
	return ep
}

// writeDemo mints the demo tokens, writes <data>/demo.json and prints
// where everything is.
func (d *devFederation) writeDemo(ctx context.Context, g *process.Env, fed *federation.Federation, out io.Writer, start time.Time) error {
	keyer, err := g.Keyer()
	if err != nil {
		return err
	}
	ep := d.endpoints()
	demo, err := Write(ctx, g.DataDir, fed, keyer, d.gateway.ConsentService(), ep)
	if err != nil {
		return err
	}
	Print(out, fed, ep, demo, time.Since(start))
	return nil
}
