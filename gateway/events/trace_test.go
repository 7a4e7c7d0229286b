package events_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/gateway/events"
)

// TestEventTraces: a publication is traced like a query — the gateway's
// span is the root of a trace of its own, linked to the publisher's span;
// every delivery's audit record names that trace, and the delivery stored in
// the consumer's stream carries it (traceparent) to the consumer's adapter.
func TestEventTraces(t *testing.T) {
	mem := telemetry.NewMemory(1000)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(mem))
	f := startWith(t, bustest.Start(t), func(c *events.Config) { c.TracerProvider = tp })
	ctx, root := tp.Tracer("test").Start(t.Context(), "civil registry adapter")
	ev := died("death-traced-00000001", "ab123")
	subj, _ := subject.Event{Publisher: "civil-registry", Type: "PersonDied", CKey: f.env.Keyer.CKey("AB123")}.Subject()
	data, _ := proto.Marshal(ev)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := bus.Call(cctx, f.env.Connect(t, "civil-registry"), &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}, bus.WithTracerProvider(tp)); err != nil {
		t.Fatal(err)
	}
	root.End()
	caller := root.SpanContext().TraceID().String()

	recs := f.audit.list()
	if len(recs) != 2 {
		t.Fatalf("%d records, want the two deliveries'", len(recs))
	}
	tid := recs[0].TraceID
	if len(tid) != 32 || tid == caller || recs[1].TraceID != tid {
		t.Fatalf("records' trace ids %q, %q: want one trace of the gateway's own, not the publisher's %s", tid, recs[1].TraceID, caller)
	}
	id, _ := trace.TraceIDFromHex(tid)
	bustest.Eventually(t, 10*time.Second, func() error {
		for _, s := range mem.Trace(id) {
			if s.Name == "process jisr.e" && s.ParentID == "" && len(s.Links) == 1 && s.Links[0].TraceID == caller {
				return nil
			}
		}
		return fmt.Errorf("no root span process jisr.e linking the publisher's trace in %+v", mem.Trace(id))
	})
	for _, m := range []string{"cnss", "health"} {
		msgs := f.read(t, m)
		if len(msgs) != 1 || !strings.Contains(msgs[0].Headers().Get(bus.HeaderTraceparent), tid) {
			t.Fatalf("%s's delivery does not carry the trace %s: %v", m, tid, msgs[0].Headers())
		}
	}
}
