package gateway_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

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
	"github.com/jisr-bus/jisr/gateway/minimise"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

func withUnknown(m proto.Message, num protowire.Number, text string) {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	m.ProtoReflect().SetUnknown(protowire.AppendString(b, text))
}

// TestUnknownFieldsAreDroppedByTheGateway is issue 12's attack on the
// gateway alone: a provider on the bus (no adapter in between) returns
// field 40 inside person and field 31 at top level to a token limited to
// person.names; a consumer pads its request with field 9.
func TestUnknownFieldsAreDroppedByTheGateway(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	audit := &recorder{}
	reg := prometheus.NewRegistry()
	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"),
		Consent: consents{fields: []string{"person.names"}}, Audit: audit, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(ctx) })

	var mu sync.Mutex
	var seen [][]byte
	cr := env.Connect(t, "civil-registry")
	if _, err := cr.Subscribe("jisr.p.civil-registry.>", func(m *nats.Msg) {
		mu.Lock()
		seen = append(seen, m.Data)
		mu.Unlock()
		latin := &jisrv1.Name{Given: "Meryem", Family: "Alaoui"}
		names := &civilv1.Names{Latin: latin}
		p := &civilv1.Person{Eid: testEID, Names: names, FatherName: "Driss"}
		resp := &civilv1.GetPersonResponse{Person: p}
		withUnknown(resp, 31, "criminal-record=YES")
		withUnknown(p, 40, "diagnosis=HIV-POSITIVE")
		withUnknown(names, 41, "alias=X")
		withUnknown(latin, 42, "nickname=Y")
		b, _ := proto.Marshal(resp)
		bus.Respond(m, b, nil)
	}); err != nil {
		t.Fatal(err)
	}
	cr.Flush()
	h := &harness{env: env, audit: audit, cnss: env.Connect(t, "cnss")}

	req := &civilv1.GetPersonRequest{Eid: testEID}
	withUnknown(req, 9, strings.Repeat("padding", 100))
	payload, _ := proto.Marshal(req)
	reply, err := h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", payload)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"HIV", "criminal", "alias", "nickname", "Driss"} {
		if strings.Contains(string(reply.Data), bad) {
			t.Fatalf("released %q: %q", bad, reply.Data)
		}
	}
	var resp civilv1.GetPersonResponse
	if err := proto.Unmarshal(reply.Data, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.GetPerson().GetNames().GetLatin().GetGiven() != "Meryem" {
		t.Fatalf("granted field missing: %v", &resp)
	}
	want := []string{"person.names.latin.family", "person.names.latin.given"}
	recs := audit.all()
	if got := minimise.Released(resp.ProtoReflect()); !slices.Equal(got, want) || len(recs) != 1 || !slices.Equal(recs[0].Fields, want) {
		t.Fatalf("released %v, audited %v, want %v", got, recs[0].Fields, want)
	}
	mu.Lock()
	if len(seen) != 1 || strings.Contains(string(seen[0]), "padding") {
		t.Fatalf("the provider received the consumer's unknown fields: %q", seen)
	}
	mu.Unlock()
	if n := dropped(t, reg, "reply"); n != 4 {
		t.Errorf("unknown reply fields counted %v, want 4", n)
	}
	if n := dropped(t, reg, "request"); n != 1 {
		t.Errorf("unknown request fields counted %v, want 1", n)
	}
}

// dropped reads jisr_gateway_unknown_fields_dropped_total for cnss →
// civil-registry in one direction.
func dropped(t *testing.T, reg *prometheus.Registry, direction string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "jisr_gateway_unknown_fields_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["consumer"] == "cnss" && labels["provider"] == "civil-registry" && labels["direction"] == direction {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s counter", direction)
	return 0
}

