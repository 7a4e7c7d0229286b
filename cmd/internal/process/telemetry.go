package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/bus/telemetry"
)

// telemetryState is the process's tracing and metrics, set up once by the
// long-running commands (dev, gateway, adapter, backend).
type telemetryState struct {
	tel  *telemetry.Telemetry
	reg  *prometheus.Registry
	grpc *telemetry.GRPCMetrics
	// perComponent: each component of this process (jisr dev) gets its
	// own service.name (jisr-gateway, jisr-adapter-cnss, …).
	perComponent bool
	providers    map[string]trace.TracerProvider
}

// Registry is the process-wide Prometheus registry: Go and process
// collectors, NATS connection state, SVID expiry and gRPC hop latencies.
// Each gateway adds its own registry beside it.
func (g *Env) Registry() *prometheus.Registry {
	if g.telemetry.reg == nil {
		g.telemetry.reg = prometheus.NewRegistry()
		g.telemetry.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return g.telemetry.reg
}

// StartTelemetry sets up tracing from --otlp and the OTEL_* variables, with
// the in-memory span store when keepSpans (the gateway), and installs it as
// the process's tracer provider. The returned function flushes and stops it.
//
// OpenTelemetry's own errors go to the process's logger. extra adds Setup
// options (the gateway's instance as service.instance.id).
func (g *Env) StartTelemetry(ctx context.Context, service string, keepSpans bool, extra ...telemetry.Option) (func(), error) {
	telemetry.RouteErrors(g.Log)
	name := "jisr-" + service
	o := []telemetry.Option{telemetry.WithServiceName(name), telemetry.WithEndpoint(g.OTLP)}
	if keepSpans {
		o = append(o, telemetry.WithMemorySpans(g.TraceMemory))
	}
	t, err := telemetry.Setup(ctx, append(o, extra...)...)
	if err != nil {
		return nil, UsageError{err}
	}
	g.telemetry.tel = t
	otel.SetTracerProvider(t.TracerProvider)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if t.Exporting {
		g.Log.Info("exporting traces over OTLP", "service", name, "endpoint", t.Endpoint, "protocol", t.Protocol)
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := t.Shutdown(sctx); err != nil {
			g.Log.Warn("flushing traces", "err", err)
		}
	}, nil
}

// Traces is the in-memory span store, or nil.
func (g *Env) Traces() *telemetry.Memory {
	if g.telemetry.tel == nil {
		return nil
	}
	return g.telemetry.tel.Memory
}

// PerComponentTracing gives every component started from now on its own
// service.name (jisr dev: jisr-gateway, jisr-adapter-cnss, …) instead of
// the process's.
func (g *Env) PerComponentTracing() { g.telemetry.perComponent = true }

// TracerProviderFor is the tracer provider of one component: the process's
// (the global one), or with PerComponentTracing its own, named
// jisr-<component>[-<member>], with instance as service.instance.id when
// given.
func (g *Env) TracerProviderFor(component, member, instance string) trace.TracerProvider {
	t := g.telemetry.tel
	if t == nil || !g.telemetry.perComponent {
		return otel.GetTracerProvider()
	}
	name := "jisr-" + component
	if member != "" {
		name += "-" + member
	}
	if tp, ok := g.telemetry.providers[name]; ok {
		return tp
	}
	tp, err := t.For(context.Background(), name, instance)
	if err != nil {
		g.Log.Warn("tracing: the component keeps the process's service name", "component", name, "err", err)
		return otel.GetTracerProvider()
	}
	if g.telemetry.providers == nil {
		g.telemetry.providers = map[string]trace.TracerProvider{}
	}
	g.telemetry.providers[name] = tp
	return tp
}

// GRPCServerOptions instrument a gRPC server: OpenTelemetry server spans
// and the hop-latency histogram.
func (g *Env) GRPCServerOptions(component, member string) []grpc.ServerOption {
	if g.telemetry.grpc == nil {
		m, err := telemetry.NewGRPCMetrics(g.Registry())
		if err != nil {
			panic(err) // only a programming error: a clashing collector
		}
		g.telemetry.grpc = m
	}
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(g.telemetry.grpc.Interceptor(component, member))}
	if g.tracing() {
		opts = append(opts, grpc.StatsHandler(telemetry.GRPCServerHandler(otelgrpc.WithTracerProvider(g.TracerProviderFor(component, member, "")))))
	}
	return opts
}

