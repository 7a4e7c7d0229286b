package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

func memoryProvider(n int) (*sdktrace.TracerProvider, *Memory) {
	m := NewMemory(n)
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(m)), m
}

func TestMemoryKeepsTheLastSpansByTrace(t *testing.T) {
	t.Parallel()
	tp, m := memoryProvider(3)
	tr := tp.Tracer("test")
	ctx1, root1 := tr.Start(context.Background(), "root1")
	_, child1 := tr.Start(ctx1, "child1", trace.WithAttributes(attribute.String("jisr.ckey", "K1")))
	child1.End()
	root1.End()
	id1 := root1.SpanContext().TraceID()

	got := m.Trace(id1)
	if len(got) != 2 || got[0].Name != "root1" || got[1].Name != "child1" {
		t.Fatalf("trace 1: %+v", got)
	}
	if got[1].ParentID != got[0].SpanID || got[0].ParentID != "" || got[1].Attributes["jisr.ckey"] != "K1" {
		t.Errorf("links or attributes lost: %+v", got)
	}

	// The ring fills, then each span evicts the oldest ended one: child1,
	// then root1.
	_, a := tr.Start(context.Background(), "a")
	a.End()
	if got := m.Trace(id1); len(got) != 2 {
		t.Fatalf("ring not yet full, yet evicted: %+v", got)
	}
	_, b := tr.Start(context.Background(), "b")
	b.End()
	if got := m.Trace(id1); len(got) != 1 || got[0].Name != "root1" {
		t.Fatalf("after one eviction: %+v", got)
	}
	_, c := tr.Start(context.Background(), "c")
	c.End()
	if got := m.Trace(id1); len(got) != 0 {
		t.Fatalf("evicted trace still served: %+v", got)
	}
	if got := m.Trace(c.SpanContext().TraceID()); len(got) != 1 {
		t.Fatalf("newest span missing: %+v", got)
	}
	// The ring wraps many times without growing its index.
	for range 100 {
		_, s := tr.Start(context.Background(), "s")
		s.End()
	}
	if len(m.shards) != 1 {
		t.Fatalf("a ring of 3 spans in %d shards", len(m.shards))
	}
	m.shards[0].mu.Lock()
	traces := len(m.shards[0].index)
	m.shards[0].mu.Unlock()
	if traces > 3 {
		t.Errorf("index holds %d traces for a ring of 3 spans", traces)
	}
}

// TestMemoryShardedKeepsRecentTracesWhole: a ring large enough to be
// sharded still serves each recent trace whole, from ends on many
// goroutines at once, and evicts the old ones: no shard's index outgrows
// its ring.
func TestMemoryShardedKeepsRecentTracesWhole(t *testing.T) {
	t.Parallel()
	const n = 4096
	tp, m := memoryProvider(n)
	if len(m.shards) != memoryShards {
		t.Fatalf("%d shards for a ring of %d spans, want %d", len(m.shards), n, memoryShards)
	}
	tr := tp.Tracer("test")
	end := func() trace.TraceID {
		ctx, root := tr.Start(context.Background(), "root")
		_, child := tr.Start(ctx, "child")
		child.End()
		root.End()
		return root.SpanContext().TraceID()
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 4 * n / 8 {
				end()
			}
		}()
	}
	wg.Wait()
	recent := make([]trace.TraceID, 32)
	for i := range recent {
		recent[i] = end()
	}
	for _, id := range recent {
		if got := m.Trace(id); len(got) != 2 || got[0].Name != "root" || got[1].Name != "child" {
			t.Fatalf("recent trace %s: %+v", id, got)
		}
	}
	total := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		if len(sh.index) > len(sh.ring) {
			t.Errorf("shard %d: index holds %d traces for a ring of %d", i, len(sh.index), len(sh.ring))
		}
		total += len(sh.ring)
		sh.mu.Unlock()
	}
	if total != n {
		t.Errorf("the shards hold %d spans, want %d", total, n)
	}
}

// TestMemoryMatchesAModelOfTheRing holds the chained ring to the plainest
// model of it — the last n spans ended, filtered by trace — over traces
// whose spans interleave and outlive several wraps of the ring.
func TestMemoryMatchesAModelOfTheRing(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 3, 7, 64} {
		tp, m := memoryProvider(n)
		tr := tp.Tracer("test")
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		var roots []context.Context
		var ids []trace.TraceID
		var kept []string // span ids, in the order ended
		byID := map[string]trace.TraceID{}
		for i := range 2000 {
			ctx := context.Background()
			if len(roots) > 0 && rng.IntN(4) != 0 {
				ctx = roots[rng.IntN(len(roots))] // a span of a trace already kept
			}
			sctx, s := tr.Start(ctx, "s")
			s.End()
			sc := s.SpanContext()
			kept = append(kept, sc.SpanID().String())
			byID[sc.SpanID().String()] = sc.TraceID()
			if !trace.SpanContextFromContext(ctx).IsValid() {
				roots, ids = append(roots, sctx), append(ids, sc.TraceID())
				if len(roots) > 5 {
					roots, ids = roots[1:], ids[1:]
				}
			}
			if i%7 != 0 {
				continue
			}
			last := kept[max(0, len(kept)-n):]
			for _, id := range ids {
				var want []string
				for _, sid := range last {
					if byID[sid] == id {
						want = append(want, sid)
					}
				}
				var got []string
				for _, sp := range m.Trace(id) {
					got = append(got, sp.SpanID)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("ring of %d, after %d spans, trace %s: got %v, want %v", n, i+1, id, got, want)
				}
			}
		}
		m.shards[0].mu.Lock()
		traces := len(m.shards[0].index)
		m.shards[0].mu.Unlock()
		if traces > n {
			t.Errorf("ring of %d: index holds %d traces", n, traces)
		}
	}
}