// TestRelativesEIDsNeedTheRuleNotTheToken: under a rule that names no
// fields (the whole reply), a consent token whose fields name
// household.members.eid must not release relatives' eIDs: one citizen's
// consent does not reach their relatives; only the rule can name that field.
func TestRelativesEIDsNeedTheRuleNotTheToken(t *testing.T) {
	fed := strings.Replace(string(bustest.FederationYAML()), `    fields:
      - person.eid
      - person.names
      - person.sex
      - person.birth
      - person.vital_status
      - person.marital_status
      # The household's size and each member's relation to the citizen,
      # never the relatives' eIDs (household.members.eid is released only
      # where a rule names it).
      - household.members.relation
      - alive
      - married
`, "", 1)
	if fed == string(bustest.FederationYAML()) {
		t.Fatal("the test federation's cnss-civil-status fields were not found")
	}
	env := bustest.Start(t, bustest.WithFederation([]byte(fed)))
	audit := &recorder{}
	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"),
		Consent: consents{fields: []string{"household.members.eid", "household.members.relation"}}, Audit: audit,
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(ctx) })
	cr := env.Connect(t, "civil-registry")
	if _, err := cr.Subscribe("jisr.p.civil-registry.>", func(m *nats.Msg) {
		b, _ := proto.Marshal(&civilv1.GetHouseholdResponse{Household: &civilv1.Household{Members: []*civilv1.HouseholdMember{
			{Eid: testEID, Relation: civilv1.Relation_RELATION_HEAD},
			{Eid: "RELATIVE1", Relation: civilv1.Relation_RELATION_SPOUSE},
		}}})
		bus.Respond(m, b, nil)
	}); err != nil {
		t.Fatal(err)
	}
	cr.Flush()
	h := &harness{env: env, audit: audit, cnss: env.Connect(t, "cnss")}
	payload, _ := proto.Marshal(&civilv1.GetHouseholdRequest{Eid: testEID})
	reply, err := h.call(t, testEID, testEID, "GetHousehold", "amo-enrolment", "ok", payload)
	if err != nil {
		t.Fatal(err)
	}
	var resp civilv1.GetHouseholdResponse
	if err := proto.Unmarshal(reply.Data, &resp); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(reply.Data), "RELATIVE1") || strings.Contains(string(reply.Data), testEID) {
		t.Fatalf("a token released the household's eIDs that the rule does not name: %v", &resp)
	}
	if ms := resp.GetHousehold().GetMembers(); len(ms) != 2 || ms[1].GetRelation() != civilv1.Relation_RELATION_SPOUSE {
		t.Fatalf("the members' relations are missing: %v", &resp)
	}
	if recs := audit.all(); len(recs) != 1 || !slices.Equal(recs[0].Fields, []string{"household.members.relation"}) {
		t.Fatalf("audited %v", recs)
	}
}

// TestTheProviderGetsTheEIDTheGatewayChecked: a consumer spelling the eID
// another way ("  bk482913 ") gets the consent check of the normalised eID;
// the provider must receive that eID, not the consumer's spelling, which its
// own normalisation might read as someone else.
func TestTheProviderGetsTheEIDTheGatewayChecked(t *testing.T) {
	env := bustest.Start(t)
	audit := &recorder{}
	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"),
		Consent: consents{}, Audit: audit, Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(ctx) })
	got := make(chan string, 1)
	cr := env.Connect(t, "civil-registry")
	if _, err := cr.Subscribe("jisr.p.civil-registry.>", func(m *nats.Msg) {
		var req civilv1.GetPersonRequest
		_ = proto.Unmarshal(m.Data, &req)
		got <- req.GetEid()
		b, _ := proto.Marshal(&civilv1.GetPersonResponse{Person: &civilv1.Person{Eid: testEID}})
		bus.Respond(m, b, nil)
	}); err != nil {
		t.Fatal(err)
	}
	cr.Flush()
	h := &harness{env: env, audit: audit, cnss: env.Connect(t, "cnss")}
	if _, err := h.call(t, "  "+strings.ToLower(testEID)+" ", testEID, "GetPerson", "amo-enrolment", "ok", nil); err != nil {
		t.Fatal(err)
	}
	if eid := <-got; eid != testEID {
		t.Fatalf("the provider received the eID %q, want the normalised %q", eid, testEID)
	}
}

