package bus_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/certs/devca"
)

// renewing is an SVID source whose SVID the test renews, as SPIRE's agent does.
type renewing struct {
	cur    atomic.Pointer[x509svid.SVID]
	bundle *x509bundle.Bundle
}

func (r *renewing) GetX509SVID() (*x509svid.SVID, error) { return r.cur.Load(), nil }
func (r *renewing) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return r.bundle, nil
}
func (r *renewing) Close() error { return nil }

// A connection whose source renews its SVID reconnects with the new one on
// its own, before the SVID it was opened with expires (and the server would
// close it), and keeps its subscriptions.
func TestConnectionReconnectsWithTheRenewedSVIDBeforeExpiry(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bustest.WithoutJetStream())
	id := env.ID("cnss")
	issue := func(ttl time.Duration) *x509svid.SVID {
		s, err := env.CA.Issue(id, devca.WithNotBefore(time.Now().Add(-time.Second)), devca.WithTTL(ttl+time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	src := &renewing{bundle: env.CA.Bundle()}
	first := issue(8 * time.Second)
	src.cur.Store(first)
	nc, err := env.Dial("cnss", src, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync("_INBOX.cnss.renew"); err != nil {
		t.Fatal(err)
	}
	renewed := issue(time.Hour)
	src.cur.Store(renewed)
	bustest.Eventually(t, 8*time.Second, func() error {
		id, err := nc.GetClientID()
		if err != nil || id == cid || !nc.IsConnected() {
			return errors.New("not reconnected with the renewed SVID yet")
		}
		return nil
	})
	if time.Now().After(first.Certificates[0].NotAfter) {
		t.Fatal("reconnected only after the first SVID expired")
	}
	// The new connection presented the renewed SVID: the server does not
	// close it when the first one expires.
	after, _ := nc.GetClientID()
	time.Sleep(time.Until(first.Certificates[0].NotAfter) + time.Second)
	if id, _ := nc.GetClientID(); id != after || !nc.IsConnected() {
		t.Fatal("the connection was closed at the first SVID's expiry: it had not presented the renewed one")
	}
}
