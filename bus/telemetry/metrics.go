package telemetry

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// LatencyBuckets are the histogram buckets of every hop, in seconds.
var LatencyBuckets = []float64{.0001, .00025, .0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10}

// GRPCMetrics counts and times the calls one gRPC server handles: a hop's
// latency, labelled by component (adapter, backend, gateway), member,
// service, method and status code — never by anything from a payload.
type GRPCMetrics struct {
	duration *prometheus.HistogramVec
}

// NewGRPCMetrics registers jisr_grpc_server_duration_seconds with reg (once
// per registry: a second call returns the collector already registered).
func NewGRPCMetrics(reg prometheus.Registerer) (*GRPCMetrics, error) {
	h, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "jisr", Subsystem: "grpc", Name: "server_duration_seconds",
		Help:    "Time to handle one gRPC call, by component (adapter, backend, gateway), member, service, method and code.",
		Buckets: LatencyBuckets,
	}, []string{"component", "member", "service", "method", "code"}))
	if err != nil {
		return nil, err
	}
	return &GRPCMetrics{duration: h}, nil
}

// register registers c with reg, or returns the equal collector already
// registered there (several adapters of one process share a registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return c, err
		}
		existing, ok := are.ExistingCollector.(C)
		if !ok {
			return c, err
		}
		return existing, nil
	}
	return c, nil
}

// ProviderMetrics times the provider side of adapters: from a request of
// the gateway on jisr.p.… to the reply sent, the backend call included — the
// provider-adapter hop of a query.
type ProviderMetrics struct {
	duration *prometheus.HistogramVec
	backends *prometheus.GaugeVec
}

// Backends records how many different backends the gateway says answer for
// member's queue group (1: only this adapter's; more: an adapter with
// another backend joined it). A nil *ProviderMetrics records nothing.
func (m *ProviderMetrics) Backends(member string, n int) {
	if m == nil {
		return
	}
	m.backends.WithLabelValues(member).Set(float64(n))
}

// NewProviderMetrics registers jisr_adapter_provider_duration_seconds with
// reg (or reuses the one registered already).
func NewProviderMetrics(reg prometheus.Registerer) (*ProviderMetrics, error) {
	h, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "jisr", Subsystem: "adapter", Name: "provider_duration_seconds",
		Help:    "Time for a provider adapter to answer one request of the gateway (backend call included), by member, service, method and code.",
		Buckets: LatencyBuckets,
	}, []string{"member", "service", "method", "code"}))
	if err != nil {
		return nil, err
	}
	g, err := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "jisr", Subsystem: "adapter", Name: "queue_group_backends",
		Help: "Different backends the gateway has lately seen answer for this member's provider queue group (more than 1: adapters of one member call different backends).",
	}, []string{"member"}))
	if err != nil {
		return nil, err
	}
	return &ProviderMetrics{duration: h, backends: g}, nil
}

// Observe records one request answered by member's provider side. A nil
// *ProviderMetrics records nothing.
func (m *ProviderMetrics) Observe(member, service, method string, code codes.Code, d time.Duration) {
	if m == nil {
		return
	}
	m.duration.WithLabelValues(member, service, method, code.String()).Observe(d.Seconds())
}

// Interceptor times every unary call of one component's server.
func (m *GRPCMetrics) Interceptor(component, member string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		service, method := splitMethod(info.FullMethod)
		m.duration.WithLabelValues(component, member, service, method, status.Code(err).String()).Observe(time.Since(start).Seconds())
		return resp, err
	}
}

func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// RegisterConnection exports jisr_nats_connected{identity}: 1 while the
// connection is up.
func RegisterConnection(reg prometheus.Registerer, identity string, nc *nats.Conn) {
	_ = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "jisr", Subsystem: "nats", Name: "connected",
		Help:        "1 while this identity's NATS connection is up, 0 while it is down or reconnecting.",
		ConstLabels: prometheus.Labels{"identity": identity},
	}, func() float64 {
		if nc.IsConnected() {
			return 1
		}
		return 0
	}))
}

// RegisterSVIDExpiry exports jisr_svid_expiry_timestamp_seconds{identity}:
// when the identity's current X.509-SVID expires (Unix seconds).
func RegisterSVIDExpiry(reg prometheus.Registerer, identity string, expires func() (time.Time, error)) {
	_ = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "jisr", Subsystem: "svid", Name: "expiry_timestamp_seconds",
		Help:        "Expiry of the identity's current X.509-SVID, in Unix seconds (rotation keeps it moving forward).",
		ConstLabels: prometheus.Labels{"identity": identity},
	}, func() float64 {
		t, err := expires()
		if err != nil {
			return 0
		}
		return float64(t.Unix())
	}))
}
