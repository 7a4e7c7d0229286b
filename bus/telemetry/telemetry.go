package telemetry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"strings"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"

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
	version     string
	instanceID  string
	endpoint    string
	memorySpans int
}

// WithServiceVersion sets service.version (default: the main module's
// version from the build information, "dev" when built from a work tree).
func WithServiceVersion(v string) Option { return func(o *options) { o.version = v } }

// WithInstanceID sets service.instance.id (default: <hostname>-<pid>).
func WithInstanceID(id string) Option { return func(o *options) { o.instanceID = id } }

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
	// Endpoint and Protocol say where spans go ("grpc" or "http/protobuf";
	// for OTLP/HTTP the full URL the exporter posts to), for the start-up
	// log line. Empty when nothing is exported.
	Endpoint, Protocol string

	sdk        *sdktrace.TracerProvider
	processors []sdktrace.SpanProcessor
	version    string
	children   []*sdktrace.TracerProvider
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
	exp, where, protocol, err := exporter(ctx, o.endpoint)
	if err != nil {
		return nil, err
	}
	t.Endpoint, t.Protocol = where, protocol
	if exp == nil && o.memorySpans <= 0 {
		return t, nil
	}
	name := o.serviceName
	if name == "" {
		name = "jisr"
	}
	t.version = o.version
	if t.version == "" {
		t.version = buildVersion()
	}
	res, err := newResource(ctx, name, t.version, o.instanceID)
	if err != nil {
		return nil, err
	}
	// The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
	// (default: parent-based, always on).
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if exp != nil {
		t.processors = append(t.processors, sdktrace.NewBatchSpanProcessor(exp))
		t.Exporting = true
	}
	if o.memorySpans > 0 {
		t.Memory = NewMemory(o.memorySpans)
		t.processors = append(t.processors, t.Memory)
	}
	for _, p := range t.processors {
		tpOpts = append(tpOpts, sdktrace.WithSpanProcessor(p))
	}
	t.sdk = sdktrace.NewTracerProvider(tpOpts...)
	t.TracerProvider = t.sdk
	return t, nil
}

// newResource is service.name, service.version, service.instance.id, the
// SDK's attributes, then OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
func newResource(ctx context.Context, name, version, instance string) (*resource.Resource, error) {
	if instance == "" {
		host, _ := os.Hostname()
		instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(name), semconv.ServiceVersion(version), semconv.ServiceInstanceID(instance)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
		resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("%w: resource: %v", ErrConfig, err)
	}
	return res, nil
}

// buildVersion is the main module's version, or "dev".
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// For returns a tracer provider for one component of a process that runs
// several (jisr dev): its spans carry their own service.name and
// service.instance.id, and go to the same exporter and memory store. It is
// the no-op provider when t records nothing. Shutdown stops them all.
func (t *Telemetry) For(ctx context.Context, service, instance string) (trace.TracerProvider, error) {
	if t == nil || t.sdk == nil {
		return noop.NewTracerProvider(), nil
	}
	res, err := newResource(ctx, service, t.version, instance)
	if err != nil {
		return nil, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	for _, p := range t.processors {
		opts = append(opts, sdktrace.WithSpanProcessor(p))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	t.children = append(t.children, tp)
	return tp, nil
}

// Shutdown flushes pending spans to the exporter and stops it.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	for _, c := range t.children {
		_ = c.ForceFlush(ctx)
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

// exporter returns the OTLP exporter asked for (or nil), where it sends
// spans and over which protocol.
func exporter(ctx context.Context, endpoint string) (sdktrace.SpanExporter, string, string, error) {
	protocol := firstEnv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	if protocol == "" {
		protocol = "grpc"
	}
	if endpoint == "none" {
		return nil, "", "", nil
	}
	if protocol != "grpc" && protocol != "http/protobuf" {
		return nil, "", "", fmt.Errorf("%w: OTEL_EXPORTER_OTLP_PROTOCOL %q: use grpc or http/protobuf", ErrConfig, protocol)
	}
	if endpoint == "" {
		return envExporter(ctx, protocol)
	}
	if !strings.Contains(endpoint, "://") {
		// host:port: plaintext to a collector on this host (the dev and
		// sidecar case), TLS with the system roots to any other.
		if _, _, err := net.SplitHostPort(endpoint); err != nil {
			return nil, "", "", fmt.Errorf("%w: --otlp %q: want host:port (OTLP/gRPC) or an http(s):// URL", ErrConfig, endpoint)
		}
		if protocol == "http/protobuf" {
			scheme := "https://"
			opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithTLSClientConfig(exportTLS())}
			if loopback.Is(endpoint) {
				scheme, opts = "http://", []otlptracehttp.Option{otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithInsecure()}
			}
			exp, err := otlptracehttp.New(ctx, opts...)
			return exp, scheme + endpoint + tracesPath, protocol, err
		}
		if loopback.Is(endpoint) {
			exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure())
			return exp, endpoint + " (plaintext, loopback)", "grpc", err
		}
		exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithTLSCredentials(credentials.NewTLS(exportTLS())))
		return exp, endpoint + " (TLS)", "grpc", err
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, "", "", fmt.Errorf("%w: --otlp %q: want host:port or an http(s) URL", ErrConfig, endpoint)
	}
	if err := checkPlaintext(endpoint, false); err != nil {
		return nil, "", "", err
	}
	// A URL given to --otlp is OTLP/HTTP unless the variables ask for
	// grpc.
	if firstEnv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc" {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(endpoint)}
		if u.Scheme == "https" {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(exportTLS())))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		return exp, u.Host, "grpc", err
	}
	full := TracesURL(u)
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(full)}
	if u.Scheme == "https" {
		opts = append(opts, otlptracehttp.WithTLSClientConfig(exportTLS()))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	return exp, full, "http/protobuf", err
}

