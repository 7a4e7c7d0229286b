package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/auditor"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/consent/service"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

type noProgress struct{}

func (noProgress) Start(string, uint64) {}
func (noProgress) Add(int)              {}

// The consent service stores EXPIRED and USED_UP itself and audits each
// in its own log, with two replicas running (either one alone carries on): the consumer's long poll
// follows every transition (ACTIVE, PAUSED, ACTIVE again, USED_UP,
// EXPIRED, REVOKED, REJECTED); the last of three uses, taken by eight
// goroutines on two gateway replicas, is taken once and USED_UP is
// recorded once; a consent that expired while every replica was stopped,
// and a transition stored but not yet audited when the service stopped,
// are caught up at the next start; the log verifies.
func TestSweeperStoresAndAuditsExpiredAndUsedUp(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	if err := consent.InitKeys(certs); err != nil {
		t.Fatal(err)
	}
	var transitions sync.Map // jti+state → count
	start := func() *service.Service {
		t.Helper()
		s, err := service.Start(ctx, service.Config{Federation: env.Fed, CertsDir: certs, Conn: env.Connect(t, "consent"), Log: env.Log},
			service.WithSweeperLease(2*time.Second), service.WithSweeperRetry(100*time.Millisecond),
			service.OnTransition(func(r consent.ConsentRequest) {
				n, _ := transitions.LoadOrStore(r.JTI+" "+r.State, new(atomic.Int32))
				n.(*atomic.Int32).Add(1)
				if r.State == consent.StateExpired {
					t.Logf("EXPIRED stored %v after the expiry", r.Updated.Sub(r.Expires)) // measured, not asserted
				}
			}))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := start(), start()
	// The gateway's side: the consumer's request and long poll, the
	// citizen's answers (through the consent API over NATS).
	gw := consent.NewClient(env.Connect(t, "gateway"))
	ckey := env.Keyer.CKey("BK482913")
	ask := func(ttl string, maxUses int) *consent.ConsentRequest {
		t.Helper()
		r, err := gw.Ask(ctx, "cnss", ckey, consent.AskRequest{Service: "jisr.civilregistry.v1.CivilRegistry",
			Methods: []string{"GetPerson"}, Fields: []string{"person.names"}, Purpose: "amo-enrolment", TTL: ttl, MaxUses: maxUses})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	approve := func(r *consent.ConsentRequest) string {
		t.Helper()
		out, err := gw.Decide(ctx, ckey, r.ID, consent.Decision{Approve: true})
		if err != nil || out.JTI == "" {
			t.Fatalf("approve: %v %v", out, err)
		}
		return out.JTI
	}
	// follow is the consumer's long poll: it returns the state after from.
	follow := func(r *consent.ConsentRequest, from string) *consent.ConsentRequest {
		t.Helper()
		got, err := gw.Get(ctx, "cnss", ckey, r.ID, from, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	insider, err := jetstream.New(env.Connect(t, "consent"))
	if err != nil {
		t.Fatal(err)
	}
	requests, err := insider.KeyValue(ctx, subject.RequestBucket)
	if err != nil {
		t.Fatal(err)
	}
	stored := func(id string) (consent.ConsentRequest, uint64) {
		t.Helper()
		e, err := requests.Get(ctx, ckey+"."+id)
		if err != nil {
			t.Fatal(err)
		}
		var r consent.ConsentRequest
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			t.Fatal(err)
		}
		return r, e.Revision()
	}
	storedAs := func(id, state string) func() error {
		return func() error {
			r, _ := stored(id)
			if r.State != state || r.Unaudited {
				return fmt.Errorf("stored %s (unaudited %v), want %s audited", r.State, r.Unaudited, state)
			}
			return nil
		}
	}

	// PENDING → ACTIVE (the token reaches the consumer), PAUSED, ACTIVE.
	r1 := ask("1h", 3)
	polled := make(chan *consent.ConsentRequest, 1)
	go func() {
		r, _ := gw.Get(ctx, "cnss", ckey, r1.ID, consent.StatePending, 20*time.Second)
		polled <- r
	}()
	jti1 := approve(r1)
	if got := <-polled; got == nil || got.State != consent.StateActive || got.Token == "" {
		t.Fatalf("the consumer's poll while pending: %+v", got)
	}
	if _, err := gw.SetPaused(ctx, ckey, jti1, true); err != nil {
		t.Fatal(err)
	}
	if got := follow(r1, consent.StateActive); got.State != consent.StatePaused {
		t.Fatalf("after the pause the consumer sees %s", got.State)
	}
	if _, err := gw.SetPaused(ctx, ckey, jti1, false); err != nil {
		t.Fatal(err)
	}
	if got := follow(r1, consent.StatePaused); got.State != consent.StateActive {
		t.Fatalf("after the resume the consumer sees %s", got.State)
	}

	// Three uses, eight goroutines on two gateway replicas: three succeed,
	// and USED_UP is stored and audited once.
	var replicas [2]*consent.Store
	for i := range replicas {
		if replicas[i], err = consent.OpenStore(ctx, env.Connect(t, "gateway")); err != nil {
			t.Fatal(err)
		}
	}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			err := replicas[i%2].Use(ctx, jti1, 3)
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, consent.ErrUsedUp):
				t.Errorf("use: %v", err)
			}
		})
	}
	wg.Wait()
	usesDone := time.Now()
	if ok.Load() != 3 {
		t.Fatalf("%d uses of 3 taken", ok.Load())
	}
	if got := follow(r1, consent.StateActive); got.State != consent.StateUsedUp {
		t.Fatalf("after the last use the consumer sees %s", got.State)
	}
	bustest.Eventually(t, 20*time.Second, storedAs(r1.ID, consent.StateUsedUp))
	r1s, _ := stored(r1.ID)
	t.Logf("USED_UP stored %v after the uses ended", r1s.Updated.Sub(usesDone)) // measured, not asserted
	// The citizen's list shows it used up (the page's USED_UP).
	gs, err := gw.List(ctx, ckey)
	if err != nil || len(gs) != 1 || gs[0].ID != jti1 || !gs[0].UsedUp {
		t.Fatalf("the citizen's consents: %+v %v", gs, err)
	}

	// ACTIVE → EXPIRED: the consumer sees it at the expiry; the sweeper,
	// woken by the earliest expiry, stores and audits it.
	r2 := ask("2s", 0)
	jti2 := approve(r2)
	if got := follow(r2, consent.StateActive); got.State != consent.StateExpired {
		t.Fatalf("after the expiry the consumer sees %s", got.State)
	}
	bustest.Eventually(t, 20*time.Second, storedAs(r2.ID, consent.StateExpired))

	// ACTIVE → REVOKED (final: never EXPIRED after), and PENDING → REJECTED.
	r3 := ask("3s", 0)
	jti3 := approve(r3)
	if _, err := gw.RevokeFor(ctx, ckey, jti3); err != nil {
		t.Fatal(err)
	}
	if got := follow(r3, consent.StateActive); got.State != consent.StateRevoked {
		t.Fatalf("after the revocation the consumer sees %s", got.State)
	}
	r4 := ask("1h", 0)
	if _, err := gw.Decide(ctx, ckey, r4.ID, consent.Decision{}); err != nil {
		t.Fatal(err)
	}
	if got := follow(r4, consent.StatePending); got.State != consent.StateRejected || got.Token != "" {
		t.Fatalf("after the rejection the consumer sees %s (token %q)", got.State, got.Token)
	}

	// One replica stops, then the other: whichever held the lease, the one
	// left sweeps.
	a.Stop()
	r7 := ask("1s", 0)
	jti7 := approve(r7)
	bustest.Eventually(t, 20*time.Second, storedAs(r7.ID, consent.StateExpired))
	a = start()
	b.Stop()
	r8 := ask("1s", 0)
	jti8 := approve(r8)
	bustest.Eventually(t, 20*time.Second, storedAs(r8.ID, consent.StateExpired))

	// Every replica stops: a consent expires meanwhile, and a transition
	// was stored but not audited (a sweeper that died between the two).
	r5 := ask("2s", 0)
	jti5 := approve(r5)
	r6 := ask("1h", 0)
	jti6 := approve(r6)
	a.Stop()
	half, rev := stored(r6.ID)
	half.State, half.Unaudited, half.Updated = consent.StateExpired, true, time.Now().UTC()
	raw, _ := json.Marshal(half)
	if _, err := requests.Update(ctx, ckey+"."+r6.ID, raw, rev); err != nil {
		t.Fatal(err)
	}
	r5s, _ := stored(r5.ID)
	bustest.Eventually(t, 10*time.Second, func() error {
		return bustest.Check(time.Now().After(r5s.Expires), "r5's expiry passed")
	})
	if r, _ := stored(r5.ID); r.State != consent.StateActive {
		t.Fatalf("stored %s with no consent service running", r.State)
	}
	c := start()
	bustest.Eventually(t, 20*time.Second, storedAs(r5.ID, consent.StateExpired))
	bustest.Eventually(t, 20*time.Second, storedAs(r6.ID, consent.StateExpired))
	// r3 was revoked before its expiry: it stays as it was stored.
	if r, _ := stored(r3.ID); r.State != consent.StateActive {
		t.Fatalf("a revoked consent was moved to %s", r.State)
	}
	c.Stop() // its final checkpoint

	// The consent service's log verifies, and holds each transition once.
	keys, err := checkpoint.LoadPublicKeys(filepath.Join(certs, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(verify.Config{TrustDomain: env.Fed.TrustDomain.Name(), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	streams, err := auditor.Open(ctx, env.Connect(t, "auditor"))
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Verify(ctx, v, noProgress{}); err != nil {
		t.Fatal(err)
	}
	rep := v.Finish()
	if !rep.OK() || len(rep.Logs) != 1 || rep.Logs[0].ID != consent.AuditLogID || rep.Logs[0].Checkpoints == 0 {
		t.Fatalf("verification: ok %v, problems %v, logs %+v", rep.OK(), rep.Problems, rep.Logs)
	}
	seen := map[string]int{}
	sel := &auditor.Selection{Log: consent.AuditLogID}
	if err := sel.Resolve(); err != nil {
		t.Fatal(err)
	}
	if err := streams.Query(ctx, sel, func(_ stream.Msg, r *auditv1.Record) error {
		if r.GetCkey() != ckey || r.GetReason() != consent.ReasonConsentTransition || r.GetConsumer() != "cnss" || r.GetPurpose() != "amo-enrolment" {
			t.Errorf("transition record %v", r)
		}
		seen[r.GetTokenId()+" "+r.GetMethod()]++
		return nil
	}, func(seq uint64) { t.Errorf("unreadable record at %d", seq) }); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		jti1 + " " + consent.TransitionUsedUp: 1, jti2 + " " + consent.TransitionExpired: 1,
		jti5 + " " + consent.TransitionExpired: 1, jti6 + " " + consent.TransitionExpired: 1,
		jti7 + " " + consent.TransitionExpired: 1, jti8 + " " + consent.TransitionExpired: 1,
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("transition records %v, want %v", seen, want)
	}
	n, _ := transitions.Load(jti1 + " " + consent.StateUsedUp)
	if n == nil || n.(*atomic.Int32).Load() != 1 {
		t.Fatalf("USED_UP recorded %v times", n)
	}
}

// Under the audit account (production: the audit streams in AUDIT), the
// consent service writes its log through the prefixed API, as the gateway
// does; the auditor, in AUDIT, reads the transition.
func TestSweeperUnderTheAuditAccount(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bustest.WithAuditAccount())
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := natsstate.InitSplit(ctx, env.Connect(t, "operator"), env.Connect(t, natsconf.AuditOperator), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	if err := consent.InitKeys(certs); err != nil {
		t.Fatal(err)
	}
	s, err := service.Start(ctx, service.Config{Federation: env.Fed, CertsDir: certs, Conn: env.Connect(t, "consent"), Log: env.Log,
		AuditAPIPrefix: natsconf.AuditAPIPrefix}, service.WithSweeperRetry(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	gw := consent.NewClient(env.Connect(t, "gateway"))
	ckey := env.Keyer.CKey("BK482913")
	r, err := gw.Ask(ctx, "cnss", ckey, consent.AskRequest{Service: "jisr.civilregistry.v1.CivilRegistry",
		Methods: []string{"GetPerson"}, Purpose: "amo-enrolment", TTL: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := gw.Decide(ctx, ckey, r.ID, consent.Decision{Approve: true})
	if err != nil {
		t.Fatal(err)
	}
	streams, err := auditor.Open(ctx, env.Connect(t, "auditor"))
	if err != nil {
		t.Fatal(err)
	}
	sel := &auditor.Selection{Log: consent.AuditLogID}
	if err := sel.Resolve(); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 20*time.Second, func() error {
		found := false
		err := streams.Query(ctx, sel, func(_ stream.Msg, rec *auditv1.Record) error {
			found = found || rec.GetMethod() == consent.TransitionExpired && rec.GetTokenId() == a.JTI
			return nil
		}, func(uint64) {})
		if err != nil {
			return err
		}
		return bustest.Check(found, "the expiry in the consent service's log, read by the auditor")
	})
	s.Stop()
}