// TestAProviderErrorCarriesNoData: a provider that refuses with a status
// whose message carries citizen data (not the eID, so the eID filter does
// not see it) must not pass that data to the consumer: an error is a reply
// too, and minimisation cannot read free text.
func TestAProviderErrorCarriesNoData(t *testing.T) {
	h := start(t, []string{"person.names"}, func(m *nats.Msg) {
		bus.RespondError(m, status.Error(codes.FailedPrecondition, "Meryem Alaoui: diagnosis=HIV-POSITIVE criminal-record=YES"))
	})
	_, err := h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", nil)
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || decision.ReasonOf(st) != decision.ReasonProviderError {
		t.Fatalf("got %v %q (%s), want the provider's code with %s", st.Code(), decision.ReasonOf(st), st.Message(), decision.ReasonProviderError)
	}
	for _, bad := range []string{"HIV", "criminal", "Meryem"} {
		if strings.Contains(st.Message(), bad) || strings.Contains(fmt.Sprint(st.Details()), bad) {
			t.Fatalf("the provider's error passed %q to the consumer: %q %v", bad, st.Message(), st.Details())
		}
	}
}

// TestWireTricksInTheReplyAreDropped (phase 2 attack): a provider hides data
// in a reply where a descriptor-driven trim might not look — a known field
// number with the wrong wire type (father_name, 8, as a group holding the
// text; names, 2, as a fixed64), an unknown group at top level — for a
// token limited to person.names. Only the names leave; a string that is not UTF-8
// fails the whole reply rather than passing.
func TestWireTricksInTheReplyAreDropped(t *testing.T) {
	var bad bool
	var mu sync.Mutex
	h := start(t, []string{"person.names"}, func(m *nats.Msg) {
		mu.Lock()
		invalid := bad
		mu.Unlock()
		names, _ := proto.Marshal(&civilv1.Names{Latin: &jisrv1.Name{Given: "Meryem"}})
		var p []byte
		p = protowire.AppendTag(p, 2, protowire.BytesType)
		p = protowire.AppendBytes(p, names)
		// father_name as a group: not a string, so not "known".
		p = protowire.AppendTag(p, 8, protowire.StartGroupType)
		p = protowire.AppendTag(p, 1, protowire.BytesType)
		p = protowire.AppendString(p, "diagnosis=HIV-POSITIVE")
		p = protowire.AppendTag(p, 8, protowire.EndGroupType)
		// names as a fixed64.
		p = protowire.AppendTag(p, 2, protowire.Fixed64Type)
		p = protowire.AppendFixed64(p, 0x4956494e494d4952) // "RIMINIVI"
		// mother_name, a known string, holding bytes that are not UTF-8.
		if invalid {
			p = protowire.AppendTag(p, 9, protowire.BytesType)
			p = protowire.AppendBytes(p, []byte("criminal-record=YES\xff"))
		}
		var r []byte
		r = protowire.AppendTag(r, 1, protowire.BytesType)
		r = protowire.AppendBytes(r, p)
		r = protowire.AppendTag(r, 31, protowire.StartGroupType)
		r = protowire.AppendTag(r, 1, protowire.BytesType)
		r = protowire.AppendString(r, "criminal-record=YES")
		r = protowire.AppendTag(r, 31, protowire.EndGroupType)
		bus.Respond(m, r, nil)
	})
	reply, err := h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"HIV", "criminal", "RIMINIVI"} {
		if strings.Contains(string(reply.Data), s) {
			t.Fatalf("released %q: %q", s, reply.Data)
		}
	}
	var resp civilv1.GetPersonResponse
	if err := proto.Unmarshal(reply.Data, &resp); err != nil || resp.GetPerson().GetNames().GetLatin().GetGiven() != "Meryem" || len(resp.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("reply %v, %v", &resp, err)
	}
	mu.Lock()
	bad = true
	mu.Unlock()
	reply, err = h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", nil)
	if err == nil {
		t.Fatalf("a reply with a string that is not UTF-8 passed: %q", reply.Data)
	}
	if strings.Contains(err.Error(), "criminal") {
		t.Fatalf("the refusal carries the data: %v", err)
	}
}
