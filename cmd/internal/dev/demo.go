package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/services/demodata"
)

// File is var/demo.json: what a newcomer or a script needs to make a
// first call without reading code.
type File struct {
	Endpoints map[string]string `json:"endpoints"`
	SignIn    string            `json:"sign_in"`
	Citizens  []Citizen         `json:"citizens"`
	Tokens    []Token           `json:"tokens"`
	Try       string            `json:"try"`
	// Events is the printed tour of life events (events.go).
	Events string `json:"events_tour,omitempty"`
	// Cluster is the hub of `jisr dev --cluster` (its nodes and gateway
	// replicas, with their process ids).
	Cluster *ClusterInfo `json:"cluster,omitempty"`
}

// Citizen is a demo citizen.
type Citizen struct {
	EID         string `json:"eid"`
	Description string `json:"description"`
}

// Token is a ready consent token of a demo citizen.
type Token struct {
	Citizen    string   `json:"citizen"`
	Consumer   string   `json:"consumer"`
	Provider   string   `json:"provider"`
	Service    string   `json:"service"`
	Methods    []string `json:"methods"`
	Fields     []string `json:"fields,omitempty"`
	Purpose    string   `json:"purpose"`
	LegalBasis string   `json:"legal_basis"`
	JTI        string   `json:"jti"`
	Token      string   `json:"token"`
}

// Showcase lists the demo citizens printed by `jisr dev`.
func Showcase() []Citizen {
	var out []Citizen
	for _, e := range demodata.Showcase(demodata.DefaultSeed) {
		out = append(out, Citizen{EID: e.EID, Description: e.Description})
	}
	return out
}

// Consents mints, for every demo citizen and every rule that needs a
// token, one token to that rule's consumer, and records it.
func Consents(ctx context.Context, fed *federation.Federation, keyer *ckey.Keyer, svc *consent.Service, eids []string) ([]Token, error) {
	var out []Token
	for _, raw := range eids {
		eid, err := fed.NormaliseEID(raw)
		if err != nil {
			return nil, err
		}
		for _, r := range fed.Rules {
			if r.LegalBasis == federation.BasisMandate {
				continue
			}
			resp, err := svc.Grant(ctx, keyer.CKey(eid), consent.GrantRequest{
				To: r.Consumer, Service: r.Service, Methods: r.Methods, Purpose: r.Purposes[0],
				TTL: "24h", LegalBasis: r.LegalBasis,
			})
			if err != nil {
				return nil, err
			}
			out = append(out, Token{
				Citizen: eid, Consumer: r.Consumer, Provider: r.Provider, Service: r.Service, Methods: r.Methods,
				Fields: r.Fields, Purpose: r.Purposes[0], LegalBasis: r.LegalBasis, JTI: resp.ID, Token: resp.Token,
			})
		}
	}
	return out, nil
}

// Endpoint is one member's adapter or backend.
type Endpoint struct {
	Member, Addr string
	Yours        bool // a backend given with --backend, not a reference one
}

// Endpoints are where the running dev federation listens.
type Endpoints struct {
	NATS         string
	GatewayHTTP  string // with its scheme
	GatewayGRPC  string
	OIDCIssuer   string
	Console      string // the auditor's console, https://…/console/ ("" when off)
	ConsoleLogin string // its OIDC sign-in (jisr dev --console-oidc; "" when off)
	Adapters     []Endpoint
	Backends     []Endpoint
}

// Write mints the demo citizens' tokens with svc and writes
// <dataDir>/demo.json.
func Write(ctx context.Context, dataDir string, fed *federation.Federation, keyer *ckey.Keyer, svc *consent.Service, ep Endpoints, cluster ...*ClusterInfo) (*File, error) {
	demo := &File{Endpoints: map[string]string{
		"nats":         ep.NATS,
		"gateway_http": ep.GatewayHTTP,
		"gateway_grpc": ep.GatewayGRPC,
		"oidc_issuer":  ep.OIDCIssuer,
	}}
	demo.SignIn = "open " + ep.GatewayHTTP + "/access-log/ and sign in with the national e-ID: the demo provider at " +
		ep.OIDCIssuer + " lists the demo citizens"
	if ep.Console != "" {
		demo.Endpoints["console"] = ep.Console
	}
	for _, a := range ep.Adapters {
		demo.Endpoints["adapter/"+a.Member] = a.Addr
	}
	for _, b := range ep.Backends {
		demo.Endpoints["backend/"+b.Member] = b.Addr
	}
	if len(cluster) > 0 {
		demo.Cluster = cluster[0]
	}
	demo.Citizens = Showcase()
	eids := make([]string, len(demo.Citizens))
	for i, c := range demo.Citizens {
		eids[i] = c.EID
	}
	tokens, err := Consents(ctx, fed, keyer, svc, eids)
	if err != nil {
		return nil, fmt.Errorf("demo consents: %w", err)
	}
	demo.Tokens = tokens
	demo.Try = tryCommand(ep, demo)
	demo.Events = eventsTour(ep)
	b, err := json.MarshalIndent(demo, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dataDir, "demo.json"), append(b, '\n'), 0o600); err != nil {
		return nil, err
	}
	return demo, nil
}

