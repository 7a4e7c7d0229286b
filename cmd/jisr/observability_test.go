package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/jisr-bus/jisr/bus/telemetry"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// otlpReceiver is a real OTLP/gRPC trace collector endpoint, in the test.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracev1.Span
	raw   []byte
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	b, _ := protojson.Marshal(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.raw = append(r.raw, b...)
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func startOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{}
	s := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(s, r)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return r, lis.Addr().String()
}

// TestOneQueryOneTraceAcrossEveryHop runs the dev federation with traces
// exported to a real OTLP receiver, makes one consented query and one
// refused one, and follows the allowed query from its audit record to its
// trace: one trace, every hop, proper parent links, no eID anywhere in the
// spans, the metrics or the logs.
func TestOneQueryOneTraceAcrossEveryHop(t *testing.T) {
	recv, endpoint := startOTLPReceiver(t)
	logs := &syncBuffer{}
	f := startDevWith(t, func(g *globals) {
		g.otlp = endpoint
		g.traceMemory = 1000
		g.log = slog.New(telemetry.LogHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	})
	var tok *demoToken
	for i := range f.demo.Tokens {
		if d := &f.demo.Tokens[i]; d.Consumer == "cnss" && d.Provider == "civil-registry" && contains(d.Methods, "GetPerson") {
			tok = d
			break
		}
	}
	if tok == nil {
		t.Fatal("no demo token")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := civilv1.NewCivilRegistryClient(f.dial(t, "cnss"))
	gwHTTP := f.demo.Endpoints["gateway_http"]

	before := scrape(t, gwHTTP)
	call := metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", tok.Purpose, "jisr-consent", tok.Token))
	if _, err := client.GetPerson(call, &civilv1.GetPersonRequest{Eid: tok.Citizen}); err != nil {
		t.Fatal(err)
	}
	refused := metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", tok.Purpose))
	if _, err := client.GetPerson(refused, &civilv1.GetPersonRequest{Eid: tok.Citizen}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without a token: %v", err)
	}

	// Metrics: valid exposition, and the counters moved by exactly one each.
	after := scrape(t, gwHTTP)
	allowed := `jisr_gateway_queries_total{code="OK",consumer="cnss",decision="allowed",legal_basis="consent",method="GetPerson",provider="civil-registry"}`
	refusedKey := `jisr_gateway_queries_total{code="Unauthenticated",consumer="cnss",decision="refused",legal_basis="",method="GetPerson",provider="civil-registry"}`
	for _, k := range []string{allowed, refusedKey} {
		if after.values[k]-before.values[k] != 1 {
			t.Errorf("%s moved by %v, want 1", k, after.values[k]-before.values[k])
		}
	}
	for _, name := range []string{"jisr_grpc_server_duration_seconds", "jisr_gateway_audit_append_duration_seconds",
		"jisr_gateway_audit_backlog", "jisr_consent_token_cache_hits_total", "jisr_consent_token_cache_lookups_total",
		"jisr_consent_revocation_lag_seconds", "jisr_nats_connected", "jisr_svid_expiry_timestamp_seconds", "jisr_gateway_query_duration_seconds"} {
		if !after.families[name] {
			t.Errorf("metric %s is missing from /metrics", name)
		}
	}
	for _, hop := range []string{`component="adapter"`, `component="backend"`} {
		if !strings.Contains(after.text, "jisr_grpc_server_duration_seconds_count{code=\"OK\","+hop) {
			t.Errorf("no hop latency for %s", hop)
		}
	}

	checkObservabilityFiles(t, after)

	// The audit record names the trace.
	out, _, err := f.cliAudit(t, "audit", "query", "--citizen", tok.Citizen, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var traceID string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec struct {
			Record struct {
				TraceID  string `json:"trace_id"`
				Decision string `json:"decision"`
			} `json:"record"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Record.Decision == "DECISION_ALLOWED" && strings.Contains(line, "GetPerson") {
			traceID = rec.Record.TraceID
		}
	}
	if len(traceID) != 32 {
		t.Fatalf("the allowed query's audit record has no trace id:\n%s", out)
	}

	// The gateway's in-memory view serves the trace.
	resp, err := http.Get(gwHTTP + "/v1/traces/" + traceID)
	if err != nil {
		t.Fatal(err)
	}
	var view struct {
		Spans []telemetry.Span `json:"spans"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&view)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(view.Spans) < 8 {
		t.Fatalf("GET /v1/traces/%s: %d, %d spans", traceID, resp.StatusCode, len(view.Spans))
	}
	if resp, err := http.Get(gwHTTP + "/v1/traces/" + strings.Repeat("0", 31) + "1"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown trace: %v %v", resp, err)
	}

	f.stop(t) // flushes the exporter

	recv.mu.Lock()
	defer recv.mu.Unlock()
	var spans []*tracev1.Span
	for _, s := range recv.spans {
		if hexID(s.GetTraceId()) == traceID {
			spans = append(spans, s)
		}
	}
	byID := map[string]*tracev1.Span{}
	names := map[string]int{}
	for _, s := range spans {
		byID[hexID(s.GetSpanId())] = s
		names[s.GetName()]++
	}
	roots := 0
	for _, s := range spans {
		if len(s.GetParentSpanId()) == 0 {
			roots++
			continue
		}
		if byID[hexID(s.GetParentSpanId())] == nil {
			t.Errorf("span %q has a parent that is not in the trace", s.GetName())
		}
	}
	if roots != 1 {
		t.Errorf("%d root spans, want 1 (the adapter's server span)", roots)
	}
	for _, want := range []string{
		"jisr.civilregistry.v1.CivilRegistry/GetPerson", // adapter server, provider adapter client, backend server
		"send jisr.q", "process jisr.q", "gateway.policy.check", "gateway.consent.verify",
		"send jisr.p", "process jisr.p", "store.lookup", "gateway.minimise", "gateway.audit.append",
	} {
		if names[want] == 0 {
			t.Errorf("no %q span in the trace (have %v)", want, names)
		}
	}
	if names["jisr.civilregistry.v1.CivilRegistry/GetPerson"] != 3 {
		t.Errorf("%d gRPC spans for GetPerson, want 3 (adapter server, provider-adapter client, backend server)", names["jisr.civilregistry.v1.CivilRegistry/GetPerson"])
	}
	// The ckey, not the eID.
	if !bytes.Contains(recv.raw, []byte("jisr.ckey")) {
		t.Error("no span carries the citizen's ckey")
	}
	for _, e := range []string{tok.Citizen, strings.ToLower(tok.Citizen)} {
		if bytes.Contains(recv.raw, []byte(e)) {
			t.Errorf("exported spans contain the eID %s", e)
		}
		if strings.Contains(after.text, e) {
			t.Errorf("metrics contain the eID %s", e)
		}
		if strings.Contains(logs.String(), e) {
			t.Errorf("logs contain the eID %s", e)
		}
	}
	// Log lines of the query carry its trace id.
	if !strings.Contains(logs.String(), `"trace_id":"`+traceID+`"`) {
		t.Error("no log line carries the query's trace_id")
	}
}

type scraped struct {
	text     string
	families map[string]bool
	values   map[string]float64
}

// scrape reads /metrics and parses it as Prometheus text exposition.
func scrape(t *testing.T, base string) scraped {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus exposition: %v", err)
	}
	s := scraped{text: string(b), families: map[string]bool{}, values: map[string]float64{}}
	for name, mf := range fams {
		s.families[name] = true
		for _, m := range mf.GetMetric() {
			if m.GetCounter() == nil {
				continue
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			s.values[name+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	return s
}

func hexID(b []byte) string {
	const hexdigits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, hexdigits[c>>4], hexdigits[c&15])
	}
	return string(out)
}

// cliAudit runs a jisr command against the dev fixture's federation.
func (f *devFixture) cliAudit(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"--federation", f.g.federationPath, "--certs", f.g.certsDir, "--data", f.g.dataDir,
		"--nats", f.demo.Endpoints["nats"], "--log-level", "error"}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// checkObservabilityFiles loads deploy/observability: the alert rules and
// the Grafana dashboard parse, have what Prometheus and Grafana require, and
// every jisr metric they query is one a live federation exports.
func checkObservabilityFiles(t *testing.T, live scraped) {
	t.Helper()
	exists := func(name string) bool {
		for _, suffix := range []string{"", "_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && suffix != "" && live.families[base] {
				return true
			}
		}
		return live.families[name]
	}
	metricName := regexp.MustCompile(`\b(jisr_[a-z_]+|process_[a-z_]+)`)

	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Expr, For string
				Labels           map[string]string
				Annotations      map[string]string
			}
		}
	}
	b, err := os.ReadFile("../../deploy/observability/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if r.Expr == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("alert %q lacks an expr, a summary or a severity", r.Alert)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("alert %q: unbalanced parentheses", r.Alert)
			}
			for _, m := range metricName.FindAllString(r.Expr, -1) {
				if !exists(m) {
					t.Errorf("alert %q queries %s, which no component exports", r.Alert, m)
				}
			}
		}
	}
	for _, a := range []string{"JisrAuditFailing", "JisrSVIDExpiringSoon", "JisrRefusalRateJump", "JisrGatewayP99High"} {
		if !alerts[a] {
			t.Errorf("alerts.yml has no %s", a)
		}
	}

	var dash struct {
		UID, Title    string
		SchemaVersion int
		Panels        []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	b, err = os.ReadFile("../../deploy/observability/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion == 0 || len(dash.Panels) == 0 {
		t.Fatalf("dashboard lacks uid, title, schemaVersion or panels")
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, m := range metricName.FindAllString(q.Expr, -1) {
				if !exists(m) {
					t.Errorf("panel %q queries %s, which no component exports", p.Title, m)
				}
			}
		}
	}
}
