package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/telemetry"
)

// TestTraceCrossesNATSInW3CHeaders sends a query over the real bus (mTLS,
// production permissions) and checks that the trace context arrives in the
// exact W3C header keys and that the send and process spans form one trace
// with messaging attributes and the ckey — never more of the subject's
// citizen than that.
func TestTraceCrossesNATSInW3CHeaders(t *testing.T) {
	env := bustest.Start(t)
	mem := telemetry.NewMemory(100)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(mem))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	gw := env.Connect(t, "gateway")
	cnss := env.Connect(t, "cnss")
	const subj = "jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson.ABCDEFGHIJKLMNOP"
	headers := make(chan nats.Header, 1)
	sub, err := gw.Subscribe("jisr.q.>", func(m *nats.Msg) {
		headers <- m.Header
		_, span := bus.StartSpan(bus.ExtractTrace(context.Background(), m.Header), "process", m.Subject, trace.SpanKindServer, len(m.Data))
		span.End()
		_ = bus.Respond(m, []byte("ok"), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := gw.Flush(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ctx, root := tp.Tracer("test").Start(ctx, "backend call")
	if _, err := bus.Call(ctx, cnss, &nats.Msg{Subject: subj, Data: []byte("payload")}); err != nil {
		t.Fatal(err)
	}
	root.End()

	h := <-headers
	if len(h["traceparent"]) != 1 {
		t.Fatalf("no header spelled exactly traceparent: %v", h)
	}
	spans := mem.Trace(root.SpanContext().TraceID())
	byName := map[string]telemetry.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	send, process := byName["send jisr.q"], byName["process jisr.q"]
	if len(spans) != 3 || send.ParentID != root.SpanContext().SpanID().String() || process.ParentID != send.SpanID {
		t.Fatalf("want backend call → send → process, got %+v", spans)
	}
	for _, s := range []telemetry.Span{send, process} {
		a := s.Attributes
		if a["messaging.system"] != "nats" || a["messaging.destination.name"] != subj ||
			a["messaging.operation"] == "" || a["messaging.operation.type"] == "" || a["jisr.ckey"] != "ABCDEFGHIJKLMNOP" {
			t.Errorf("%s attributes: %v", s.Name, a)
		}
	}
	if send.Kind != "client" || process.Kind != "server" {
		t.Errorf("kinds %s/%s", send.Kind, process.Kind)
	}
}

// TestCallWithoutTracingCarriesNoHeader: with the no-op provider (nothing
// configured) no trace header is invented.
func TestCallWithoutTracingCarriesNoHeader(t *testing.T) {
	t.Parallel()
	h := nats.Header{}
	bus.InjectTrace(context.Background(), h)
	if len(h) != 0 {
		t.Errorf("headers without a span: %v", h)
	}
}
