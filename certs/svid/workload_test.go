package svid_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
)

// workloadAPI is a real SPIFFE Workload API server (the gRPC service SPIRE's
// agent serves) on a unix socket, serving whatever SVIDs the test sets, in
// the order it sets them, and streaming every change to every watcher.
type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	ca   *devca.CA
	addr string

	mu      sync.Mutex
	svids   []*x509svid.SVID
	changed chan struct{} // closed and replaced on every set
}

func startWorkloadAPI(t *testing.T, ca *devca.CA, svids ...*x509svid.SVID) *workloadAPI {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	w := &workloadAPI{ca: ca, addr: "unix://" + sock, svids: svids, changed: make(chan struct{})}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, w)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return w
}

func (w *workloadAPI) set(svids ...*x509svid.SVID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.svids = svids
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *workloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	// As SPIRE's agent does: only clients that say they are workloads.
	if md, _ := metadata.FromIncomingContext(stream.Context()); len(md.Get("workload.spiffe.io")) == 0 {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	var bundle []byte
	for _, c := range w.ca.Bundle().X509Authorities() {
		bundle = append(bundle, c.Raw...)
	}
	for {
		w.mu.Lock()
		svids, changed := w.svids, w.changed
		w.mu.Unlock()
		resp := &workload.X509SVIDResponse{}
		for _, s := range svids {
			certs, key, err := s.MarshalRaw()
			if err != nil {
				return err
			}
			resp.Svids = append(resp.Svids, &workload.X509SVID{SpiffeId: s.ID.String(), X509Svid: certs, X509SvidKey: key, Bundle: bundle})
		}
		if len(resp.Svids) == 0 {
			// SPIRE's agent answers PermissionDenied when no entry matches.
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

// syncBuffer is a log sink safe for the source's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	gatewayID = spiffeid.RequireFromPath(td, "/gateway")
	consentID = spiffeid.RequireFromPath(td, "/consent")
)

// The gateway's process holds two identities, /gateway and /consent. The
// Workload API serves both SVIDs to the process, in an order of its own:
// each source must keep its own, whichever comes first, and present it in
// the TLS handshake.
func TestWorkloadAPITwoIdentitiesInOneProcess(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	gw, cs := issue(t, ca, gatewayID), issue(t, ca, consentID)
	for i, order := range [][]*x509svid.SVID{{cs, gw}, {gw, cs}} {
		api := startWorkloadAPI(t, ca, order...)
		for _, want := range []*x509svid.SVID{gw, cs} {
			src, err := svid.OpenWorkloadAPI(t.Context(), want.ID, nil, svid.WithWorkloadAPIAddr(api.addr))
			if err != nil {
				t.Fatalf("%s with %s served first: %v", want.ID, order[0].ID, err)
			}
			got, err := src.GetX509SVID()
			if err != nil || got.ID != want.ID || !got.Certificates[0].Equal(want.Certificates[0]) {
				t.Fatalf("%s with %s served first: the source holds %v (%v)", want.ID, order[0].ID, got.ID, err)
			}
			if i > 0 {
				src.Close()
				continue // a handshake takes 2s here; once per identity is enough
			}
			// The identity a peer sees in the handshake is the picked one.
			srvConf := svid.ServerTLS(svid.NewStatic(issue(t, ca, serverID), ca.Bundle()), tlsconfig.AuthorizeID(want.ID))
			cliConf := svid.ClientTLS(src, tlsconfig.AuthorizeID(serverID))
			if serr, cerr := handshake(t, srvConf, cliConf); serr != nil || cerr != nil {
				t.Fatalf("%s: the server refused the picked SVID: server %v, client %v", want.ID, serr, cerr)
			}
			src.Close()
		}
	}
}

// An identity the Workload API does not serve to the process is refused at
// start, naming what it serves.
func TestWorkloadAPIWrongIdentity(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	api := startWorkloadAPI(t, ca, issue(t, ca, consentID))
	_, err := svid.OpenWorkloadAPI(t.Context(), gatewayID, nil, svid.WithWorkloadAPIAddr(api.addr))
	if !errors.Is(err, svid.ErrWrongID) || !strings.Contains(err.Error(), consentID.String()) {
		t.Fatalf("err = %v, want ErrWrongID naming %s", err, consentID)
	}
}

// A rotation by the Workload API reaches the source and the next handshake,
// and is logged; the other identity's rotation is not this source's, and an
// identity the API stops serving fails closed.
func TestWorkloadAPIRotationIsLoggedAndFailsClosedWhenWithdrawn(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	gw, cs := issue(t, ca, gatewayID), issue(t, ca, consentID)
	api := startWorkloadAPI(t, ca, cs, gw)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src, err := svid.OpenWorkloadAPI(t.Context(), gatewayID, log, svid.WithWorkloadAPIAddr(api.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if !strings.Contains(logs.String(), "SVID received from the Workload API") {
		t.Fatalf("first SVID not logged:\n%s", logs.String())
	}

	// The consent identity rotates: not ours, nothing logged for /gateway.
	api.set(issue(t, ca, consentID), gw)
	// Then ours.
	rotated := issue(t, ca, gatewayID)
	api.set(cs, rotated)
	eventually(t, 10*time.Second, "the source kept the old SVID", func() bool {
		s, err := src.GetX509SVID()
		return err == nil && s.Certificates[0].Equal(rotated.Certificates[0])
	})
	if n := strings.Count(logs.String(), "SVID rotated by the Workload API"); n != 1 {
		t.Fatalf("%d rotations logged, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "serial="+rotated.Certificates[0].SerialNumber.String()) {
		t.Fatalf("rotation logged without the new serial:\n%s", logs.String())
	}
	srvConf := svid.ServerTLS(svid.NewStatic(issue(t, ca, serverID), ca.Bundle()), tlsconfig.AuthorizeID(gatewayID))
	var seen []byte
	srvConf.VerifyConnection = func(cs tls.ConnectionState) error { seen = cs.PeerCertificates[0].Raw; return nil }
	if serr, cerr := handshake(t, srvConf, svid.ClientTLS(src, tlsconfig.AuthorizeID(serverID))); serr != nil || cerr != nil {
		t.Fatalf("handshake after rotation: %v %v", serr, cerr)
	}
	if !bytes.Equal(seen, rotated.Certificates[0].Raw) {
		t.Fatal("the handshake after the rotation presented the old certificate")
	}

	// The agent stops serving /gateway (its entry was deleted): the source
	// has no SVID, the handshake fails, and the loss is logged.
	api.set(cs)
	eventually(t, 10*time.Second, "the source kept a withdrawn identity", func() bool {
		_, err := src.GetX509SVID()
		return err != nil
	})
	if serr, cerr := handshake(t, srvConf, svid.ClientTLS(src, tlsconfig.AuthorizeID(serverID))); serr == nil && cerr == nil {
		t.Fatal("a handshake succeeded with a withdrawn identity")
	}
	if !strings.Contains(logs.String(), "no longer serves this identity") {
		t.Fatalf("withdrawal not logged:\n%s", logs.String())
	}
}

// svid.Open takes the Workload API when SPIFFE_ENDPOINT_SOCKET is set, and
// picks by ID there too.
func TestOpenPicksFromWorkloadAPI(t *testing.T) {
	ca := newCA(t)
	api := startWorkloadAPI(t, ca, issue(t, ca, consentID), issue(t, ca, gatewayID))
	t.Setenv(svid.EndpointSocketEnv, api.addr)
	src, err := svid.Open(t.Context(), t.TempDir(), gatewayID, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if s, _ := src.GetX509SVID(); s.ID != gatewayID {
		t.Fatalf("Open gave %s", s.ID)
	}
}