// tracesPath is what OTLP/HTTP appends to a base URL for traces.
const tracesPath = "/v1/traces"

// TracesURL applies the OTLP specification's base-URL rule to an OTLP/HTTP
// URL given to --otlp (like OTEL_EXPORTER_OTLP_ENDPOINT): http://host:4318
// and http://host:4318/otlp are base URLs, to which /v1/traces is
// appended; a URL whose path already ends in /v1/traces is kept as it is.
func TracesURL(u *url.URL) string {
	c := *u
	if !strings.HasSuffix(c.Path, tracesPath) {
		c.Path = strings.TrimSuffix(c.Path, "/") + tracesPath
	}
	return c.String()
}

// envExporter follows the OTEL_EXPORTER_OTLP_* variables, or returns nil
// when they name no endpoint. An endpoint variable must be a URL with a
// scheme: the exporters would otherwise fall back, silently, to
// 127.0.0.1:4317.
func envExporter(ctx context.Context, protocol string) (sdktrace.SpanExporter, string, string, error) {
	name, endpoint := "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		name, endpoint = "OTEL_EXPORTER_OTLP_ENDPOINT", os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if endpoint == "" || strings.EqualFold(firstEnv("OTEL_TRACES_EXPORTER"), "none") {
		return nil, "", "", nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, "", "", fmt.Errorf("%w: %s=%q: want a URL with its scheme, e.g. http://127.0.0.1:4318 (OTLP/HTTP) or https://collector:4317 (gRPC)", ErrConfig, name, endpoint)
	}
	if err := checkPlaintext(endpoint, strings.EqualFold(firstEnv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"), "true")); err != nil {
		return nil, "", "", err
	}
	// The exporters read the endpoint, headers, TLS and timeout variables
	// themselves (and apply the base-URL rule to OTEL_EXPORTER_OTLP_ENDPOINT).
	where := endpoint
	if protocol == "http/protobuf" {
		if name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
			where = TracesURL(u)
		}
		exp, err := otlptracehttp.New(ctx)
		return exp, where, protocol, err
	}
	exp, err := otlptracegrpc.New(ctx)
	return exp, where, protocol, err
}

// RouteErrors sends OpenTelemetry's own errors and log lines (an export
// that failed, a dropped span) through log, instead of plain lines on
// stderr in the middle of jisr's JSON output. It sets process-wide state
// (otel.SetErrorHandler, otel.SetLogger); each command calls it once.
func RouteErrors(log *slog.Logger) {
	l := log.With("component", "opentelemetry")
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { l.Warn("opentelemetry error", "err", err) }))
	otel.SetLogger(logr.FromSlogHandler(l.Handler()))
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
