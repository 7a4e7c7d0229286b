package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/citizen/devidp"
)

type devOptions struct {
	citizens int
	httpAddr string
	grpcAddr string
	nats     natsOptions
	// idpAddr is the embedded demo OpenID Provider's loopback address.
	idpAddr string
	// demoLogin turns on sign-in by eID alone (loopback only).
	demoLogin bool
	// anyPort binds every listener to 127.0.0.1:0 (tests run several
	// federations side by side).
	anyPort bool
}

func newDevCmd(g *globals) *cobra.Command {
	o := devOptions{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole federation on this machine with demo data",
		Long: `Run the whole demo federation in one process: the NATS server (mTLS,
JetStream under --data), the gateway, one adapter and one reference backend per
member, seeded with deterministic synthetic citizens. It creates the dev CA and
SVIDs on first run (as 'jisr certs init' does), writes var/demo.json with demo
eIDs and ready consent tokens, and prints a grpcurl command to try.

Citizens sign in to their access log and consents through a small embedded
OpenID Provider (on --idp, loopback only) that lists the demo citizens, with
the same OpenID Connect flow as production. --demo-login also turns on
sign-in by eID alone (POST /access-log/login), for scripts; loopback only.

Ctrl-C shuts everything down gracefully.`,
		Example: `  jisr dev
  jisr dev --citizens 1000000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), g, o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&o.citizens, "citizens", 10000, "synthetic citizens in each reference backend")
	cmd.Flags().StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "gateway HTTP address")
	cmd.Flags().StringVar(&o.grpcAddr, "grpc", "127.0.0.1:7000", "gateway gRPC address (consent and access-log APIs)")
	cmd.Flags().StringVar(&o.idpAddr, "idp", "127.0.0.1:8090", "loopback address of the embedded demo OpenID Provider (citizen sign-in)")
	cmd.Flags().BoolVar(&o.demoLogin, "demo-login", false, "also let anyone sign in as a citizen by eID alone (POST /access-log/login; loopback only)")
	o.nats.flags(cmd)
	cmd.Flags().BoolVar(&o.anyPort, "any-port", false, "bind every listener to a free loopback port (tests and benchmarks); the ports are in var/demo.json")
	_ = cmd.Flags().MarkHidden("any-port")
	g.audit.register(cmd)
	return cmd
}

// devFederation is a running dev federation, stopped in reverse order.
type devFederation struct {
	idp      *devidp.Provider
	nats     *natsserver.Server
	backends []*backendNode
	gateway  *gatewayNode
	consent  *consentNode // the consent service, apart from the gateway: it alone holds the signing key
	adapters []*adapterNode
}

func runDev(ctx context.Context, g *globals, o devOptions, out io.Writer) (err error) {
	start := time.Now()
	fed, err := g.federation()
	if err != nil {
		return err
	}
	res, err := initCerts(g, fed)
	if err != nil {
		return err
	}
	g.log.Info("certificates", "dir", g.certsDir, "summary", res)
	stopTelemetry, err := g.startTelemetry(ctx, "dev", true)
	if err != nil {
		return err
	}
	defer stopTelemetry()

	d := &devFederation{}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		if serr := d.stop(sctx, g); serr != nil && err == nil {
			err = serr
		}
	}()
	if o.anyPort {
		o.nats.listen, o.httpAddr, o.grpcAddr, o.idpAddr = "127.0.0.1:-1", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	}
	if err := d.startNATS(ctx, g, o); err != nil {
		return err
	}

	if err := d.startBackends(ctx, g, fed, o); err != nil {
		return err
	}
	signin, err := d.startIdP(g, o)
	if err != nil {
		return err
	}
	if d.gateway, err = startGateway(ctx, g, gatewayOptions{httpAddr: o.httpAddr, grpcAddr: o.grpcAddr, instance: "gw-1", signin: signin}); err != nil {
		return err
	}
	d.idp.AllowRedirect(redirectURLFor(d.gateway.Addr(), d.gateway.Secure()))
	if d.consent, err = startConsentService(ctx, g); err != nil {
		return fmt.Errorf("consent service: %w", err)
	}
	if err := d.startAdapters(ctx, g, fed, o); err != nil {
		return err
	}

	keyer, err := g.keyer()
	if err != nil {
		return err
	}
	ep := d.endpoints()
	demo, err := dev.Write(ctx, g.dataDir, fed, keyer, d.gateway.ConsentService(), ep)
	if err != nil {
		return err
	}
	dev.Print(out, fed, ep, demo, time.Since(start))
	<-ctx.Done()
	fmt.Fprintln(out, "\nshutting down…")
	return nil
}

// startNATS starts the NATS server, and creates the streams and buckets
// as the operator: every other part only opens them.
func (d *devFederation) startNATS(ctx context.Context, g *globals, o devOptions) (err error) {
	if d.nats, err = startNATS(ctx, g, o.nats); err != nil {
		return err
	}
	g.natsURL = d.nats.ClientURL()
	return natsInit(ctx, g, nil)
}

// startBackends starts the reference backend of every member that
// provides a service.
func (d *devFederation) startBackends(ctx context.Context, g *globals, fed *federation.Federation, o devOptions) error {
	for _, m := range fed.Members {
		if len(m.Provides) == 0 {
			continue
		}
		bo := backendOptions{member: m.Name, citizens: o.citizens}
		if o.anyPort {
			bo.listen = "127.0.0.1:0"
		}
		b, err := startBackend(ctx, g, bo)
		if err != nil {
			return err
		}
		d.backends = append(d.backends, b)
	}
	return nil
}

// startAdapters starts every member's adapter, in front of its backend.
func (d *devFederation) startAdapters(ctx context.Context, g *globals, fed *federation.Federation, o devOptions) error {
	backendAddr := map[string]string{}
	for _, b := range d.backends {
		backendAddr[b.member] = b.addr
	}
	for _, m := range fed.Members {
		ao := adapterOptions{member: m.Name, backend: backendAddr[m.Name]}
		if o.anyPort {
			ao.listen = "127.0.0.1:0"
		}
		a, err := startAdapter(ctx, g, ao)
		if err != nil {
			return err
		}
		d.adapters = append(d.adapters, a)
	}
	return nil
}

// stop shuts down in reverse order of dependency: adapters stop taking
// calls, the gateway finishes and audits what is in flight, backends stop,
// and NATS goes last.
func (d *devFederation) stop(ctx context.Context, g *globals) error {
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
		errs = append(errs, b.stop(ctx))
	}
	if d.nats != nil {
		d.nats.Shutdown()
	}
	if d.idp != nil {
		errs = append(errs, d.idp.Close(ctx))
	}
	return errors.Join(errs...)
}

// startIdP starts the embedded demo OpenID Provider for the demo citizens
// and returns the gateway's sign-in options for it.
func (d *devFederation) startIdP(g *globals, o devOptions) (signinOptions, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return signinOptions{}, err
	}
	var citizens []devidp.Citizen
	for _, c := range dev.Showcase() {
		citizens = append(citizens, devidp.Citizen{EID: c.EID, Description: c.Description})
	}
	cfg := devidp.Config{
		Citizens: citizens, ClientSecret: hex.EncodeToString(secret), ACR: citizen.DefaultACR,
		EIDClaim: citizen.DefaultEIDClaim, Log: g.log,
	}
	p, err := devidp.Start(o.idpAddr, cfg)
	if err != nil {
		return signinOptions{}, usageError{fmt.Errorf("--idp: %w", err)}
	}
	d.idp = p
	g.log.Info("demo OpenID Provider for citizen sign-in", "issuer", p.Issuer())
	return signinOptions{
		oidcIssuer: p.Issuer(), oidcClientID: p.ClientID(), oidcClientSecret: cfg.ClientSecret,
		oidcEIDClaim: cfg.EIDClaim, oidcACR: []string{cfg.ACR}, demoLogin: o.demoLogin,
	}, nil
}

// endpoints are where the running dev federation listens.
func (d *devFederation) endpoints() dev.Endpoints {
	scheme := "http://"
	if d.gateway.Secure() {
		scheme = "https://"
	}
	ep := dev.Endpoints{NATS: d.nats.ClientURL(), GatewayHTTP: scheme + d.gateway.Addr(), GatewayGRPC: d.gateway.GRPCAddr(), OIDCIssuer: d.idp.Issuer()}
	for _, a := range d.adapters {
		ep.Adapters = append(ep.Adapters, dev.Endpoint{Member: a.Member(), Addr: a.Addr()})
	}
	for _, b := range d.backends {
		ep.Backends = append(ep.Backends, dev.Endpoint{Member: b.member, Addr: b.addr})
	}
	return ep
}
