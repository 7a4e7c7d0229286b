package bus_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/jisr-bus/jisr/bus"
)

// TestInjectTraceWritesWhatTheW3CPropagatorWrites holds InjectTrace (its
// own writer of traceparent) to OpenTelemetry's propagation.TraceContext:
// the same headers for span contexts with every flag byte, with and
// without a tracestate, and none for an invalid one. The result is read
// back by the propagator as the span context that was written.
func TestInjectTraceWritesWhatTheW3CPropagatorWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ts, err := trace.ParseTraceState("jisr=1,other=x")
	if err != nil {
		t.Fatal(err)
	}
	var cases []trace.SpanContext
	for flags := range 256 {
		var tid trace.TraceID
		var sid trace.SpanID
		for i := range tid {
			tid[i] = byte(rng.Uint32())
		}
		for i := range sid {
			sid[i] = byte(rng.Uint32())
		}
		c := trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags), Remote: flags%2 == 0}
		cases = append(cases, trace.NewSpanContext(c))
		if flags%16 == 0 {
			c.TraceState = ts
			cases = append(cases, trace.NewSpanContext(c))
		}
	}
	cases = append(cases, trace.SpanContext{}, trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}}))
	for _, sc := range cases {
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		got, want := nats.Header{"other": {"kept"}}, nats.Header{"other": {"kept"}}
		bus.InjectTrace(ctx, got)
		propagation.TraceContext{}.Inject(ctx, bus.HeaderCarrier(want))
		if len(got) != len(want) {
			t.Fatalf("%v: headers %v, want %v", sc, got, want)
		}
		for k, v := range want {
			if !slices.Equal(got[k], v) {
				t.Fatalf("%v: %s = %q, want %q", sc, k, got[k], v)
			}
		}
		if sc.IsValid() {
			back := trace.SpanContextFromContext(bus.ExtractTrace(context.Background(), got))
			if back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() || back.IsSampled() != sc.IsSampled() ||
				back.TraceState().String() != sc.TraceState().String() {
				t.Fatalf("%v: read back as %v", sc, back)
			}
		}
	}
}
