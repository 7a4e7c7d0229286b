package bus_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/telemetry"
)

// BenchmarkRecordedSpan is the bus's span of one query as a traced gateway
// records it (SDK provider, in-memory span store): started unverified, its
// subject set once checked, ended. The SDK's own costs included.
func BenchmarkRecordedSpan(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(telemetry.NewMemory(1000)))
	opt := bus.WithTracerProvider(tp)
	const subj = "jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson.ABCDEFGHIJKLMNOP"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, span := bus.StartUnverifiedSpan(ctx, "process", subj, trace.SpanKindServer, 100, opt)
		bus.SetSpanSubject(span, subj)
		_, send := bus.StartSpan(ctx, "send", subj, trace.SpanKindClient, 100, opt)
		bus.EndSpan(send, nil)
		bus.EndSpan(span, nil)
	}
}

// BenchmarkUnrecordedSpan is the same in a process that records no traces
// (the no-op provider Setup returns when nothing is configured).
func BenchmarkUnrecordedSpan(b *testing.B) {
	opt := bus.WithTracerProvider(noop.NewTracerProvider())
	const subj = "jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson.ABCDEFGHIJKLMNOP"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, span := bus.StartUnverifiedSpan(ctx, "process", subj, trace.SpanKindServer, 100, opt)
		bus.SetSpanSubject(span, subj)
		_, send := bus.StartSpan(ctx, "send", subj, trace.SpanKindClient, 100, opt)
		bus.EndSpan(send, nil)
		bus.EndSpan(span, nil)
	}
}
