// Package backend runs one ministry's reference backend: its gRPC service
// over its embedded store, with the standard health service and reflection
// so grpcurl and any gRPC client work against it directly.
//
// Invariant: a backend serves plaintext only on a loopback address (the
// sidecar case: its adapter on the same host); anywhere else it serves mTLS
// with an SVID (WithTLS), or not at all.
package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/services/civilregistry"
	"github.com/jisr-bus/jisr/services/cnss"
	healthsvc "github.com/jisr-bus/jisr/services/health"
	"github.com/jisr-bus/jisr/services/store"
	"github.com/jisr-bus/jisr/services/tax"
)

// Sentinel errors.
var (
	// ErrUnknownMember is returned for a member without a reference backend.
	ErrUnknownMember = errors.New("backend: no reference backend for this member")
	// ErrPlaintextNotLocal is returned for a backend without TLS asked to
	// listen or serve on a non-loopback address.
	ErrPlaintextNotLocal = errors.New("backend: plaintext gRPC is allowed only on a loopback address; serve mTLS with the member's SVID")
)

type ministry interface {
	Register(grpc.ServiceRegistrar)
	Close() error
}

var ministries = map[string]struct {
	service string
	open    func(ctx context.Context, path string, opts ...store.Option) (ministry, error)
}{
	"civil-registry": {"jisr.civilregistry.v1.CivilRegistry", func(ctx context.Context, p string, o ...store.Option) (ministry, error) {
		return civilregistry.Open(ctx, p, o...)
	}},
	"tax": {"jisr.tax.v1.Tax", func(ctx context.Context, p string, o ...store.Option) (ministry, error) {
		return tax.Open(ctx, p, o...)
	}},
	"cnss": {"jisr.cnss.v1.SocialSecurity", func(ctx context.Context, p string, o ...store.Option) (ministry, error) {
		return cnss.Open(ctx, p, o...)
	}},
	"health": {"jisr.health.v1.Health", func(ctx context.Context, p string, o ...store.Option) (ministry, error) {
		return healthsvc.Open(ctx, p, o...)
	}},
}

// Members lists the members that have a reference backend.
func Members() []string {
	var out []string
	for m := range ministries {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

type options struct {
	store  []store.Option
	server []grpc.ServerOption
	tls    *tls.Config
	tp     trace.TracerProvider
}

// Option configures New.
type Option func(*options)

// WithStore passes options to the store (population, seed, progress, logger).
func WithStore(opts ...store.Option) Option {
	return func(o *options) { o.store = append(o.store, opts...) }
}

// WithServerOptions adds gRPC server options (stats handlers for tracing).
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.server = append(o.server, opts...) }
}

// WithTLS serves mTLS with this configuration (svid.ServerTLS with the
// member's SVID, authorising the member's adapter): required off loopback.
func WithTLS(c *tls.Config) Option {
	return func(o *options) { o.tls = c }
}

// WithTracerProvider sends the "store.lookup" spans to tp (default: the
// global provider, otel.GetTracerProvider(), as it is when New is called).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tp = tp }
}

// Backend is a running reference backend.
type Backend struct {
	srv    *grpc.Server
	m      ministry
	health *health.Server
	tls    bool
	conns  []*grpc.ClientConn // to its adapter (events.go)
}

// New opens member's store under dataDir (<dataDir>/<member>.db), seeding it
// if needed, and builds its gRPC server.
func New(ctx context.Context, member, dataDir string, opts ...Option) (*Backend, error) {
	spec, ok := ministries[member]
	if !ok {
		return nil, fmt.Errorf("%w: %q (have %v)", ErrUnknownMember, member, Members())
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.tp == nil {
		o.tp = otel.GetTracerProvider()
	}
	m, err := spec.open(ctx, filepath.Join(dataDir, member+".db"), o.store...)
	if err != nil {
		return nil, err
	}
	// Handlers run on a pool of long-lived goroutines: a fresh goroutine per
	// call would grow its stack anew through SQLite's deep calls on every
	// query (runtime.newstack/copystack, 18 % of the backend's CPU in the
	// bench). A call finding every worker busy still gets a goroutine of
	// its own, so the pool bounds nothing.
	sopts := append(append([]grpc.ServerOption{grpc.NumStreamWorkers(streamWorkers())}, o.server...),
		grpc.ChainUnaryInterceptor(lookupSpan(o.tp.Tracer(tracerScope), spec.service)))
	if o.tls != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(o.tls)))
	}
	b := &Backend{srv: grpc.NewServer(sopts...), m: m, health: health.NewServer(), tls: o.tls != nil}
	m.Register(b.srv)
	b.health.SetServingStatus(spec.service, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(b.srv, b.health)
	reflection.Register(b.srv)
	return b, nil
}

// Listen listens on addr, refusing a non-loopback address without TLS.
func (b *Backend) Listen(addr string) (net.Listener, error) {
	if !b.tls && !loopback.Is(addr) {
		return nil, ErrPlaintextNotLocal
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	return lis, nil
}

// Serve serves gRPC on lis until Stop. Without TLS, lis must be on a
// loopback address.
func (b *Backend) Serve(lis net.Listener) error {
	if !b.tls && !loopback.Is(lis.Addr().String()) {
		return ErrPlaintextNotLocal
	}
	err := b.srv.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop stops gracefully, forcing at ctx's end, then closes the store.
func (b *Backend) Stop(ctx context.Context) error {
	b.health.Shutdown()
	for _, c := range b.conns {
		_ = c.Close()
	}
	done := make(chan struct{})
	go func() { b.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		b.srv.Stop()
	}
	return b.m.Close()
}

// streamWorkers is the size of the gRPC server's handler pool: a few per
// core, as a look-up is short and waits on nothing but the CPU (or a page
// of the store). More would not help: a worker idle at a garbage
// collection has its stack shrunk, to grow it again on its next call (with
// 64 per core the bench's stack growth was worse than with 4).
func streamWorkers() uint32 { return uint32(4 * runtime.GOMAXPROCS(0)) }

// tracerScope is the instrumentation scope of the backend's spans.
const tracerScope = "github.com/jisr-bus/jisr/services/backend"

// lookupSpan wraps each call of the ministry's service in a "store.lookup"
// span: the SQLite queries and the building of the reply. The span is the
// child of the call's own (the gRPC server span of tracing's stats handler):
// a call without one, tracing off, records none, and costs nothing.
func lookupSpan(tracer trace.Tracer, service string) grpc.UnaryServerInterceptor {
	prefix := "/" + service + "/"
	var starts sync.Map // full method → its span start options, made once
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, prefix) || !trace.SpanContextFromContext(ctx).IsValid() {
			return handler(ctx, req)
		}
		opts, ok := starts.Load(info.FullMethod)
		if !ok {
			opts, _ = starts.LoadOrStore(info.FullMethod, []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(
				attribute.String("db.system.name", "sqlite"),
				attribute.String("db.operation.name", "SELECT"),
				attribute.String("rpc.method", info.FullMethod[len(prefix):]),
			)})
		}
		ctx, span := tracer.Start(ctx, "store.lookup", opts.([]trace.SpanStartOption)...)
		defer span.End()
		resp, err := handler(ctx, req)
		if err != nil {
			span.SetStatus(otelcodes.Error, status.Code(err).String())
		}
		return resp, err
	}
}
