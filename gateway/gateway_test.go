package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// recorder is an in-memory AuditLog: the gateway's own interface, so a test
// double here replaces no bus, TLS or crypto. It can be told to fail.
type recorder struct {
	mu   sync.Mutex
	recs []*decision.Decision
	fail bool
}

func (r *recorder) Append(_ context.Context, d *decision.Decision) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("audit store down")
	}
	c := *d
	r.recs = append(r.recs, &c)
	return nil
}

func (r *recorder) all() []*decision.Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*decision.Decision(nil), r.recs...)
}

// consents accepts the literal token "ok" (granting the fields in grant)
// and refuses anything else — the real verifier has its own tests.
type consents struct{ fields []string }

func (c consents) Verify(_ context.Context, r *decision.Request) (*decision.Grant, error) {
	if r.Token != "ok" {
		return nil, decision.Refuse(codes.Unauthenticated, "CONSENT_INVALID", "invalid consent token")
	}
	return &decision.Grant{TokenID: "jti-1", Fields: c.fields, LegalBasis: r.Rule.LegalBasis}, nil
}

type harness struct {
	env    *bustest.Env
	audit  *recorder
	cnss   *nats.Conn
	logs   *bytes.Buffer
	logsMu *sync.Mutex
	reg    *prometheus.Registry
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

const testEID = "BK482913"

var person = &civilv1.Person{Eid: testEID}

func start(t *testing.T, grant []string, provider func(m *nats.Msg), opts ...gateway.Option) *harness {
	t.Helper()
	env := bustest.Start(t)
	h := &harness{env: env, audit: &recorder{}, logs: &bytes.Buffer{}, logsMu: &sync.Mutex{}, reg: prometheus.NewRegistry()}
	log := slog.New(slog.NewTextHandler(lockedWriter{h.logsMu, h.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"),
		Consent: consents{fields: grant}, Audit: h.audit, Log: log,
		Registerer: h.reg,
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(ctx) })
	if provider != nil {
		cr := env.Connect(t, "civil-registry")
		if _, err := cr.QueueSubscribe("jisr.p.civil-registry.>", "p", provider); err != nil {
			t.Fatal(err)
		}
		cr.Flush()
	}
	h.cnss = env.Connect(t, "cnss")
	return h
}

// answer is a provider that returns a full person record.
func answer(m *nats.Msg) {
	var req civilv1.GetPersonRequest
	if err := proto.Unmarshal(m.Data, &req); err != nil {
		bus.RespondError(m, status.Error(codes.InvalidArgument, "bad request"))
		return
	}
	p := &civilv1.Person{
		Eid:           req.GetEid(),
		Names:         &civilv1.Names{Latin: &jisrv1.Name{Given: "Amina", Family: "El Idrissi"}, Arabic: &jisrv1.Name{Given: "أمينة", Family: "الإدريسي"}},
		FatherName:    "Mohammed",
		MotherName:    "Fatima",
		MaritalStatus: civilv1.MaritalStatus_MARITAL_STATUS_MARRIED,
	}
	b, _ := proto.Marshal(&civilv1.GetPersonResponse{Person: p})
	bus.Respond(m, b, nil)
}

func (h *harness) call(t *testing.T, eid, subjEID, method, purpose, token string, payload []byte) (*nats.Msg, error) {
	t.Helper()
	if payload == nil {
		payload, _ = proto.Marshal(&civilv1.GetPersonRequest{Eid: eid})
	}
	subj, err := subject.Query{
		Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: method, CKey: h.env.Keyer.CKey(subjEID),
	}.Subject()
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: subj, Data: payload, Header: nats.Header{}}
	if purpose != "" {
		msg.Header.Set(bus.HeaderPurpose, purpose)
	}
	if token != "" {
		msg.Header.Set(bus.HeaderConsent, token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return bus.Call(ctx, h.cnss, msg)
}

func TestAllowedQueryIsForwardedMinimisedAndAudited(t *testing.T) {
	t.Parallel()
	h := start(t, []string{"person.eid", "person.names.latin", "person.marital_status", "person.father_name"}, answer)
	reply, err := h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", nil)
	if err != nil {
		t.Fatal(err)
	}
	var resp civilv1.GetPersonResponse
	if err := proto.Unmarshal(reply.Data, &resp); err != nil {
		t.Fatal(err)
	}
	p := resp.GetPerson()
	if p.GetNames().GetLatin().GetGiven() != "Amina" || p.GetMaritalStatus() != civilv1.MaritalStatus_MARITAL_STATUS_MARRIED {
		t.Fatalf("granted fields missing: %v", p)
	}
	// father_name is granted by the token but not by the rule; Arabic names
	// and mother_name by neither: all absent.
	if p.GetNames().GetArabic() != nil || p.GetFatherName() != "" || p.GetMotherName() != "" {
		t.Fatalf("fields outside rule ∩ consent were released: %v", p)
	}
	recs := h.audit.all()
	if len(recs) != 1 {
		t.Fatalf("%d audit records, want 1", len(recs))
	}
	r := recs[0]
	if !r.Allowed || r.Code != codes.OK || r.Consumer != "cnss" || r.Provider != "civil-registry" || r.Method != "GetPerson" ||
		r.LegalBasis != "consent" || r.TokenID != "jti-1" || r.CKey != h.env.Keyer.CKey(testEID) || r.Purpose != "amo-enrolment" {
		t.Fatalf("audit record %+v", r)
	}
	if strings.Join(r.Fields, ",") != "person.eid,person.marital_status,person.names.latin.family,person.names.latin.given" {
		t.Fatalf("fields released %v", r.Fields)
	}
}

func TestMandateNeedsNoToken(t *testing.T) {
	t.Parallel()
	h := start(t, nil, func(m *nats.Msg) {
		b, _ := proto.Marshal(&civilv1.IsAliveResponse{Alive: true})
		bus.Respond(m, b, nil)
	})
	payload, _ := proto.Marshal(&civilv1.IsAliveRequest{Eid: testEID})
	reply, err := h.call(t, testEID, testEID, "IsAlive", "pension-continuity", "", payload)
	if err != nil {
		t.Fatal(err)
	}
	var resp civilv1.IsAliveResponse
	proto.Unmarshal(reply.Data, &resp)
	if !resp.GetAlive() {
		t.Fatal("predicate answer lost")
	}
	r := h.audit.all()[0]
	if r.LegalBasis != "mandate" || !strings.Contains(r.Law, "CNSS") || r.TokenID != "" {
		t.Fatalf("record %+v", r)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	h := start(t, nil, answer)
	long := strings.Repeat("A", 10<<10)
	for _, tc := range []struct {
		name                 string
		eid, subjEID, method string
		purpose, token       string
		payload              []byte
		code                 codes.Code
		reason               string
	}{
		{"no consent", testEID, testEID, "GetPerson", "amo-enrolment", "", nil, codes.Unauthenticated, decision.ReasonConsentRequired},
		{"bad consent", testEID, testEID, "GetPerson", "amo-enrolment", "forged", nil, codes.Unauthenticated, "CONSENT_INVALID"},
		{"no purpose", testEID, testEID, "GetPerson", "", "ok", nil, codes.InvalidArgument, decision.ReasonPurposeMissing},
		{"purpose not in rule", testEID, testEID, "GetPerson", "marketing", "ok", nil, codes.PermissionDenied, decision.ReasonPurposeNotAllowed},
		{"method not in any rule", testEID, testEID, "GetBirthAct", "amo-enrolment", "ok", nil, codes.PermissionDenied, decision.ReasonNoRule},
		{"unknown method", testEID, testEID, "DropTables", "amo-enrolment", "ok", nil, codes.NotFound, decision.ReasonUnknownMethod},
		{"ckey of another citizen", testEID, "ZZ999999", "GetPerson", "amo-enrolment", "ok", nil, codes.InvalidArgument, decision.ReasonCKeyMismatch},
		{"eid with dot", "AB.123", "AB.123", "GetPerson", "amo-enrolment", "ok", nil, codes.InvalidArgument, decision.ReasonBadEID},
		{"eid with wildcard", "AB*", "AB", "GetPerson", "amo-enrolment", "ok", nil, codes.InvalidArgument, decision.ReasonBadEID},
		{"eid with space", "AB 12", "AB12", "GetPerson", "amo-enrolment", "ok", nil, codes.InvalidArgument, decision.ReasonBadEID},
		{"eid non-ascii", "ÄB123", "AB123", "GetPerson", "amo-enrolment", "ok", nil, codes.InvalidArgument, decision.ReasonBadEID},
		{"eid of 10 KB", long, "AB123", "GetPerson", "amo-enrolment", "ok", nil, codes.InvalidArgument, decision.ReasonBadEID},
		{"malformed protobuf", testEID, testEID, "GetPerson", "amo-enrolment", "ok", []byte{0xff, 0xff, 0xff}, codes.InvalidArgument, decision.ReasonMalformedPayload},
		{"no eid", testEID, testEID, "GetPerson", "amo-enrolment", "ok", []byte{}, codes.InvalidArgument, decision.ReasonBadEID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.call(t, tc.eid, tc.subjEID, tc.method, tc.purpose, tc.token, tc.payload)
			st := status.Convert(err)
			if st.Code() != tc.code || decision.ReasonOf(st) != tc.reason {
				t.Fatalf("got %v %q (%s); want %v %q", st.Code(), decision.ReasonOf(st), st.Message(), tc.code, tc.reason)
			}
			for _, e := range []string{tc.eid, strings.ToUpper(tc.eid)} {
				if len(e) > 3 && strings.Contains(st.Message(), e) {
					t.Fatalf("status message %q contains the eID", st.Message())
				}
			}
		})
	}
	recs := h.audit.all()
	if len(recs) != 14 {
		t.Fatalf("%d audit records for 14 refusals", len(recs))
	}
	for _, r := range recs {
		if r.Allowed || r.Reason == "" || r.Code == codes.OK {
			t.Errorf("refusal recorded as %+v", r)
		}
		if r.CKey != "" && r.CKey != h.env.Keyer.CKey(testEID) && len(r.CKey) != 52 {
			t.Errorf("record carries a ckey that is not a ckey: %q", r.CKey)
		}
	}
	h.logsMu.Lock()
	defer h.logsMu.Unlock()
	for _, e := range []string{testEID, "ZZ999999"} {
		if strings.Contains(h.logs.String(), e) {
			t.Fatalf("gateway logs contain the eID %s", e)
		}
	}
}

func TestProviderDownSlowOrLeaky(t *testing.T) {
	t.Parallel()
	t.Run("no provider connected", func(t *testing.T) {
		h := start(t, nil, nil)
		_, err := h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", nil)
		if st := status.Convert(err); st.Code() != codes.Unavailable || decision.ReasonOf(st) != decision.ReasonProviderUnavailable {
			t.Fatalf("got %v %s", st.Code(), st.Message())
		}
		// An outage is the provider's failure, not a policy refusal: the
		// refusal-rate alert (decision="refused") must not count it.
		bustest.Eventually(t, 10*time.Second, func() error {
			got := queryDecisions(t, h.reg)
			if got["provider_failed"] == 1 && got["refused"] == 0 {
				return nil
			}
			return fmt.Errorf("jisr_gateway_queries_total by decision: %v, want one provider_failed and no refused", got)
		})
	})
	t.Run("slow provider", func(t *testing.T) {
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		h := start(t, nil, func(m *nats.Msg) { <-release })
		subj, _ := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry", Method: "GetPerson", CKey: h.env.Keyer.CKey(testEID)}.Subject()
		payload, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: testEID})
		msg := &nats.Msg{Subject: subj, Data: payload, Header: nats.Header{}}
		msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
		msg.Header.Set(bus.HeaderConsent, "ok")
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		begin := time.Now()
		_, err := bus.Call(ctx, h.cnss, msg)
		if st := status.Convert(err); st.Code() != codes.DeadlineExceeded {
			t.Fatalf("got %v %s", st.Code(), st.Message())
		}
		if time.Since(begin) > 3*time.Second {
			t.Fatal("the caller waited far past its deadline")
		}
		// The gateway honoured the same deadline and audited the failure.
		bustest.Eventually(t, 10*time.Second, func() error { return bustest.Check(len(h.audit.all()) > 0, "the audit record") })
		if recs := h.audit.all(); len(recs) != 1 || recs[0].Code != codes.DeadlineExceeded {
			t.Fatalf("records %+v", recs)
		}
	})
	t.Run("provider error that names the citizen", func(t *testing.T) {
		h := start(t, nil, func(m *nats.Msg) {
			bus.RespondError(m, status.Error(codes.NotFound, "no person with eid "+testEID))
		})
		_, err := h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", nil)
		st := status.Convert(err)
		if st.Code() != codes.NotFound || strings.Contains(st.Message(), testEID) || decision.ReasonOf(st) != decision.ReasonProviderNotFound {
			t.Fatalf("got %v %q %q", st.Code(), st.Message(), decision.ReasonOf(st))
		}
	})
}

// queryDecisions sums jisr_gateway_queries_total by its decision label.
func queryDecisions(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "jisr_gateway_queries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "decision" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func TestAuditDownWithholdsTheReply(t *testing.T) {
	t.Parallel()
	h := start(t, nil, answer)
	h.audit.fail = true
	reply, err := h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", nil)
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || decision.ReasonOf(st) != decision.ReasonAuditUnavailable || reply != nil {
		t.Fatalf("got %v %s, reply %v", st.Code(), st.Message(), reply)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	if _, err := gateway.New(gateway.Config{}); !errors.Is(err, gateway.ErrConfig) {
		t.Fatalf("err = %v", err)
	}
}
