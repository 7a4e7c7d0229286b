package gateway_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/decision"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// discard is an AuditLog that keeps nothing: the benchmark measures the
// gateway's decision path, not an audit store (package audit has its own).
type discard struct{}

func (discard) Append(context.Context, *decision.Decision) error { return nil }

// BenchmarkAllowedQuery is one allowed, consented, minimised query through
// real NATS, the gateway and an in-process provider, at the log level a
// deployment runs (info). allocs/op counts the whole process: caller,
// gateway and provider.
func BenchmarkAllowedQuery(b *testing.B) {
	env := bustest.Start(b)
	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(b, "gateway"),
		Consent: consents{fields: []string{"person.eid", "person.names.latin", "person.marital_status"}}, Audit: discard{},
		Log: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { gw.Stop(ctx) })
	cr := env.Connect(b, "civil-registry")
	if _, err := cr.QueueSubscribe("jisr.p.civil-registry.>", "p", answer); err != nil {
		b.Fatal(err)
	}
	cr.Flush()
	nc := env.Connect(b, "cnss")
	payload, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: testEID})
	subj, err := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: "GetPerson", CKey: env.Keyer.CKey(testEID)}.Subject()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		msg := &nats.Msg{Subject: subj, Data: payload, Header: nats.Header{}}
		msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
		msg.Header.Set(bus.HeaderConsent, "ok")
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := bus.Call(cctx, nc, msg); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}
