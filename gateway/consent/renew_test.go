package consent_test

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

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

type renewing struct {
	cur    atomic.Pointer[x509svid.SVID]
	bundle *x509bundle.Bundle
}

func (r *renewing) GetX509SVID() (*x509svid.SVID, error) { return r.cur.Load(), nil }
func (r *renewing) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return r.bundle, nil
}
func (r *renewing) Close() error { return nil }

// The consent service reconnecting with a renewed SVID fails none of the
// gateway's consent API calls: its subscription is a bus.Responder (the
// requests already received are answered on the connection that received
// them, before it closes), and the gateway's client asks again a request
// that found no responder meanwhile (bus.Call). The calls are consumers'
// long polls, so that some are always in flight.
func TestTheConsentServiceReconnectingWithARenewedSVIDFailsNoCall(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	if err := consent.InitKeys(certs); err != nil {
		t.Fatal(err)
	}
	keys, err := consent.LoadKeys(certs)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ttl time.Duration) *x509svid.SVID {
		s, err := env.CA.Issue(env.ID("consent"), devca.WithNotBefore(time.Now().Add(-time.Second)), devca.WithTTL(ttl+time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	src := &renewing{bundle: env.CA.Bundle()}
	src.cur.Store(issue(8 * time.Second))
	cs, err := env.Dial("consent", src, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	cid, err := cs.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	store, err := consent.OpenStore(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.OpenRequests(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := consent.Serve(cs, &consent.Service{Issuer: consent.NewIssuer(keys, env.Fed.ID("consent")), Store: store, Keys: keys, Federation: env.Fed, Log: env.Log})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	gw := consent.NewClient(env.Connect(t, "gateway"))
	ckey := env.Keyer.CKey("BK482913")
	r, err := gw.Ask(ctx, "cnss", ckey, consent.AskRequest{Service: "jisr.civilregistry.v1.CivilRegistry",
		Methods: []string{"GetPerson"}, Purpose: "amo-enrolment", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := gw.Get(cctx, "cnss", ckey, r.ID, consent.StatePending, 100*time.Millisecond)
				ccancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	bustest.Eventually(t, 20*time.Second, func() error {
		return bustest.Check(ok.Load() >= 12, "load under way")
	})
	src.cur.Store(issue(time.Hour))
	bustest.Eventually(t, 20*time.Second, func() error {
		id, err := cs.GetClientID()
		if err != nil || id == cid || !cs.IsConnected() {
			return errors.New("not reconnected with the renewed SVID yet")
		}
		return nil
	})
	after := ok.Load()
	bustest.Eventually(t, 20*time.Second, func() error {
		return bustest.Check(ok.Load() >= after+12, "answers after the reconnection")
	})
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d consent API calls failed across the consent service's reconnection: %v", n, n+ok.Load(), firstErr.Load())
	}
	t.Logf("%d consent API calls, none failed, across the consent service's reconnection", ok.Load())
}
