package natsserver_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/url"
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
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

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
	t.Parallel()
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
	bustest.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range asyncErrs {
			if strings.Contains(e.Error(), "Permissions Violation") && strings.Contains(e.Error(), "jisr.p.tax.>") {
				return nil
			}
		}
		return fmt.Errorf("no permissions violation for jisr.p.tax.>; errors seen: %v", asyncErrs)
	})

	select {
	case <-closed:
	case <-time.After(time.Until(notAfter) + time.Minute):
		t.Fatalf("still connected a minute after the SVID expired at %s", notAfter)
	}
	if n := reconnected.Load(); n != 0 {
		t.Errorf("the client reconnected %d times with its expired SVID", n)
	}
	waitClosedAsExpired(t, env, id)
	if nc2, err := env.Dial("cnss", src); err == nil {
		nc2.Close()
		t.Fatal("a new connection with the expired SVID was accepted")
	}
}

// The server reads the trust bundle at every handshake: a CA added to the
// bundle file is trusted by the next connection, and a CA removed from it is
// not, without a restart.
func TestRotatedTrustBundleAppliesWithoutRestart(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bustest.WithoutJetStream())
	fed := env.Fed
	natsID := fed.ID("nats")
	certFile, keyFile := svid.Paths(env.Dir, natsID)
	bundleFile := filepath.Join(t.TempDir(), "bundle.pem")
	writeBundle(t, bundleFile, fed, env.CA.Certificate())

	reloaded := make(chan struct{}, 4)
	ctx := t.Context()
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
	// Open connections: one with an SVID of the CA about to be removed, one
	// of the CA that stays. Removing the CA closes the first, not the second.
	keep := func(ca *devca.CA, closed chan struct{}) *nats.Conn {
		t.Helper()
		sv, err := ca.Issue(env.ID("tax"))
		if err != nil {
			t.Fatal(err)
		}
		e := *env
		e.URL = s.ClientURL()
		nc, err := e.Dial("tax", svid.NewStatic(sv, env.CA.Bundle()), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	oldClosed, nextClosed := make(chan struct{}), make(chan struct{})
	keep(env.CA, oldClosed)
	stays := keep(next, nextClosed)
	rotate(next.Certificate())
	select {
	case <-oldClosed:
	case <-time.After(30 * time.Second):
		t.Fatal("a connection whose CA was removed from the bundle is still open")
	}
	select {
	case <-nextClosed:
		t.Fatal("a connection of the CA left in the bundle was closed")
	default:
	}
	if !stays.IsConnected() {
		t.Fatal("a connection of the CA left in the bundle was closed")
	}
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

// A member's SVID issued by an intermediate CA that expires before the SVID
// does: the connection lasts no longer than the shortest-lived certificate
// of the chain, and is closed as an expired authentication.
func TestConnectionEndsWhenItsIntermediateCAExpires(t *testing.T) {
	env := bustest.Start(t, bustest.WithoutJetStream())
	id := env.ID("tax")
	now := time.Now()
	ik, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := env.CA.Sign(&x509.Certificate{
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		URIs:      []*url.URL{env.Fed.TrustDomain.ID().URL()},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(3 * time.Second),
	}, ik.Public())
	if err != nil {
		t.Fatal(err)
	}
	lk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), URIs: []*url.URL{id.URL()},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, inter, lk.Public(), ik)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	nc, err := env.Dial("tax", svid.NewStatic(&x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, inter}, PrivateKey: lk}, env.CA.Bundle()),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("connect with a chain through a valid intermediate: %v", err)
	}
	defer nc.Close()
	select {
	case <-closed:
	case <-time.After(time.Until(inter.NotAfter) + time.Minute):
		t.Fatalf("still connected a minute after the intermediate CA expired at %s", inter.NotAfter)
	}
	waitClosedAsExpired(t, env, id)
}

// waitClosedAsExpired waits until the server lists a closed connection of id
// closed as an expired authentication (the client may see its connection
// close a moment before the server records why).
func waitClosedAsExpired(t *testing.T, env *bustest.Env, id spiffeid.ID) {
	t.Helper()
	bustest.Eventually(t, 10*time.Second, func() error {
		cz, err := env.Server.NATS().Connz(&server.ConnzOptions{State: server.ConnClosed, Username: true})
		if err != nil {
			return err
		}
		var seen []string
		for _, c := range cz.Conns {
			if c.AuthorizedUser == id.String() && c.Reason == server.AuthenticationExpired.String() {
				return nil
			}
			seen = append(seen, c.AuthorizedUser+": "+c.Reason)
		}
		return fmt.Errorf("no closed connection of %s with reason %q; closed: %v", id, server.AuthenticationExpired, seen)
	})
}

// PeerSVIDs names, for every open client connection, the SPIFFE ID and the
// expiry of the SVID it presented (jisr status reads them: under SPIRE the
// operator holds no member's SVID).
func TestPeerSVIDsNameWhatEachConnectionPresented(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bustest.WithoutJetStream())
	id := env.ID("cnss")
	short, err := env.CA.Issue(id, devca.WithTTL(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := env.Dial("cnss", svid.NewStatic(short, env.CA.Bundle()))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	gw := env.Connect(t, "gateway")
	var cnss, gateway []natsserver.PeerSVID
	for _, p := range env.Server.PeerSVIDs() {
		switch p.ID {
		case id.String():
			cnss = append(cnss, p)
		case env.ID("gateway").String():
			gateway = append(gateway, p)
		}
	}
	if len(cnss) != 1 || !cnss[0].NotAfter.Equal(short.Certificates[0].NotAfter) {
		t.Fatalf("cnss: %+v, want one connection expiring %s", cnss, short.Certificates[0].NotAfter)
	}
	if len(gateway) != 1 || gateway[0].NotAfter.Before(cnss[0].NotAfter) {
		t.Fatalf("gateway: %+v", gateway)
	}
	gw.Close()
	bustest.Eventually(t, 10*time.Second, func() error {
		for _, p := range env.Server.PeerSVIDs() {
			if p.ID == env.ID("gateway").String() {
				return fmt.Errorf("a closed connection is still listed: %+v", p)
			}
		}
		return nil
	})
}