// tryCommand is a grpcurl call through the CNSS adapter to the civil
// registry, with a ready consent token when there is one.
func tryCommand(ep Endpoints, demo *File) string {
	addr := ""
	for _, a := range ep.Adapters {
		if a.Member == "cnss" {
			addr = a.Addr
		}
	}
	if addr == "" || len(demo.Citizens) == 0 {
		return ""
	}
	eid, token, purpose := demo.Citizens[0].EID, "", "amo-enrolment"
	for _, t := range demo.Tokens {
		if t.Consumer == "cnss" && t.Provider == "civil-registry" && slices.Contains(t.Methods, "GetPerson") {
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

// Print writes what `jisr dev` shows once the federation is up.
func Print(out io.Writer, fed *federation.Federation, ep Endpoints, demo *File, took time.Duration) {
	fmt.Fprintf(out, "\njisr dev: federation %q is up in %s\n\n", fed.TrustDomain.Name(), took.Round(time.Millisecond))
	fmt.Fprintf(out, "  NATS (mTLS only)   %s\n", ep.NATS)
	fmt.Fprintf(out, "  gateway HTTP       %s  (/healthz /readyz /metrics, consent and access-log APIs)\n", demo.Endpoints["gateway_http"])
	fmt.Fprintf(out, "  demo e-ID (OIDC)   %s  (the citizens' sign-in; loopback only)\n", ep.OIDCIssuer)
	fmt.Fprintf(out, "  gateway gRPC       %s  (jisr.consent.v1.Consent, the citizen's access log)\n", ep.GatewayGRPC)
	if ep.Console != "" {
		fmt.Fprintf(out, "  auditor's console  %s  (the auditor's client certificate: <certs>/svid/auditor.pem)\n", ep.Console)
		if ep.ConsoleLogin != "" {
			fmt.Fprintf(out, "  console sign-in    %s  (OIDC: the demo provider's user %q has the role)\n", ep.ConsoleLogin, DemoAuditor)
		}
	}
	for _, a := range ep.Adapters {
		fmt.Fprintf(out, "  adapter %-14s %s  (gRPC, what the %s backend calls)\n", a.Member, a.Addr, a.Member)
	}
	for _, b := range ep.Backends {
		if b.Yours {
			fmt.Fprintf(out, "  backend %-14s %s  (yours: --backend %s=%s)\n", b.Member, b.Addr, b.Member, b.Addr)
			continue
		}
		fmt.Fprintf(out, "  backend %-14s %s  (reference %s service)\n", b.Member, b.Addr, b.Member)
	}
	fmt.Fprintln(out, "\nDemo citizens:")
	for _, c := range demo.Citizens {
		fmt.Fprintf(out, "  %-10s %s\n", c.EID, c.Description)
	}
	fmt.Fprintf(out, "\nCitizen sign-in: %s\n", demo.SignIn)
	fmt.Fprintf(out, "Citizen's page (consent requests, consents, who looked; Arabic and French): %s/citizen/\n", demo.Endpoints["gateway_http"])
	fmt.Fprintf(out, "\nTokens and endpoints: %s\n", filepath.Join("var", "demo.json"))
	if demo.Try != "" {
		fmt.Fprintf(out, "\nTry it — CNSS asks the civil registry about a citizen, with their consent:\n\n  %s\n", demo.Try)
	}
	fmt.Fprint(out, demo.Events)
	fmt.Fprintln(out, "\nCtrl-C to stop.")
}
