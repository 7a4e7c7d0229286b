package telemetry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// receiver is a real OTLP trace receiver, over gRPC and over HTTP.
type receiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu       sync.Mutex
	spans    []*tracev1.Span
	services []string
}

func (r *receiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				r.services = append(r.services, a.GetValue().GetStringValue())
			}
		}
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
		{name: "insecure variable off this host", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector.example:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true"}},
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
