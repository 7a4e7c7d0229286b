package gateway_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/decision"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// A query whose reply subject is not its asker's inbox is dropped before
// any work: nothing is forwarded to the provider, nothing is answered, and
// the refusal is audited and counted with its own reason.
func TestQueryWithAForeignReplySubjectIsDroppedAndAudited(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"),
		Consent: consents{}, Audit: rec, Log: bustest.Logger(t), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(context.Background()) })
	forwarded := make(chan *nats.Msg, 16)
	cr := env.Connect(t, "civil-registry")
	if _, err := cr.ChanSubscribe("jisr.p.civil-registry.>", forwarded); err != nil {
		t.Fatal(err)
	}
	leaked := make(chan *nats.Msg, 16)
	tax := env.Connect(t, "tax")
	if _, err := tax.ChanSubscribe("_INBOX.tax.>", leaked); err != nil {
		t.Fatal(err)
	}
	for _, nc := range []*nats.Conn{cr, tax} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	cnss := env.Connect(t, "cnss")
	subj, err := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: "IsAlive", CKey: env.Keyer.CKey(testEID)}.Subject()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := proto.Marshal(&civilv1.IsAliveRequest{Eid: testEID})
	replies := []string{"_INBOX.tax.leak", "$JS.API.STREAM.DELETE.JISR_AUDIT", "$KV.jisr_usage.jti", "jisr.audit.gw-1.x",
		"jisr.q.tax.civil-registry.jisr_civilregistry_v1_CivilRegistry.IsAlive." + env.Keyer.CKey(testEID), "_INBOX.gateway.x", "", "_INBOX.cnss"}
	// And every subject the gateway's NATS user may publish on, taken from
	// the rendered permissions (wildcards made concrete) — the consent
	// service's API, the checkpoint subjects, flow control, each member's
	// inbox, provider subjects — but cnss's own inbox.
	for _, allow := range natsconf.Permissions(env.Fed)[env.Fed.ID("gateway").String()].PublishAllow {
		r := strings.NewReplacer("*", "x", ">", "x").Replace(allow)
		if subject.CheckReply(r, "cnss") != nil {
			replies = append(replies, r)
		}
	}
	// Whoever listens on those subjects hears nothing.
	cs := env.Connect(t, "consent")
	if _, err := cs.ChanSubscribe(subject.ConsentAPI+".>", leaked); err != nil {
		t.Fatal(err)
	}
	listeners := []*nats.Conn{cs}
	for _, m := range env.Fed.Members {
		if m.Name == "cnss" || m.Name == "tax" {
			continue
		}
		nc := env.Connect(t, m.Name)
		if _, err := nc.ChanSubscribe(subject.Inbox(m.Name)+".>", leaked); err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, nc)
	}
	for _, nc := range listeners {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range replies {
		h := nats.Header{}
		h.Set(bus.HeaderPurpose, "pension-continuity") // a mandate: it would be answered
		if err := cnss.PublishMsg(&nats.Msg{Subject: subj, Reply: r, Data: data, Header: h}); err != nil {
			t.Fatal(err)
		}
	}
	// Each is audited once the gateway has handled it.
	for len(rec.all()) < len(replies) {
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d refusals audited", len(rec.all()), len(replies))
		case <-time.After(10 * time.Millisecond):
		}
	}
	for _, d := range rec.all() {
		if d.Allowed || d.Reason != decision.ReasonBadReplySubject || d.Code != codes.PermissionDenied || d.Consumer != "cnss" || d.Provider != "" {
			t.Fatalf("record %+v", d)
		}
	}
	// The same query from cnss's own inbox is answered — and is the only
	// one the provider ever saw.
	// (Its own connection: nats-server counts a delivery to a second
	// subscription of the same connection against its one allowed response.)
	responder := env.Connect(t, "civil-registry")
	responder.Subscribe("jisr.p.civil-registry.>", func(m *nats.Msg) {
		b, _ := proto.Marshal(&civilv1.IsAliveResponse{Alive: true})
		bus.Respond(m, b, nil)
	})
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	h.Set(bus.HeaderPurpose, "pension-continuity")
	if _, err := bus.Call(ctx, cnss, &nats.Msg{Subject: subj, Data: data, Header: h}); err != nil {
		t.Fatal(err)
	}
	if err := cr.Flush(); err != nil { // the provider's copy is in the channel
		t.Fatal(err)
	}
	if n := len(forwarded); n != 1 {
		t.Fatalf("the provider saw %d queries, want 1", n)
	}
	for _, nc := range append(listeners, tax) {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if len(leaked) != 0 {
		m := <-leaked
		t.Fatalf("a forged reply reached %s", m.Subject)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var counted float64
	for _, mf := range mfs {
		if mf.GetName() == "jisr_gateway_bad_reply_subjects_total" {
			for _, m := range mf.GetMetric() {
				counted += m.GetCounter().GetValue()
			}
		}
	}
	if counted != float64(len(replies)) {
		t.Fatalf("jisr_gateway_bad_reply_subjects_total = %v, want %d", counted, len(replies))
	}
}
