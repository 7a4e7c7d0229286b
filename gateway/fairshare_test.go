package gateway_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/decision"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
)

// cnssLimits is CNSS's limits line in the test federation; the tests below
// replace it with the limits they need.
const cnssLimits = "limits: {queries_per_second: 10000, burst: 10000, in_flight: 1024}"

func withCNSSLimits(t *testing.T, limits string) []byte {
	t.Helper()
	y := string(bustest.FederationYAML())
	if !strings.Contains(y, cnssLimits) {
		t.Fatalf("the test federation no longer has CNSS's line %q", cnssLimits)
	}
	return []byte(strings.Replace(y, cnssLimits, "limits: "+limits, 1))
}

// fair is a gateway on a real bus, with its connection's health watched.
type fair struct {
	env         *bustest.Env
	audit       *recorder
	reg         *prometheus.Registry
	gwConn      *nats.Conn
	disconnects atomic.Int32
	asyncErrs   atomic.Int32
}

func startFair(t *testing.T, fedYAML []byte, cfg gateway.Config, provider func(*nats.Msg)) *fair {
	t.Helper()
	f := &fair{env: bustest.Start(t, bustest.WithFederation(fedYAML)), audit: &recorder{}, reg: prometheus.NewRegistry()}
	f.gwConn = f.env.Connect(t, "gateway",
		nats.DisconnectErrHandler(func(*nats.Conn, error) { f.disconnects.Add(1) }),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) { f.asyncErrs.Add(1) }))
	cfg.Federation, cfg.Keyer, cfg.Conn = f.env.Fed, f.env.Keyer, f.gwConn
	cfg.Consent, cfg.Audit, cfg.Registerer = consents{}, f.audit, f.reg
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(ctx) })
	if provider != nil {
		cr := f.env.Connect(t, "civil-registry")
		if _, err := cr.QueueSubscribe("jisr.p.civil-registry.>", "p", provider); err != nil {
			t.Fatal(err)
		}
		if err := cr.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// getPerson is a CNSS query for GetPerson, its payload padded with pad bytes
// of an unknown protobuf field (still a valid request).
func (f *fair) getPerson(t testing.TB, pad int) *nats.Msg {
	t.Helper()
	b, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: testEID})
	if pad > 0 {
		b = protowire.AppendTag(b, 9999, protowire.BytesType)
		b = protowire.AppendBytes(b, make([]byte, pad))
	}
	msg := &nats.Msg{
		Subject: "jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson." + f.env.Keyer.CKey(testEID),
		Data:    b, Header: nats.Header{},
	}
	msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
	msg.Header.Set(bus.HeaderConsent, "ok")
	return msg
}

func call(nc *nats.Conn, msg *nats.Msg, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := bus.Call(ctx, nc, msg)
	return err
}

// metric reads one unlabelled gauge or counter of the gateway's registry.
func (f *fair) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// closedReasons names the closed connections and why the server closed them.
func (f *fair) closedReasons(t *testing.T) string {
	cz, err := f.env.Server.NATS().Connz(&server.ConnzOptions{State: server.ConnClosed, Username: true})
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, c := range cz.Conns {
		out = append(out, c.AuthorizedUser+": "+c.Reason)
	}
	return strings.Join(out, "; ")
}

// waitRefusals waits for n audit records of early refusals and returns them.
func (f *fair) waitRefusals(t *testing.T, n int) []*decision.Decision {
	t.Helper()
	var got []*decision.Decision
	bustest.Eventually(t, 20*time.Second, func() error {
		got = got[:0]
		for _, r := range f.audit.all() {
			if r.Code == codes.ResourceExhausted {
				got = append(got, r)
			}
		}
		if len(got) < n {
			return fmt.Errorf("%d audit records of ResourceExhausted refusals, want %d", len(got), n)
		}
		return nil
	})
	if len(got) != n {
		t.Fatalf("%d audit records of ResourceExhausted refusals, want %d", len(got), n)
	}
	return got
}

