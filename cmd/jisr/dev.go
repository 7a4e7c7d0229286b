package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsserver"
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

	demo, err := writeDemo(ctx, g, fed, d)
	if err != nil {
		return err
	}
	printDemo(out, fed, d, demo, time.Since(start))
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
	for _, c := range showcase() {
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

// demoFile is var/demo.json: what a newcomer or a script needs to make a
// first call without reading code.
type demoFile struct {
	Endpoints map[string]string `json:"endpoints"`
	SignIn    string            `json:"sign_in"`
	Citizens  []demoCitizen     `json:"citizens"`
	Tokens    []demoToken       `json:"tokens"`
	Try       string            `json:"try"`
}

type demoCitizen struct {
	EID         string `json:"eid"`
	Description string `json:"description"`
}

func writeDemo(ctx context.Context, g *globals, fed *federation.Federation, d *devFederation) (*demoFile, error) {
	scheme := "http://"
	if d.gateway.Secure() {
		scheme = "https://"
	}
	demo := &demoFile{Endpoints: map[string]string{
		"nats":         d.nats.ClientURL(),
		"gateway_http": scheme + d.gateway.Addr(),
		"gateway_grpc": d.gateway.GRPCAddr(),
		"oidc_issuer":  d.idp.Issuer(),
	}}
	demo.SignIn = "open " + scheme + d.gateway.Addr() + "/access-log/ and sign in with the national e-ID: the demo provider at " +
		d.idp.Issuer() + " lists the demo citizens"
	for _, a := range d.adapters {
		demo.Endpoints["adapter/"+a.Member()] = a.Addr()
	}
	for _, b := range d.backends {
		demo.Endpoints["backend/"+b.member] = b.addr
	}
	demo.Citizens = showcase()
	eids := make([]string, len(demo.Citizens))
	for i, c := range demo.Citizens {
		eids[i] = c.EID
	}
	tokens, err := demoConsents(ctx, g, d.gateway.ConsentService(), eids)
	if err != nil {
		return nil, fmt.Errorf("demo consents: %w", err)
	}
	demo.Tokens = tokens
	demo.Try = tryCommand(fed, d, demo)
	path := filepath.Join(g.dataDir, "demo.json")
	b, err := json.MarshalIndent(demo, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return nil, err
	}
	return demo, nil
}

// tryCommand is a grpcurl call through the CNSS adapter to the civil
// registry, with a ready consent token when there is one.
func tryCommand(fed *federation.Federation, d *devFederation, demo *demoFile) string {
	addr := ""
	for _, a := range d.adapters {
		if a.Member() == "cnss" {
			addr = a.Addr()
		}
	}
	if addr == "" || len(demo.Citizens) == 0 {
		return ""
	}
	eid, token, purpose := demo.Citizens[0].EID, "", "amo-enrolment"
	for _, t := range demo.Tokens {
		if t.Consumer == "cnss" && t.Provider == "civil-registry" && contains(t.Methods, "GetPerson") {
			eid, token, purpose = t.Citizen, t.Token, t.Purpose
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "grpcurl -plaintext -H 'jisr-purpose: %s'", purpose)
	if token != "" {
		fmt.Fprintf(&b, " -H 'jisr-consent: %s'", token)
	}
	fmt.Fprintf(&b, ` -d '{"eid": "%s"}' %s jisr.civilregistry.v1.CivilRegistry/GetPerson`, eid, addr)
	return b.String()
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func printDemo(out io.Writer, fed *federation.Federation, d *devFederation, demo *demoFile, took time.Duration) {
	fmt.Fprintf(out, "\njisr dev: federation %q is up in %s\n\n", fed.TrustDomain.Name(), took.Round(time.Millisecond))
	fmt.Fprintf(out, "  NATS (mTLS only)   %s\n", d.nats.ClientURL())
	fmt.Fprintf(out, "  gateway HTTP       %s  (/healthz /readyz /metrics, consent and access-log APIs)\n", demo.Endpoints["gateway_http"])
	fmt.Fprintf(out, "  demo e-ID (OIDC)   %s  (the citizens' sign-in; loopback only)\n", d.idp.Issuer())
	fmt.Fprintf(out, "  gateway gRPC       %s  (jisr.consent.v1.Consent, the citizen's access log)\n", d.gateway.GRPCAddr())
	for _, a := range d.adapters {
		fmt.Fprintf(out, "  adapter %-14s %s  (gRPC, what the %s backend calls)\n", a.Member(), a.Addr(), a.Member())
	}
	for _, b := range d.backends {
		fmt.Fprintf(out, "  backend %-14s %s  (reference %s service)\n", b.member, b.addr, b.member)
	}
	fmt.Fprintln(out, "\nDemo citizens:")
	for _, c := range demo.Citizens {
		fmt.Fprintf(out, "  %-10s %s\n", c.EID, c.Description)
	}
	fmt.Fprintf(out, "\nCitizen sign-in: %s\n", demo.SignIn)
	fmt.Fprintf(out, "\nTokens and endpoints: %s\n", filepath.Join("var", "demo.json"))
	if demo.Try != "" {
		fmt.Fprintf(out, "\nTry it — CNSS asks the civil registry about a citizen, with their consent:\n\n  %s\n", demo.Try)
	}
	fmt.Fprintln(out, "\nCtrl-C to stop.")
}