// GRPCDialOptions instrument a gRPC client of component (of member) with
// OpenTelemetry client spans.
func (g *Env) GRPCDialOptions(component, member string) []grpc.DialOption {
	if !g.tracing() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(telemetry.GRPCClientHandler(otelgrpc.WithTracerProvider(g.TracerProviderFor(component, member, ""))))}
}

// tracing reports whether spans are recorded (exported or kept in memory);
// without it the gRPC stats handlers are left out entirely, so tracing
// costs nothing at all on the hot path.
func (g *Env) tracing() bool {
	t := g.telemetry.tel
	return t != nil && (t.Exporting || t.Memory != nil)
}

// serveMetrics serves /metrics and /healthz for a standalone adapter or
// backend, and /readyz when ready is given; addr "" serves nothing.
func (g *Env) serveMetrics(addr, component string, ready func(context.Context) error) (stop func(context.Context) error, err error) {
	if addr == "" {
		return func(context.Context) error { return nil }, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	if ready != nil {
		mux.HandleFunc("GET /readyz", ReadyHandler(ready))
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.Registry(), promhttp.HandlerOpts{}))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s HTTP: %w", component, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.Log.Error(component+" HTTP server stopped", "err", err)
		}
	}()
	paths := "/metrics /healthz"
	if ready != nil {
		paths += " /readyz"
	}
	g.Log.Info(component+" HTTP listening ("+paths+")", "addr", lis.Addr().String())
	return srv.Shutdown, nil
}

// ServeMetrics serves /metrics and /healthz for a process that has no other
// HTTP listener (jisr nats-server); addr "" serves nothing.
func (g *Env) ServeMetrics(addr, component string) (stop func(context.Context) error, err error) {
	return g.serveMetrics(addr, component, nil)
}

// servePprof serves the Go profiles on a loopback address, for the life of
// the process (the benchmark profiles each component this way).
func (g *Env) servePprof(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return UsageError{fmt.Errorf("--pprof-addr: %w", err)}
	}
	if !loopback.Is(lis.Addr().String()) {
		lis.Close()
		return UsageError{fmt.Errorf("--pprof-addr %s: profiles are served on loopback only", addr)}
	}
	// Profiling only: sample mutex contention too (one event in 50), so
	// that a profile shows what serialises the process, not only what it
	// computes. Blocking is not sampled: every idle goroutine blocks, and
	// sampling that would cost more than it shows.
	runtime.SetMutexProfileFraction(50)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go func() { _ = (&http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}).Serve(lis) }()
	return nil
}

// StartStandalone sets up what a standalone adapter or backend runs beside
// its work: tracing, and /metrics and /healthz on httpAddr (if given). The
// returned function stops both.
//
// ready, when given, answers /readyz: 200 "ok" when it returns nil, else 503
// with its error.
func (g *Env) StartStandalone(ctx context.Context, component, member, httpAddr string, ready ...func(context.Context) error) (func(), error) {
	stopTelemetry, err := g.StartTelemetry(ctx, component+"-"+member, false)
	if err != nil {
		return nil, err
	}
	var readyFn func(context.Context) error
	if len(ready) > 0 {
		readyFn = ready[0]
	}
	stopMetrics, err := g.serveMetrics(httpAddr, component, readyFn)
	if err != nil {
		stopTelemetry()
		return nil, err
	}
	return func() {
		_ = stopMetrics(context.WithoutCancel(ctx))
		stopTelemetry()
	}, nil
}

// ReadyHandler answers /readyz from ready: 200 "ok", or 503 with the reason
// the component is not ready.
func ReadyHandler(ready func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}
