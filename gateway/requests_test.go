package gateway_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/decision"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// requests records what reaches the consent service's side.
type requests struct {
	mu    sync.Mutex
	asked []string // consumer + " " + ckey
}

func (r *requests) RequestConsent(_ context.Context, consumer, ckey string, in *consentv1.RequestConsentRequest) (*consentv1.ConsentRequest, error) {
	r.mu.Lock()
	r.asked = append(r.asked, consumer+" "+ckey)
	r.mu.Unlock()
	return &consentv1.ConsentRequest{Id: "req-1", State: consentv1.ConsentState_CONSENT_STATE_PENDING, Purpose: in.GetPurpose()}, nil
}

func (r *requests) GetConsentRequest(context.Context, string, string, *consentv1.GetConsentRequestRequest) (*consentv1.ConsentRequest, error) {
	return &consentv1.ConsentRequest{Id: "req-1", State: consentv1.ConsentState_CONSENT_STATE_PENDING}, nil
}

func (r *requests) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.asked...)
}

// A consent request is a query like any other: the consumer is the one the
// subject names (NATS vouches for it), the citizen's ckey must be the
// payload eID's, the payload must parse; only then does the consent
// service hear of it. Every outcome is audited, with no string the
// consumer chose beyond a well-formed purpose.
func TestConsentRequestsAreCheckedLikeQueries(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	audit, reqs := &recorder{}, &requests{}
	newGW := func(r gateway.ConsentRequests) {
		gw, err := gateway.New(gateway.Config{
			Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"), Consent: consents{}, Audit: audit,
			Log: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(), Requests: r,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := gw.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { gw.Stop(context.Background()) })
	}
	newGW(reqs)
	cnss := env.Connect(t, "cnss")
	ask := func(method, subjEID string, payload []byte) error {
		subj, err := subject.Query{Consumer: "cnss", Provider: subject.ConsentProvider, Service: "jisr_consent_v1_ConsentRequests",
			Method: method, CKey: env.Keyer.CKey(subjEID)}.Subject()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err = bus.Call(ctx, cnss, &nats.Msg{Subject: subj, Data: payload, Header: nats.Header{}})
		return err
	}
	good, _ := proto.Marshal(&consentv1.RequestConsentRequest{Eid: testEID, Service: "jisr.civilregistry.v1.CivilRegistry",
		Methods: []string{"GetPerson"}, Purpose: "amo-enrolment"})
	hostile, _ := proto.Marshal(&consentv1.RequestConsentRequest{Eid: testEID, Purpose: "amo\n<script>" + strings.Repeat("x", 5000), LegalBasis: "because"})
	for _, c := range []struct {
		name, method, subjEID string
		payload               []byte
		reason                string
	}{
		{"another citizen's ckey", "RequestConsent", "ZZ999999", good, decision.ReasonCKeyMismatch},
		{"not a request", "RequestConsent", testEID, []byte{0xff, 0x01, 0x02}, decision.ReasonMalformedPayload},
		{"unknown method", "Grant", testEID, good, decision.ReasonUnknownMethod},
	} {
		err := ask(c.method, c.subjEID, c.payload)
		if got := decision.ReasonOf(status.Convert(err)); got != c.reason {
			t.Errorf("%s: %v, want %s", c.name, err, c.reason)
		}
	}
	if s := reqs.seen(); len(s) != 0 {
		t.Fatalf("refused requests reached the consent service: %v", s)
	}
	if err := ask("RequestConsent", testEID, good); err != nil {
		t.Fatal(err)
	}
	if err := ask("RequestConsent", testEID, hostile); err != nil {
		t.Fatal(err)
	}
	if s := reqs.seen(); len(s) != 2 || s[0] != "cnss "+env.Keyer.CKey(testEID) {
		t.Fatalf("the consent service heard %v", s)
	}
	recs := audit.all()
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5", len(recs))
	}
	for _, r := range recs {
		if r.Consumer != "cnss" || r.Provider != subject.ConsentProvider {
			t.Errorf("record %+v", r)
		}
	}
	if last := recs[4]; !last.Allowed || last.Purpose != "" || last.LegalBasis != "" || last.Method != "RequestConsent" {
		t.Fatalf("hostile strings in the record: %+v", last)
	}
	if ok := recs[3]; !ok.Allowed || ok.Purpose != "amo-enrolment" || ok.CKey != env.Keyer.CKey(testEID) {
		t.Fatalf("record of the request %+v", ok)
	}

	// A gateway without the consent service refuses, fails closed.
	env2 := bustest.Start(t)
	env, audit = env2, &recorder{}
	newGW(nil)
	cnss = env.Connect(t, "cnss")
	if err := ask("RequestConsent", testEID, good); status.Code(err) != codes.Unavailable {
		t.Fatalf("without the consent service: %v", err)
	}
}
