package natsserver_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
)

// Under SPIRE the server's SVID comes from the Workload API, not files: the
// configuration names no cert_file, key_file or ca_file, and the embedded
// server takes its certificate and the trust bundle from the source alone.
// It still refuses a client that the source's bundle does not trust.
func TestServerWithoutCertificateFiles(t *testing.T) {
	t.Parallel()
	fed, err := federation.Parse(bustest.FederationYAML())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := devca.New(fed.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *devca.CA, identity string) svid.Source {
		id := fed.ID(identity)
		if m, err := fed.Member(identity); err == nil {
			id = m.ID
		}
		s, err := ca.Issue(id)
		if err != nil {
			t.Fatal(err)
		}
		return svid.NewStatic(s, ca.Bundle())
	}
	cfg := natsconf.Config{Federation: fed, Port: -1, WorkloadAPI: true, StoreDir: t.TempDir() + "/js"}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	s, err := natsserver.Start(ctx, cfg, issue(ca, "nats"), bustest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	text, err := os.ReadFile(s.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cert_file", "key_file", "ca_file"} {
		if strings.Contains(string(text), k) {
			t.Fatalf("the configuration names %s:\n%s", k, text)
		}
	}
	dial := func(src svid.Source) (*nats.Conn, error) {
		return bus.Connect(ctx, bus.Config{URL: s.ClientURL(), Identity: "cnss", Source: src, ServerID: fed.ID("nats")},
			bus.WithNATSOptions(nats.MaxReconnects(0), nats.Timeout(3*time.Second)))
	}
	nc, err := dial(issue(ca, "cnss"))
	if err != nil {
		t.Fatalf("a member with an SVID of the source's trust domain: %v", err)
	}
	nc.Close()
	other, err := devca.New(fed.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := dial(issue(other, "cnss")); err == nil {
		nc.Close()
		t.Fatal("the server accepted an SVID from a CA outside its bundle")
	}
}
