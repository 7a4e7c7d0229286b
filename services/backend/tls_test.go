package backend_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/backend"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/store"
)

func TestPlaintextOnlyOnLoopback(t *testing.T) {
	t.Parallel()
	b, err := backend.New(context.Background(), "civil-registry", t.TempDir(), backend.WithStore(store.WithCitizens(8)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:7101"} {
		if _, err := b.Listen(addr); !errors.Is(err, backend.ErrPlaintextNotLocal) {
			t.Errorf("Listen(%q) without TLS: %v, want ErrPlaintextNotLocal", addr, err)
		}
	}
	lis, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if err := b.Serve(lis); !errors.Is(err, backend.ErrPlaintextNotLocal) {
		t.Fatalf("Serve on %s without TLS: %v, want ErrPlaintextNotLocal", lis.Addr(), err)
	}
	lis, err = b.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("loopback: %v", err)
	}
	lis.Close()
}

// TestOffLoopbackServesMTLS serves the backend on every interface with the
// member's SVID: the member's adapter gets an answer; a plaintext client, a
// TLS 1.2 client and another member's workload do not.
func TestOffLoopbackServesMTLS(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("jisr.internal")
	member := spiffeid.RequireFromPath(td, "/member/civil-registry")
	ca, err := devca.New(td)
	if err != nil {
		t.Fatal(err)
	}
	source := func(id spiffeid.ID) svid.Source {
		s, err := ca.Issue(id)
		if err != nil {
			t.Fatal(err)
		}
		return svid.NewStatic(s, ca.Bundle())
	}
	srv, adapterSrc, other := source(member), source(member), source(spiffeid.RequireFromPath(td, "/member/tax"))
	b, err := backend.New(context.Background(), "civil-registry", t.TempDir(), backend.WithStore(store.WithCitizens(8)),
		backend.WithTLS(svid.ServerTLS(srv, tlsconfig.AuthorizeID(member))))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := b.Listen("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	go b.Serve(lis)
	t.Cleanup(func() { b.Stop(context.Background()) })
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	addr := net.JoinHostPort("127.0.0.1", port)

	ask := func(creds credentials.TransportCredentials) error {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err = civilv1.NewCivilRegistryClient(cc).IsAlive(ctx, &civilv1.IsAliveRequest{Eid: demodata.EID(demodata.DefaultSeed, 0)})
		return err
	}
	if err := ask(credentials.NewTLS(svid.ClientTLS(adapterSrc, tlsconfig.AuthorizeID(member)))); err != nil {
		t.Fatalf("the member's adapter over mTLS: %v", err)
	}
	tls12 := &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}
	tlsconfig.HookMTLSClientConfig(tls12, adapterSrc, adapterSrc, tlsconfig.AuthorizeID(member))
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext":      insecure.NewCredentials(),
		"TLS 1.2":        credentials.NewTLS(tls12),
		"another member": credentials.NewTLS(svid.ClientTLS(other, tlsconfig.AuthorizeID(member))),
	} {
		if err := ask(creds); err == nil {
			t.Errorf("%s: the backend answered", name)
		}
	}
}