// Each limit refuses at once, with ResourceExhausted and its reason, and the
// refusal is audited with the member, provider and method named. A provider
// that holds its queries fills the in-flight slots deterministically.
func TestFairShareRefusesEarlyAndAudits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, limits string
		maxInFlight  int
		hold         int // queries the provider holds before the refused one
		pad          int
		reason       string
	}{
		{"request too large", "{max_request_bytes: 4096}", 0, 0, 8192, decision.ReasonRequestTooLarge},
		{"member in flight", "{in_flight: 2}", 0, 2, 0, decision.ReasonTooManyInFlight},
		{"gateway at capacity", "{in_flight: 50}", 2, 2, 0, decision.ReasonOverloaded},
		{"rate", "{queries_per_second: 0.001, burst: 1}", 0, 1, 0, decision.ReasonRateLimited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			held := make(chan struct{}, 16)
			f := startFair(t, withCNSSLimits(t, tc.limits), gateway.Config{MaxInFlight: tc.maxInFlight}, func(m *nats.Msg) {
				go func() { // the subscription delivers one at a time: hold each in its own goroutine
					held <- struct{}{}
					<-release
					answer(m)
				}()
			})
			cnss := f.env.Connect(t, "cnss")
			var wg sync.WaitGroup
			errs := make(chan error, tc.hold)
			for range tc.hold {
				wg.Add(1)
				go func() { defer wg.Done(); errs <- call(cnss, f.getPerson(t, 0), 10*time.Second) }()
				select {
				case <-held:
				case <-time.After(10 * time.Second):
					t.Fatal("the provider did not receive the held query")
				}
			}
			err := call(cnss, f.getPerson(t, tc.pad), 5*time.Second)
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("held query: %v", err)
				}
			}
			st := status.Convert(err)
			if st.Code() != codes.ResourceExhausted || decision.ReasonOf(st) != tc.reason {
				t.Fatalf("got %v %q (%s); want ResourceExhausted %s", st.Code(), decision.ReasonOf(st), st.Message(), tc.reason)
			}
			r := f.waitRefusals(t, 1)[0]
			if r.Allowed || r.Reason != tc.reason || r.Consumer != "cnss" || r.Provider != "civil-registry" ||
				r.Method != "GetPerson" || r.Purpose != "amo-enrolment" || r.CKey != "" || r.Time.IsZero() {
				t.Errorf("refusal recorded as %+v", r)
			}
			if n := f.metric(t, "jisr_gateway_shed_total"); n != 1 {
				t.Errorf("jisr_gateway_shed_total %v, want 1", n)
			}
		})
	}
}

// A member may publish only on jisr.q.<itself>.>, but may put wildcards in
// the rest: the refusal names it.
func TestWildcardSubjectIsAuditedWithItsMember(t *testing.T) {
	t.Parallel()
	h := start(t, nil, answer)
	for _, subj := range []string{
		"jisr.q.cnss.civil-registry.*.GetPerson." + h.env.Keyer.CKey(testEID),
		"jisr.q.cnss.>",
		"jisr.q.cnss.*",
	} {
		msg := &nats.Msg{Subject: subj, Data: []byte{}, Header: nats.Header{}}
		msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
		err := call(h.cnss, msg, 5*time.Second)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || decision.ReasonOf(st) != decision.ReasonBadSubject {
			t.Errorf("%s: %v", subj, err)
		}
	}
	recs := h.audit.all()
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	for _, r := range recs {
		if r.Consumer != "cnss" || r.Reason != decision.ReasonBadSubject || r.Allowed {
			t.Errorf("record %+v; want the member cnss named", r)
		}
	}
}

