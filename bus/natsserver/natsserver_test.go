package natsserver_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
)

// A member whose 30-second SVID expires is disconnected by the server at
// the certificate's NotAfter, and its reconnect with that certificate is
// refused; until then the user mapped from the SVID keeps the rendered
// permissions.
func TestExpiredSVIDIsDisconnectedAndReconnectRefused(t *testing.T) {
	env := bustest.Start(t, bustest.WithoutJetStream())
	id := env.ID("cnss")
	// A 30-second SVID issued 27 seconds ago: the test waits only for its
	// last three seconds.
	short, err := env.CA.Issue(id, devca.WithNotBefore(time.Now().Add(-27*time.Second)), devca.WithTTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	notAfter := short.Certificates[0].NotAfter
	src := svid.NewStatic(short, env.CA.Bundle())

	closed := make(chan struct{})
	var reconnected atomic.Int32
	var (
		mu        sync.Mutex
		asyncErrs []error
	)
	nc, err := env.Dial("cnss", src,
		nats.MaxReconnects(2), nats.ReconnectWait(50*time.Millisecond),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected.Add(1) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			defer mu.Unlock()
			asyncErrs = append(asyncErrs, err)
		}))
	if err != nil {
		t.Fatalf("connect with a valid short SVID: %v", err)
	}
	defer nc.Close()

	// The mapped user has cnss's rendered permissions: its own inbox is
	// allowed, another member's provider subject is not.
	if _, err := nc.SubscribeSync("_INBOX.cnss.x"); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync("jisr.p.tax.>"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a permissions violation for jisr.p.tax.>", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range asyncErrs {
			if strings.Contains(e.Error(), "Permissions Violation") && strings.Contains(e.Error(), "jisr.p.tax.>") {
				return true
			}
		}
		return false
	})

	select {
	case <-closed:
	case <-time.After(time.Until(notAfter) + time.Minute):
		t.Fatalf("still connected a minute after the SVID expired at %s", notAfter)
	}
	if n := reconnected.Load(); n != 0 {
		t.Errorf("the client reconnected %d times with its expired SVID", n)
	}
	cz, err := env.Server.NATS().Connz(&server.ConnzOptions{State: server.ConnClosed, Username: true})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cz.Conns {
		if c.AuthorizedUser == id.String() && c.Reason == server.AuthenticationExpired.String() {
			found = true
		}
	}
	if !found {
		t.Errorf("no closed connection of %s with reason %q", id, server.AuthenticationExpired)
	}
	if nc2, err := env.Dial("cnss", src); err == nil {
		nc2.Close()
		t.Fatal("a new connection with the expired SVID was accepted")
	}
}

// The server reads the trust bundle at every handshake: a CA added to the
// bundle file is trusted by the next connection, and a CA removed from it is
// not, without a restart.
func TestRotatedTrustBundleAppliesWithoutRestart(t *testing.T) {
	env := bustest.Start(t, bustest.WithoutJetStream())
	fed := env.Fed
	natsID := fed.ID("nats")
	certFile, keyFile := svid.Paths(env.Dir, natsID)
	bundleFile := filepath.Join(t.TempDir(), "bundle.pem")
	writeBundle(t, bundleFile, fed, env.CA.Certificate())

	reloaded := make(chan struct{}, 4)
	ctx := context.Background()
	src, err := svid.NewFileSource(ctx, certFile, keyFile, bundleFile,
		svid.WithPollInterval(20*time.Millisecond), svid.WithOnChange(func() { reloaded <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	s, err := natsserver.Start(ctx, natsconf.Config{
		Federation: fed, Port: -1, CertFile: certFile, KeyFile: keyFile, CAFile: bundleFile,
	}, src, nil, natsserver.OnShutdown(func() { _ = src.Close() }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	dial := func(ca *devca.CA) error {
		sv, err := ca.Issue(env.ID("tax"))
		if err != nil {
			t.Fatal(err)
		}
		e := *env
		e.URL = s.ClientURL()
		// The client trusts the server's (old) CA; its own SVID is from ca.
		nc, err := e.Dial("tax", svid.NewStatic(sv, env.CA.Bundle()))
		if err == nil {
			nc.Close()
		}
		return err
	}
	next, err := devca.New(fed.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	rotate := func(cas ...*x509.Certificate) {
		t.Helper()
		writeBundle(t, bundleFile, fed, cas...)
		select {
		case <-reloaded:
		case <-time.After(10 * time.Second):
			t.Fatal("the bundle file was not reloaded")
		}
	}

	if err := dial(env.CA); err != nil {
		t.Fatalf("SVID from the trusted CA: %v", err)
	}
	if err := dial(next); err == nil {
		t.Fatal("SVID from a CA not yet in the bundle was accepted")
	}
	rotate(env.CA.Certificate(), next.Certificate())
	if err := dial(next); err != nil {
		t.Fatalf("SVID from the CA added to the bundle: %v", err)
	}
	rotate(next.Certificate())
	if err := dial(env.CA); err == nil {
		t.Fatal("SVID from the CA removed from the bundle was accepted")
	}
	if err := dial(next); err != nil {
		t.Fatalf("SVID from the CA left in the bundle: %v", err)
	}
}

func writeBundle(t *testing.T, path string, fed *federation.Federation, cas ...*x509.Certificate) {
	t.Helper()
	b, err := x509bundle.FromX509Authorities(fed.TrustDomain, cas).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
