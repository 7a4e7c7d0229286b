package main

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// TestBackendOffLoopbackServesMTLS: `jisr backend --listen` on every
// interface serves mTLS with the member's SVID; without certificates it
// refuses to start rather than serve plaintext.
func TestBackendOffLoopbackServesMTLS(t *testing.T) {
	dir := t.TempDir()
	g := &process.Env{FederationPath: "../testdata/federation.yaml", CertsDir: filepath.Join(dir, "certs"), DataDir: dir, Log: bustest.Logger(t)}
	ctx := t.Context()
	if _, err := process.StartBackend(ctx, g, process.BackendOptions{Member: "civil-registry", Listen: "0.0.0.0:0", Citizens: 8}); err == nil {
		t.Fatal("the backend served off loopback without an SVID")
	}
	fed, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(g, fed); err != nil {
		t.Fatal(err)
	}
	n, err := process.StartBackend(ctx, g, process.BackendOptions{Member: "civil-registry", Listen: "0.0.0.0:0", Citizens: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop(context.Background()) })
	_, port, _ := net.SplitHostPort(n.Addr)
	m, _ := fed.Member("civil-registry")
	src, err := g.Source(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	check := func(creds credentials.TransportCredentials) error {
		cc, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", port), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(credentials.NewTLS(svid.ClientTLS(src, process.BackendOf(fed.TrustDomain, "civil-registry")))); err != nil {
		t.Fatalf("the member's adapter identity over mTLS: %v", err)
	}
	if err := check(insecure.NewCredentials()); err == nil {
		t.Fatal("the backend answered plaintext off loopback")
	}
	other, _ := fed.Member("tax")
	osrc, err := g.Source(ctx, other.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer osrc.Close()
	if err := check(credentials.NewTLS(svid.ClientTLS(osrc, tlsconfig.AuthorizeAny()))); err == nil {
		t.Fatal("the backend answered another member's workload")
	}
}
