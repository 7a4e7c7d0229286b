package gateway_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway"
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