// The flood: 300 queries of about 1 MiB at once from CNSS. Meanwhile the
// health ministry's legitimate calls all succeed within their deadline; the
// gateway is never disconnected (no disconnect, no slow consumer on the
// server, nothing dropped by its client); every flood query is answered —
// refused with ResourceExhausted and its reason, and audited, or, within
// CNSS's share, decided.
//
// Memory bound: what the gateway holds of queries is what waits for dispatch,
// at most PendingBytes (64 MiB by default), plus what it is
// deciding, at most each member's in_flight × max_request_bytes (4 MiB for
// CNSS in the second row). The test checks the high-water mark of the first.
func TestFloodFromOneMemberLeavesOthersTheirShare(t *testing.T) {
	t.Parallel()
	const (
		flood        = 300
		pad          = 1<<20 - 4<<10 // the request is just under NATS's 1 MiB max_payload
		pendingBytes = 64 << 20      // the default
	)
	for _, tc := range []struct {
		name, limits string
		reasons      []string // a refused flood query has one of these
		allRefused   bool
	}{
		{"over the size limit", "{queries_per_second: 10000, burst: 10000, in_flight: 1024, max_request_bytes: 65536}",
			[]string{decision.ReasonRequestTooLarge}, true},
		{"within the size limit", "{queries_per_second: 1, burst: 4, in_flight: 4, max_request_bytes: 1048576}",
			[]string{decision.ReasonRateLimited, decision.ReasonTooManyInFlight}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFair(t, withCNSSLimits(t, tc.limits), gateway.Config{PendingBytes: pendingBytes}, answer)
			// CNSS also provides IsInsured to the health ministry.
			cnssProvider := f.env.Connect(t, "cnss")
			if _, err := cnssProvider.Subscribe("jisr.p.cnss.>", func(m *nats.Msg) {
				b, _ := proto.Marshal(&cnssv1.IsInsuredResponse{Insured: true})
				bus.Respond(m, b, nil)
			}); err != nil {
				t.Fatal(err)
			}
			if err := cnssProvider.Flush(); err != nil {
				t.Fatal(err)
			}
			attacker := f.env.Connect(t, "cnss")
			health := f.env.Connect(t, "health")
			insured := func() *nats.Msg {
				b, _ := proto.Marshal(&cnssv1.IsInsuredRequest{Eid: testEID})
				m := &nats.Msg{Subject: "jisr.q.health.cnss.jisr_cnss_v1_SocialSecurity.IsInsured." + f.env.Keyer.CKey(testEID), Data: b, Header: nats.Header{}}
				m.Header.Set(bus.HeaderPurpose, "care-eligibility")
				m.Header.Set(bus.HeaderConsent, "ok")
				return m
			}
			if err := call(health, insured(), 5*time.Second); err != nil {
				t.Fatalf("health before the flood: %v", err)
			}

			var wg sync.WaitGroup
			results := make([]error, flood)
			big := f.getPerson(t, pad).Data // one payload, sent 300 times
			for i := range flood {
				wg.Add(1)
				go func() {
					defer wg.Done()
					m := f.getPerson(t, 0)
					m.Data = big
					// The attacker's own queries may wait long on a loaded
					// machine (-race, 2 cores): each is answered or refused
					// in the end, which is what is checked below.
					results[i] = call(attacker, m, 90*time.Second)
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			// Health calls at 50 a second, within its share (100/s, burst 200).
			pace := time.NewTicker(20 * time.Millisecond)
			defer pace.Stop()
			legit := 0
			for flooding := true; flooding || legit < 10; legit++ {
				<-pace.C
				if err := call(health, insured(), bus.DefaultTimeout); err != nil {
					t.Fatalf("health's call %d during the flood: %v (connections closed: %s)", legit, err, f.closedReasons(t))
				}
				select {
				case <-done:
					flooding = false
				default:
				}
			}

			refused := map[string]int{}
			n := 0
			for i, err := range results {
				st := status.Convert(err)
				switch {
				case err == nil && !tc.allRefused:
				case st.Code() == codes.ResourceExhausted && contains(tc.reasons, decision.ReasonOf(st)):
					refused[decision.ReasonOf(st)]++
					n++
				default:
					t.Fatalf("flood query %d: %v %q %v", i, st.Code(), decision.ReasonOf(st), err)
				}
			}
			if n == 0 {
				t.Fatal("no flood query was refused")
			}
			t.Logf("%d legitimate calls during the flood; flood refusals %v", legit, refused)
			recs := f.waitRefusals(t, n)
			audited := map[string]int{}
			for _, r := range recs {
				if r.Consumer != "cnss" || r.Method != "GetPerson" {
					t.Fatalf("refusal recorded as %+v", r)
				}
				audited[r.Reason]++
			}
			if fmt.Sprint(audited) != fmt.Sprint(refused) {
				t.Errorf("audited refusals %v, answered %v", audited, refused)
			}

			if d := f.disconnects.Load(); d != 0 || !f.gwConn.IsConnected() {
				t.Errorf("the gateway was disconnected %d times: %s", d, f.closedReasons(t))
			}
			if e := f.asyncErrs.Load(); e != 0 {
				t.Errorf("%d async errors (slow consumer?) on the gateway's connection", e)
			}
			vz, err := f.env.Server.NATS().Varz(&server.VarzOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if vz.SlowConsumers != 0 {
				t.Errorf("the server cut %d slow consumers", vz.SlowConsumers)
			}
			if d := f.metric(t, "jisr_gateway_dropped_total"); d != 0 {
				t.Errorf("the gateway's client dropped %v queries over its pending limits", d)
			}
			high := f.metric(t, "jisr_gateway_pending_bytes_max")
			t.Logf("pending high-water mark %.1f MiB (bound %d MiB) for %d MiB of flood", high/(1<<20), pendingBytes>>20, flood)
			if high > pendingBytes {
				t.Errorf("pending high-water mark %v over the bound %d", high, pendingBytes)
			}
		})
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// A query refused early (here: too large) whose reply subject is not the
// asker's own inbox gets no answer there: the refusal is audited, and no
// other member's inbox, nor any subject outside cnss's inbox, receives it.
func TestEarlyRefusalIsNeverAnsweredOnAForgedReply(t *testing.T) {
	f := startFair(t, withCNSSLimits(t, "{max_request_bytes: 4096}"), gateway.Config{}, answer)
	tax := f.env.Connect(t, "tax")
	leaked := make(chan *nats.Msg, 16)
	if _, err := tax.ChanSubscribe("_INBOX.tax.>", leaked); err != nil {
		t.Fatal(err)
	}
	if err := tax.Flush(); err != nil {
		t.Fatal(err)
	}
	cnss := f.env.Connect(t, "cnss")
	replies := []string{"_INBOX.tax.leak", "_INBOX.cnss.>", "_INBOX.cnss.*", "_INBOX.cnss..x",
		"_INBOX.cnss", "_INBOX.cnssx.a", "$KV.jisr_usage.x", "jisr.audit.gw-1.x", ""}
	for _, reply := range replies {
		msg := f.getPerson(t, 8192)
		msg.Reply = reply
		if err := cnss.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := cnss.Flush(); err != nil {
		t.Fatal(err)
	}
	f.waitRefusals(t, len(replies))
	// Control: the same refusal on cnss's own inbox is answered, after all
	// of the above were handled (the subscription delivers in order).
	err := call(cnss, f.getPerson(t, 8192), 5*time.Second)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted {
		t.Fatalf("control: %v", err)
	}
	if err := tax.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-leaked:
		t.Fatalf("an early refusal reached tax's inbox on %s", m.Subject)
	default:
	}
	if n := f.asyncErrs.Load(); n != 0 {
		t.Fatalf("the gateway's connection saw %d errors (a publish it may not make?)", n)
	}
}
