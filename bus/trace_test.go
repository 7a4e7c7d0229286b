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

	gw := env.Connect(t, "gateway")
	cnss := env.Connect(t, "cnss")
	const subj = "jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson.ABCDEFGHIJKLMNOP"
	headers := make(chan nats.Header, 1)
	sub, err := gw.Subscribe("jisr.q.>", func(m *nats.Msg) {
		headers <- m.Header
		_, span := bus.StartSpan(bus.ExtractTrace(context.Background(), m.Header), "process", m.Subject, trace.SpanKindServer, len(m.Data), bus.WithTracerProvider(tp))
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
	if _, err := bus.Call(ctx, cnss, &nats.Msg{Subject: subj, Data: []byte("payload")}, bus.WithTracerProvider(tp)); err != nil {
		t.Fatal(err)
	}
	root.End()

	h := <-headers
	if len(h[bus.HeaderTraceparent]) != 1 {
		t.Fatalf("no header spelled exactly %s: %v", bus.HeaderTraceparent, h)
	}
	// Not under the W3C name: nats-server would collect the message's
	// headers into a map for its own message tracing.
	if _, ok := h["traceparent"]; ok {
		t.Fatalf("a traceparent header crossed the bus: %v", h)
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

// TestSpansFollowTheInstalledProvider checks the default: without
// WithTracerProvider a span goes to the global provider installed when it
// starts, never to one since replaced; with it, to the provider given.
func TestSpansFollowTheInstalledProvider(t *testing.T) {
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	provider := func() (*sdktrace.TracerProvider, *telemetry.Memory) {
		m := telemetry.NewMemory(10)
		return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(m)), m
	}
	const subj = "jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson.ABCDEFGHIJKLMNOP"

	tp1, m1 := provider()
	otel.SetTracerProvider(tp1)
	_, s1 := bus.StartSpan(context.Background(), "send", subj, trace.SpanKindClient, 1)
	s1.End()
	tp2, m2 := provider()
	otel.SetTracerProvider(tp2)
	_, s2 := bus.StartSpan(context.Background(), "send", subj, trace.SpanKindClient, 1)
	s2.End()
	tp3, m3 := provider()
	_, s3 := bus.StartSpan(context.Background(), "send", subj, trace.SpanKindClient, 1, bus.WithTracerProvider(tp3))
	s3.End()

	if len(m1.Trace(s1.SpanContext().TraceID())) != 1 || len(m2.Trace(s2.SpanContext().TraceID())) != 1 {
		t.Error("spans did not go to the provider installed when they started")
	}
	if len(m1.Trace(s2.SpanContext().TraceID())) != 0 {
		t.Error("a span went to a replaced provider")
	}
	if len(m3.Trace(s3.SpanContext().TraceID())) != 1 || len(m2.Trace(s3.SpanContext().TraceID())) != 0 {
		t.Error("WithTracerProvider did not decide where the span went")
	}
}
