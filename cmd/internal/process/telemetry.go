package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
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
func (g *Env) StartTelemetry(ctx context.Context, service string, keepSpans bool) (func(), error) {
	name := "jisr-" + service
	o := []telemetry.Option{telemetry.WithServiceName(name), telemetry.WithEndpoint(g.OTLP)}
	if keepSpans {
		o = append(o, telemetry.WithMemorySpans(g.TraceMemory))
	}
	t, err := telemetry.Setup(ctx, o...)
	if err != nil {
		return nil, UsageError{err}
	}
	g.telemetry.tel = t
	otel.SetTracerProvider(t.TracerProvider)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if t.Exporting {
		g.Log.Info("exporting traces over OTLP", "service", name)
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
		opts = append(opts, grpc.StatsHandler(telemetry.GRPCServerHandler()))
	}
	return opts
}

// GRPCDialOptions instrument a gRPC client with OpenTelemetry client spans.
func (g *Env) GRPCDialOptions() []grpc.DialOption {
	if !g.tracing() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(telemetry.GRPCClientHandler())}
}

// tracing reports whether spans are recorded (exported or kept in memory);
// without it the gRPC stats handlers are left out entirely, so tracing
// costs nothing at all on the hot path.
func (g *Env) tracing() bool {
	t := g.telemetry.tel
	return t != nil && (t.Exporting || t.Memory != nil)
}

// serveMetrics serves /metrics and /healthz for a standalone adapter or
// backend; addr "" serves nothing.
func (g *Env) serveMetrics(addr, component string) (stop func(context.Context) error, err error) {
	if addr == "" {
		return func(context.Context) error { return nil }, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
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
	g.Log.Info(component+" HTTP listening (/metrics /healthz)", "addr", lis.Addr().String())
	return srv.Shutdown, nil
}

// ServeMetrics serves /metrics and /healthz for a process that has no other
// HTTP listener (jisr nats-server); addr "" serves nothing.
func (g *Env) ServeMetrics(addr, component string) (stop func(context.Context) error, err error) {
	return g.serveMetrics(addr, component)
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
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go func() { _ = (&http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}).Serve(lis) }()
	return nil
}

// StartStandalone sets up what a standalone adapter or backend runs beside
// its work: tracing, and /metrics and /healthz on httpAddr (if given). The
// returned function stops both.
func (g *Env) StartStandalone(ctx context.Context, component, member, httpAddr string) (func(), error) {
	stopTelemetry, err := g.StartTelemetry(ctx, component+"-"+member, false)
	if err != nil {
		return nil, err
	}
	stopMetrics, err := g.serveMetrics(httpAddr, component)
	if err != nil {
		stopTelemetry()
		return nil, err
	}
	return func() {
		_ = stopMetrics(context.WithoutCancel(ctx))
		stopTelemetry()
	}, nil
}
