package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// receiver is a real OTLP trace receiver, over gRPC and over HTTP.
type receiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu        sync.Mutex
	spans     []*tracev1.Span
	services  []string
	resources []map[string]string // each resource's string attributes
}

func (r *receiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		attrs := map[string]string{}
		for _, a := range rs.GetResource().GetAttributes() {
			attrs[a.GetKey()] = a.GetValue().GetStringValue()
			if a.GetKey() == "service.name" {
				r.services = append(r.services, a.GetValue().GetStringValue())
			}
		}
		r.resources = append(r.resources, attrs)
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *receiver) got() ([]*tracev1.Span, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracev1.Span(nil), r.spans...), append([]string(nil), r.services...)
}

// grpcReceiver serves OTLP/gRPC on loopback and returns host:port.
func grpcReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{}
	s := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(s, r)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return r, lis.Addr().String()
}

// httpReceiver serves OTLP/HTTP (protobuf) on loopback and returns its URL.
func httpReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	r := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
			http.NotFound(w, req)
			return
		}
		b, _ := io.ReadAll(req.Body)
		var in collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = r.Export(req.Context(), &in)
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return r, srv.URL
}

// clearEnv unsets every variable Setup reads, for the test's duration.
func clearEnv(t *testing.T) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_EXPORTER",
		"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
		"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE"} {
		t.Setenv(k, "")
	}
}

func TestSetupExportsWhereConfigured(t *testing.T) {
	for _, tc := range []struct {
		name     string
		http     bool
		env      map[string]string
		endpoint func(addr string) string // WithEndpoint (--otlp), "" for none
	}{
		{name: "OTEL env, grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "true"}},
		{name: "OTEL env, default protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "true"}},
		{name: "OTEL env, http/protobuf", http: true, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}},
		{name: "--otlp host:port", endpoint: func(a string) string { return a }},
		{name: "--otlp http URL", http: true, endpoint: func(a string) string { return a + "/v1/traces" }},
		// The documented form: a base URL, to which /v1/traces is appended
		// (the specification's rule for OTEL_EXPORTER_OTLP_ENDPOINT).
		{name: "--otlp bare http://host:port", http: true, endpoint: func(a string) string { return a }},
		{name: "--otlp http://host:port/", http: true, endpoint: func(a string) string { return a + "/" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			var (
				r    *receiver
				addr string
			)
			if tc.http {
				r, addr = httpReceiver(t)
			} else {
				r, addr = grpcReceiver(t)
			}
			o := []Option{WithServiceName("jisr-test")}
			if tc.endpoint != nil {
				o = append(o, WithEndpoint(tc.endpoint(addr)))
			} else {
				if !tc.http {
					addr = "http://" + addr
				}
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", addr)
				t.Setenv("OTEL_SERVICE_NAME", "jisr-from-env")
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			tel, err := Setup(context.Background(), o...)
			if err != nil {
				t.Fatal(err)
			}
			if !tel.Exporting || tel.Memory != nil {
				t.Fatalf("Exporting=%v Memory=%v", tel.Exporting, tel.Memory)
			}
			_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "one")
			span.SetAttributes(attribute.String("jisr.ckey", "CKEY"))
			span.End()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := tel.Shutdown(ctx); err != nil { // flushes
				t.Fatal(err)
			}
			spans, services := r.got()
			if len(spans) != 1 || spans[0].GetName() != "one" {
				t.Fatalf("received %v", spans)
			}
			want := "jisr-test"
			if tc.endpoint == nil {
				want = "jisr-from-env" // OTEL_SERVICE_NAME wins
			}
			if len(services) != 1 || services[0] != want {
				t.Errorf("service.name %v, want %s", services, want)
			}
		})
	}
}

func TestSetupNothingConfiguredIsNoop(t *testing.T) {
	clearEnv(t)
	tel, err := Setup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tel.Exporting || tel.Memory != nil {
		t.Fatalf("Exporting=%v Memory=%v", tel.Exporting, tel.Memory)
	}
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "x")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Error("the no-op provider recorded a span")
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}

	// OTEL_SDK_DISABLED switches everything off, even an explicit endpoint
	// and the in-memory store.
	t.Setenv("OTEL_SDK_DISABLED", "true")
	tel, err = Setup(context.Background(), WithEndpoint("127.0.0.1:1"), WithMemorySpans(10))
	if err != nil {
		t.Fatal(err)
	}
	if tel.Exporting || tel.Memory != nil {
		t.Error("OTEL_SDK_DISABLED=true: still tracing")
	}

	// --otlp none overrides the variables.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	if tel, err = Setup(context.Background(), WithEndpoint("none")); err != nil || tel.Exporting {
		t.Errorf("--otlp none: %v, exporting %v", err, tel != nil && tel.Exporting)
	}

	// OTEL_TRACES_EXPORTER=none with an endpoint: no export.
	t.Setenv("OTEL_SDK_DISABLED", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	if tel, err = Setup(context.Background()); err != nil || tel.Exporting {
		t.Errorf("OTEL_TRACES_EXPORTER=none: %v, exporting %v", err, tel != nil && tel.Exporting)
	}
}