func TestMemoryHandler(t *testing.T) {
	t.Parallel()
	tp, m := memoryProvider(10)
	_, s := tp.Tracer("test").Start(context.Background(), "query")
	s.End()
	mux := http.NewServeMux()
	mux.Handle("GET /v1/traces/{id}", m.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, tc := range []struct {
		id   string
		code int
	}{
		{s.SpanContext().TraceID().String(), http.StatusOK},
		{strings.Repeat("ab", 16), http.StatusNotFound},
		{"not-a-trace-id", http.StatusBadRequest},
		{strings.Repeat("0", 32), http.StatusBadRequest}, // the invalid all-zero id
	} {
		resp, err := http.Get(srv.URL + "/v1/traces/" + tc.id)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			TraceID string `json:"trace_id"`
			Spans   []Span `json:"spans"`
		}
		if tc.code == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if body.TraceID != tc.id || len(body.Spans) != 1 || body.Spans[0].Name != "query" || body.Spans[0].TraceID != tc.id {
				t.Errorf("body %+v", body)
			}
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("GET %s: %d, want %d", tc.id, resp.StatusCode, tc.code)
		}
	}
}

func TestLogHandlerStampsTraceAndSpan(t *testing.T) {
	t.Parallel()
	tp, _ := memoryProvider(10)
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "gateway").WithGroup("q")
	ctx, span := tp.Tracer("test").Start(context.Background(), "query")
	defer span.End()

	log.InfoContext(ctx, "in a query", "method", "GetPerson")
	log.Info("outside any query")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines: %q", lines)
	}
	var in, out map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &in)
	_ = json.Unmarshal([]byte(lines[1]), &out)
	q, _ := in["q"].(map[string]any) // attributes after WithGroup land in the group
	if q["trace_id"] != span.SpanContext().TraceID().String() || q["span_id"] != span.SpanContext().SpanID().String() {
		t.Errorf("query line: %s", lines[0])
	}
	if in["component"] != "gateway" || q["method"] != "GetPerson" {
		t.Errorf("attributes lost: %s", lines[0])
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Errorf("line without a span got a trace id: %s", lines[1])
	}
}

// TestGRPCHandlersLinkClientAndServer calls a real gRPC server through the
// instrumented client: one trace, the server span a child of the client
// span, both with the RPC attributes.
func TestGRPCHandlersLinkClientAndServer(t *testing.T) {
	tp, m := memoryProvider(100)
	inject := []otelgrpc.Option{otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagation.TraceContext{})}

	reg := prometheus.NewRegistry()
	gm, err := NewGRPCMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := NewGRPCMetrics(reg); err != nil || again.duration != gm.duration {
		t.Fatalf("second registration: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.StatsHandler(GRPCServerHandler(inject...)), grpc.ChainUnaryInterceptor(gm.Interceptor("backend", "tax")))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	civilv1.RegisterCivilRegistryServer(srv, civilv1.UnimplementedCivilRegistryServer{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(GRPCClientHandler(inject...)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, root := tp.Tracer("test").Start(context.Background(), "caller")
	// A health check makes no span (probes are not queries) …
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	// … a call of a service does, on both sides.
	if _, err := civilv1.NewCivilRegistryClient(conn).GetPerson(ctx, &civilv1.GetPersonRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatal(err)
	}
	root.End()
	srv.GracefulStop()

	spans := m.Trace(root.SpanContext().TraceID())
	byKind := map[string]Span{}
	for _, s := range spans {
		byKind[s.Kind] = s
	}
	client, server := byKind["client"], byKind["server"]
	if len(spans) != 3 || client.ParentID != root.SpanContext().SpanID().String() || server.ParentID != client.SpanID {
		t.Fatalf("spans not linked caller → client → server: %+v", spans)
	}
	for _, s := range []Span{client, server} {
		if s.Attributes["rpc.system"] != "grpc" || s.Attributes["rpc.service"] != "jisr.civilregistry.v1.CivilRegistry" || s.Attributes["rpc.method"] == "" {
			t.Errorf("%s span attributes: %v", s.Kind, s.Attributes)
		}
	}
	if n := testutil.CollectAndCount(reg, "jisr_grpc_server_duration_seconds"); n != 2 {
		t.Errorf("%d latency series, want 2 (health is measured, not traced)", n)
	}
	want := `component="backend",member="tax",method="Check",service="grpc.health.v1.Health"`
	if out, _ := testutil.CollectAndFormat(reg, expfmt.TypeTextPlain, "jisr_grpc_server_duration_seconds"); !strings.Contains(string(out), want) {
		t.Errorf("latency series lacks %s:\n%s", want, out)
	}
}

func TestProviderMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a, err := NewProviderMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewProviderMetrics(reg) // a second adapter of the same process
	if err != nil {
		t.Fatal(err)
	}
	a.Observe("tax", "jisr.tax.v1.Tax", "GetIncome", codes.OK, 0)
	b.Observe("cnss", "jisr.cnss.v1.SocialSecurity", "GetAffiliation", codes.NotFound, 0)
	var none *ProviderMetrics
	none.Observe("x", "y", "z", codes.OK, 0) // no registry: nothing, no panic
	if n := testutil.CollectAndCount(reg, "jisr_adapter_provider_duration_seconds"); n != 2 {
		t.Errorf("%d series, want 2", n)
	}
	if _, err := NewProviderMetrics(failing{}); err == nil {
		t.Error("a registry error was swallowed")
	}
}

type failing struct{ prometheus.Registerer }

func (failing) Register(prometheus.Collector) error { return errRegister }

var errRegister = &net.AddrError{Err: "refused"}
