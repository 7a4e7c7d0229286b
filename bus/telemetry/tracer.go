package telemetry

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// Tracer returns a tracer of the tracer provider the process installed
// (otel.SetTracerProvider), looked up again whenever that provider changes.
//
// otel.Tracer binds a tracer obtained before any provider is installed to
// the first provider ever installed, for good: a package-level
// otel.Tracer(…) would keep sending spans to a provider that was replaced
// (and shut down) — in tests that start several federations in one process,
// and after a command re-installs its provider. This one follows, at the
// cost of one atomic load and one comparison per span.
func Tracer(scope string) trace.Tracer { return &followingTracer{scope: scope} }

type followingTracer struct {
	embedded.Tracer
	scope string
	cur   atomic.Pointer[boundTracer]
}

type boundTracer struct {
	tp trace.TracerProvider
	t  trace.Tracer
}

// Start implements trace.Tracer.
func (f *followingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	tp := otel.GetTracerProvider()
	b := f.cur.Load()
	if b == nil || b.tp != tp {
		b = &boundTracer{tp: tp, t: tp.Tracer(f.scope)}
		f.cur.Store(b)
	}
	return b.t.Start(ctx, name, opts...)
}
