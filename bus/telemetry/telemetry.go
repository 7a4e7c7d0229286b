package telemetry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/credentials"

	"github.com/jisr-bus/jisr/bus/loopback"
)

// ErrConfig reports a bad telemetry setting; the message names it.
var ErrConfig = errors.New("telemetry: invalid configuration")

type options struct {
	serviceName string
	endpoint    string
	memorySpans int
}

// Option configures Setup. Nothing is required: without options Setup
// follows the OTEL_* variables.
type Option func(*options)

// WithServiceName sets service.name (default "jisr") unless
// OTEL_SERVICE_NAME is set.
func WithServiceName(n string) Option { return func(o *options) { o.serviceName = n } }

// WithEndpoint sets an OTLP endpoint given on the command line (--otlp):
// host:port (gRPC, plaintext), or a URL (http://, https:// — OTLP/HTTP
// unless OTEL_EXPORTER_OTLP_PROTOCOL says grpc). Empty (the default): the
// OTEL_* variables decide, and without them nothing is exported. "none":
// nothing is exported, whatever the variables say.
func WithEndpoint(e string) Option { return func(o *options) { o.endpoint = e } }

// WithMemorySpans keeps this many recent spans in memory (default 0: none).
func WithMemorySpans(n int) Option { return func(o *options) { o.memorySpans = n } }

// Telemetry is what Setup built. Shut it down to flush spans.
type Telemetry struct {
	// TracerProvider is the provider to install (no-op when nothing is
	// configured).
	TracerProvider trace.TracerProvider
	// Memory holds recent spans; nil unless WithMemorySpans was given more than 0.
	Memory *Memory
	// Exporting says whether spans leave the process.
	Exporting bool

	sdk *sdktrace.TracerProvider
}

// Setup builds the tracer provider. It does not install it globally; the
// command does that explicitly with otel.SetTracerProvider.
func Setup(ctx context.Context, opts ...Option) (*Telemetry, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	t := &Telemetry{TracerProvider: noop.NewTracerProvider()}
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return t, nil
	}
	exp, err := exporter(ctx, o.endpoint)
	if err != nil {
		return nil, err
	}
	if exp == nil && o.memorySpans <= 0 {
		return t, nil
	}
	name := o.serviceName
	if name == "" {
		name = "jisr"
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(name)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
		resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("%w: resource: %v", ErrConfig, err)
	}
	// The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
	// (default: parent-based, always on).
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if exp != nil {
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
		t.Exporting = true
	}
	if o.memorySpans > 0 {
		t.Memory = NewMemory(o.memorySpans)
		tpOpts = append(tpOpts, sdktrace.WithSpanProcessor(t.Memory))
	}
	t.sdk = sdktrace.NewTracerProvider(tpOpts...)
	t.TracerProvider = t.sdk
	return t, nil
}

// Shutdown flushes pending spans to the exporter and stops it.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}

// ForceFlush exports the spans ended so far.
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	return t.sdk.ForceFlush(ctx)
}

// exporter returns the OTLP exporter asked for, or nil.
func exporter(ctx context.Context, endpoint string) (sdktrace.SpanExporter, error) {
	protocol := firstEnv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	if endpoint == "none" {
		return nil, nil
	}
	if endpoint == "" {
		if firstEnv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
			return nil, nil
		}
		if strings.EqualFold(firstEnv("OTEL_TRACES_EXPORTER"), "none") {
			return nil, nil
		}
		if err := checkPlaintext(firstEnv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
			strings.EqualFold(firstEnv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"), "true")); err != nil {
			return nil, err
		}
		// The exporters read the endpoint, headers, TLS and timeout
		// variables themselves.
		switch protocol {
		case "", "grpc":
			return otlptracegrpc.New(ctx)
		case "http/protobuf":
			return otlptracehttp.New(ctx)
		default:
			return nil, fmt.Errorf("%w: OTEL_EXPORTER_OTLP_PROTOCOL %q: use grpc or http/protobuf", ErrConfig, protocol)
		}
	}
	if !strings.Contains(endpoint, "://") {
		// host:port: plaintext to a collector on this host (the dev and
		// sidecar case), TLS with the system roots to any other.
		if protocol == "http/protobuf" {
			if loopback.Is(endpoint) {
				return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithInsecure())
			}
			return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithTLSClientConfig(exportTLS()))
		}
		if loopback.Is(endpoint) {
			return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithTLSCredentials(credentials.NewTLS(exportTLS())))
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%w: --otlp %q: want host:port or an http(s) URL", ErrConfig, endpoint)
	}
	if err := checkPlaintext(endpoint, false); err != nil {
		return nil, err
	}
	if protocol == "grpc" {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(endpoint)}
		if u.Scheme == "https" {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(exportTLS())))
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpoint)}
	if u.Scheme == "https" {
		opts = append(opts, otlptracehttp.WithTLSClientConfig(exportTLS()))
	}
	return otlptracehttp.New(ctx, opts...)
}

// exportTLS is the TLS of an export jisr configures itself: the system
// roots, TLS 1.3 at least, like every other link jisr controls.
func exportTLS() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS13} }

// checkPlaintext refuses a plaintext export to a collector off this host:
// spans carry ckeys, members and purposes, and jisr keeps every link that
// leaves the host encrypted. endpoint is a URL or host:port; insecure says
// the variables asked for plaintext whatever the scheme.
func checkPlaintext(endpoint string, insecure bool) error {
	host := endpoint
	plain := insecure
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		host, plain = u.Host, plain || u.Scheme == "http"
	}
	if plain && !loopback.Is(host) {
		return fmt.Errorf("%w: OTLP endpoint %q: plaintext export is allowed only to a collector on this host (loopback); use https://", ErrConfig, endpoint)
	}
	return nil
}

func firstEnv(keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return ""
}
