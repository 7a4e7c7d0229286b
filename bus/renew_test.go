package bus_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
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

// A provider whose SVID is renewed under load reconnects without cutting a
// request it had received: its queue subscription (bus.QueueSubscribe)
// stops receiving first, the requests already received are answered on the
// connection that received them (the only one the server lets answer), and
// the requests sent meanwhile find no responder and are asked again (Call)
// until it has subscribed again. No call fails.
func TestAProviderReconnectingWithARenewedSVIDFailsNoRequest(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bustest.WithoutJetStream())
	id := env.ID("civil-registry")
	issue := func(ttl time.Duration) *x509svid.SVID {
		s, err := env.CA.Issue(id, devca.WithNotBefore(time.Now().Add(-time.Second)), devca.WithTTL(ttl+time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	src := &renewing{bundle: env.CA.Bundle()}
	src.cur.Store(issue(8 * time.Second))
	provider, err := env.Dial("civil-registry", src, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer provider.Close()
	cid, err := provider.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	// Each answer takes 50 ms, so that requests are always in flight.
	sub, err := bus.QueueSubscribe(provider, subject.ProviderQueries("civil-registry"), subject.ProviderQueue("civil-registry"), func(m *nats.Msg) {
		done := bus.Serving(provider)
		go func() {
			defer done()
			time.Sleep(50 * time.Millisecond)
			_ = bus.Respond(m, []byte("ok"), nil)
		}()
	}, 1<<16, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := bus.Flush(t.Context(), provider); err != nil {
		t.Fatal(err)
	}
	gw := env.Connect(t, "gateway")
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := bus.Call(ctx, gw, &nats.Msg{Subject: "jisr.p.civil-registry.jisr.civilregistry.v1.CivilRegistry.IsAlive.ck"})
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	bustest.Eventually(t, 10*time.Second, func() error {
		if ok.Load() < 20 {
			return errors.New("load not under way")
		}
		return nil
	})
	src.cur.Store(issue(time.Hour))
	bustest.Eventually(t, 10*time.Second, func() error {
		id, err := provider.GetClientID()
		if err != nil || id == cid || !provider.IsConnected() {
			return errors.New("not reconnected with the renewed SVID yet")
		}
		return nil
	})
	// Answers flow again after the reconnection.
	after := ok.Load()
	bustest.Eventually(t, 10*time.Second, func() error {
		if ok.Load() < after+40 {
			return errors.New("no answers after the reconnection")
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed across the provider's reconnection: %v", n, n+ok.Load(), firstErr.Load())
	}
	t.Logf("%d calls, none failed, across the provider's reconnection", ok.Load())
}