func TestSetupSamplerFromEnvironment(t *testing.T) {
	for _, tc := range []struct {
		sampler, arg string
		recorded     bool
	}{
		{"always_off", "", false},
		{"traceidratio", "0", false},
		{"always_on", "", true},
		{"parentbased_traceidratio", "1", true},
	} {
		t.Run(tc.sampler+tc.arg, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("OTEL_TRACES_SAMPLER", tc.sampler)
			t.Setenv("OTEL_TRACES_SAMPLER_ARG", tc.arg)
			tel, err := Setup(context.Background(), WithMemorySpans(10))
			if err != nil {
				t.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "x")
			span.End()
			if got := len(tel.Memory.Trace(span.SpanContext().TraceID())) == 1; got != tc.recorded {
				t.Errorf("recorded %v, want %v", got, tc.recorded)
			}
		})
	}
}

func TestSetupRejectsBadSettings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		endpoint string
	}{
		{name: "unknown protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}},
		{name: "endpoint scheme", endpoint: "ftp://collector:4317"},
		{name: "endpoint without host", endpoint: "http://"},
		{name: "plaintext URL off this host", endpoint: "http://collector.example:4318"},
		{name: "plaintext variable off this host", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://10.0.0.8:4317"}},
		{name: "insecure variable off this host", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true"}},
		// Without a scheme the exporters would fall back, silently, to
		// 127.0.0.1:4317.
		{name: "endpoint variable without a scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4317"}},
		{name: "traces endpoint variable without a scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"}},
		{name: "--otlp without a port", endpoint: "collector.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if _, err := Setup(context.Background(), WithEndpoint(tc.endpoint)); !errors.Is(err, ErrConfig) {
				t.Errorf("Setup: %v, want ErrConfig", err)
			}
		})
	}
}

// A collector off this host is reached over TLS, never refused: only
// plaintext off the host is.
func TestSetupRemoteCollectorUsesTLS(t *testing.T) {
	for _, endpoint := range []string{"collector.example:4317", "https://collector.example:4318"} {
		clearEnv(t)
		tel, err := Setup(context.Background(), WithEndpoint(endpoint))
		if err != nil || !tel.Exporting {
			t.Fatalf("Setup(%q): %v, exporting %v", endpoint, err, tel != nil && tel.Exporting)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_ = tel.Shutdown(ctx)
		cancel()
	}
}

// TestSetupResourceAndComponents: spans carry service.version and
// service.instance.id; For gives each component of one process its own
// service.name and instance, through the same exporter; Endpoint and
// Protocol say where spans go (the URL OTLP/HTTP posts to).
func TestSetupResourceAndComponents(t *testing.T) {
	clearEnv(t)
	r, base := httpReceiver(t)
	tel, err := Setup(context.Background(), WithServiceName("jisr-dev"), WithEndpoint(base), WithServiceVersion("v1.2.3"), WithInstanceID("host-1"))
	if err != nil {
		t.Fatal(err)
	}
	if tel.Endpoint != base+"/v1/traces" || tel.Protocol != "http/protobuf" {
		t.Errorf("Endpoint %q Protocol %q, want %s/v1/traces http/protobuf", tel.Endpoint, tel.Protocol, base)
	}
	gw, err := tel.For(context.Background(), "jisr-gateway", "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	_, s1 := tel.TracerProvider.Tracer("test").Start(context.Background(), "dev")
	s1.End()
	_, s2 := gw.Tracer("test").Start(context.Background(), "gateway")
	s2.End()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	got := map[string]map[string]string{}
	for _, res := range r.resources {
		got[res["service.name"]] = res
	}
	if g := got["jisr-dev"]; g["service.version"] != "v1.2.3" || g["service.instance.id"] != "host-1" {
		t.Errorf("jisr-dev resource %v", g)
	}
	if g := got["jisr-gateway"]; g["service.version"] != "v1.2.3" || g["service.instance.id"] != "gw-1" {
		t.Errorf("jisr-gateway resource %v (all: %v)", g, r.resources)
	}
}

// TestOTelErrorsGoThroughTheLogger: an export that fails is reported by
// the jisr logger (one JSON line with a level), not as a plain line.
func TestOTelErrorsGoThroughTheLogger(t *testing.T) {
	clearEnv(t)
	var buf syncBuf
	RouteErrors(slog.New(slog.NewJSONHandler(&buf, nil)))
	otel.Handle(errors.New("export failed: connection refused"))
	line := strings.TrimSpace(buf.String())
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["level"] != "WARN" || rec["component"] != "opentelemetry" || !strings.Contains(fmt.Sprint(rec["err"]), "connection refused") {
		t.Fatalf("otel error logged as %q (%v)", line, err)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
