package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// promql parses rule and panel expressions as Prometheus itself does.
var promql = parser.NewParser(parser.Options{})

// otlpReceiver is a real OTLP/gRPC trace collector endpoint, in the test.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu      sync.Mutex
	spans   []*tracev1.Span
	raw     []byte
	service map[string]string // span ID (hex) → its resource's service.name
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	b, _ := protojson.Marshal(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.raw = append(r.raw, b...)
	if r.service == nil {
		r.service = map[string]string{}
	}
	for _, rs := range req.GetResourceSpans() {
		var name string
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				name = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
			for _, sp := range ss.GetSpans() {
				r.service[hexID(sp.GetSpanId())] = name
			}
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
	// Configured as an operator would: the standard OTLP variables (the
	// --otlp flag's path is tested in bus/telemetry).
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_SDK_DISABLED", "")
	logs := &syncBuffer{}
	f := startDevWith(t, func(g *process.Env) {
		g.TraceMemory = 1000
		g.Log = slog.New(telemetry.LogHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	})
	tok := f.getPersonToken(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
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
		"jisr_consent_revocation_lag_seconds", "jisr_nats_connected", "jisr_svid_expiry_timestamp_seconds", "jisr_gateway_query_duration_seconds",
		"jisr_consent_token_cache_misses_total", "jisr_adapter_provider_duration_seconds", "jisr_gateway_audit_failures_total"} {
		if !after.families[name] {
			t.Errorf("metric %s is missing from /metrics", name)
		}
	}
	// Latency of every hop, each labelled by its component and member.
	for _, hop := range []string{
		`jisr_grpc_server_duration_seconds_count{code="OK",component="adapter",member="cnss",method="GetPerson",service="jisr.civilregistry.v1.CivilRegistry"}`,
		`jisr_gateway_query_duration_seconds_count{decision="allowed",method="GetPerson",provider="civil-registry"}`,
		`jisr_adapter_provider_duration_seconds_count{code="OK",member="civil-registry",method="GetPerson",service="jisr.civilregistry.v1.CivilRegistry"}`,
		`jisr_grpc_server_duration_seconds_count{code="OK",component="backend",member="civil-registry",method="GetPerson",service="jisr.civilregistry.v1.CivilRegistry"}`,
	} {
		if after.values[hop]-before.values[hop] != 1 {
			t.Errorf("%s moved by %v, want 1", hop, after.values[hop]-before.values[hop])
		}
	}
	if after.values["jisr_gateway_audit_append_duration_seconds_count{}"]-before.values["jisr_gateway_audit_append_duration_seconds_count{}"] != 2 {
		t.Error("two decisions, yet not two audit appends timed")
	}
	if after.values["jisr_consent_token_cache_lookups_total{}"] <= before.values["jisr_consent_token_cache_lookups_total{}"] {
		t.Error("the consented query did not look its token up in the cache")
	}
	for _, id := range []string{"gateway", "consent", "cnss", "civil-registry"} {
		if after.values[`jisr_nats_connected{identity="`+id+`"}`] != 1 {
			t.Errorf("jisr_nats_connected{identity=%q} is not 1", id)
		}
		if exp := after.values[`jisr_svid_expiry_timestamp_seconds{identity="`+id+`"}`]; exp < float64(time.Now().Unix()) {
			t.Errorf("SVID expiry of %s: %v", id, exp)
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

	// The gateway's in-memory view serves the trace — to the auditor only:
	// the plaintext HTTP side refuses it, the console answers the auditor's
	// client certificate.
	if resp, err := http.Get(gwHTTP + "/v1/traces/" + traceID); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/traces without the auditor's certificate: %v %v, want 401", resp, err)
	}
	consoleURL := strings.TrimSuffix(f.demo.Endpoints["console"], "/console/")
	auditor := auditorClient(t, f.g)
	resp, err := auditor.Get(consoleURL + "/v1/traces/" + traceID)
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
	if resp, err := auditor.Get(consoleURL + "/v1/traces/" + strings.Repeat("0", 31) + "1"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown trace: %v %v", resp, err)
	}
	// The console's waterfall of the trace shows every span kept.
	if resp, err := auditor.Get(consoleURL + "/console/trace/" + traceID); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the console's waterfall: %v %v", resp, err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// The gateway's trace and the caller's it links (the consumer adapter's).
		if n := strings.Count(string(b), `<tr class="span"`); n <= len(view.Spans) || !strings.Contains(string(b), "send jisr.q") {
			t.Fatalf("the waterfall shows %d spans, /v1/traces %d of the gateway's trace, and the caller's should be there too", n, len(view.Spans))
		}
	}

	// Revocation lag: revoking the token is seen by the gateway replica, which
	// times it from the KV entry's creation; the token is then refused.
	if _, stderr, err := f.cliAudit(t, "consent", "revoke", tok.JTI); err != nil {
		t.Fatalf("consent revoke: %v\n%s", err, stderr)
	}
	lag := "jisr_consent_revocation_lag_seconds_count{}"
	bustest.Eventually(t, 10*time.Second, func() error {
		return bustest.Check(scrape(t, gwHTTP).values[lag] >= 1, "the revocation observed in jisr_consent_revocation_lag_seconds")
	})
	if _, err := client.GetPerson(call, &civilv1.GetPersonRequest{Eid: tok.Citizen}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("with a revoked token: %v", err)
	}

	f.stop(t) // flushes the exporter

	recv.mu.Lock()
	defer recv.mu.Unlock()
	// The record names the gateway's trace. Its root, the gateway's query
	// span, links the caller's span ("send jisr.q" of the consumer's adapter)
	// in the caller's trace: the two together are the query's whole path.
	inTrace := func(id string) []*tracev1.Span {
		var out []*tracev1.Span
		for _, s := range recv.spans {
			if hexID(s.GetTraceId()) == id {
				out = append(out, s)
			}
		}
		return out
	}
	spans := inTrace(traceID)
	// The console showed the same spans of the gateway's trace as the
	// tracing backend received.
	memIDs, otlpIDs := map[string]bool{}, map[string]bool{}
	for _, s := range view.Spans {
		memIDs[s.SpanID] = true
	}
	for _, s := range spans {
		otlpIDs[hexID(s.GetSpanId())] = true
	}
	for id := range memIDs {
		if !otlpIDs[id] {
			t.Errorf("span %s shown by the console was not exported", id)
		}
	}
	var callerTrace, callerSpan string
	for _, s := range spans {
		if s.GetName() == "process jisr.q" {
			if len(s.GetParentSpanId()) != 0 || len(s.GetLinks()) != 1 {
				t.Fatalf("the gateway's query span has parent %x and %d links; want a root with one link to the caller", s.GetParentSpanId(), len(s.GetLinks()))
			}
			callerTrace, callerSpan = hexID(s.GetLinks()[0].GetTraceId()), hexID(s.GetLinks()[0].GetSpanId())
		}
	}
	if callerTrace == "" || callerTrace == traceID {
		t.Fatalf("the gateway's trace %s does not link a caller's trace (%q)", traceID, callerTrace)
	}
	caller := inTrace(callerTrace)
	spans = append(spans, caller...)
	byID := map[string]*tracev1.Span{}
	names := map[string]int{}
	for _, s := range spans {
		byID[hexID(s.GetSpanId())] = s
		names[s.GetName()]++
	}
	if s := byID[callerSpan]; s == nil || s.GetName() != "send jisr.q" || hexID(s.GetTraceId()) != callerTrace {
		t.Errorf("the query span links %s, not the caller's send jisr.q span", callerSpan)
	}
	roots := 0
	for _, s := range spans {
		if len(s.GetParentSpanId()) == 0 {
			roots++
			continue
		}
		if p := byID[hexID(s.GetParentSpanId())]; p == nil || hexID(p.GetTraceId()) != hexID(s.GetTraceId()) {
			t.Errorf("span %q has a parent that is not in its trace", s.GetName())
		}
	}
	if roots != 2 {
		t.Errorf("%d root spans, want 2 (the adapter's server span, the gateway's query span)", roots)
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
	checkTraceShape(t, spans)
	// In jisr dev each component has its own service.name; gRPC health and
	// reflection make no span.
	for _, want := range []struct{ span, service string }{
		{"send jisr.q", "jisr-adapter-cnss"}, {"process jisr.q", "jisr-gateway"}, {"gateway.audit.append", "jisr-gateway"},
		{"process jisr.p", "jisr-adapter-civil-registry"}, {"store.lookup", "jisr-backend-civil-registry"},
	} {
		for _, sp := range spans {
			if sp.GetName() == want.span && recv.service[hexID(sp.GetSpanId())] != want.service {
				t.Errorf("span %q has service.name %q, want %s", want.span, recv.service[hexID(sp.GetSpanId())], want.service)
			}
		}
	}
	for _, sp := range recv.spans {
		if strings.Contains(sp.GetName(), "grpc.health") || strings.Contains(sp.GetName(), "grpc.reflection") {
			t.Errorf("a gRPC health or reflection call was traced: %q", sp.GetName())
		}
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
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				s.values[name+key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				s.values[name+key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				s.values[name+"_count"+key] = float64(m.GetHistogram().GetSampleCount())
			}
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
	root.SetArgs(append([]string{"--federation", f.g.FederationPath, "--certs", f.g.CertsDir, "--data", f.g.DataDir,
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
			if _, err := promql.ParseExpr(r.Expr); err != nil {
				t.Errorf("alert %q: expr is not PromQL: %v", r.Alert, err)
			}
			if _, err := model.ParseDuration(r.For); r.For != "" && err != nil {
				t.Errorf("alert %q: for %q: %v", r.Alert, r.For, err)
			}
			for _, m := range metricName.FindAllString(r.Expr, -1) {
				if !exists(m) {
					t.Errorf("alert %q queries %s, which no component exports", r.Alert, m)
				}
			}
		}
	}
	for _, a := range []string{"JisrAuditFailing", "JisrSVIDExpiringSoon", "JisrRefusalRateJump", "JisrGatewayP99High",
		"JisrProbing", "JisrManyDistinctCitizens", "JisrRepeatedQueriesAboutOneCitizen", "JisrOffHoursQueries",
		"JisrAuditLogStalled", "JisrCheckpointStale", "JisrAuditVerificationFailed", "JisrProviderUnavailable"} {
		if !alerts[a] {
			t.Errorf("alerts.yml has no %s", a)
		}
	}

	// The scrape configuration loads the rules and scrapes every component.
	var scrapeConf struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string
				Labels  map[string]string
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err = os.ReadFile("../../deploy/observability/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &scrapeConf); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	if !slices.Contains(scrapeConf.RuleFiles, "alerts.yml") {
		t.Error("prometheus.yml does not load alerts.yml")
	}
	jobs := map[string]bool{}
	for _, sc := range scrapeConf.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			jobs[sc.JobName] = len(st.Targets) > 0
			if _, clash := st.Labels["component"]; clash {
				t.Errorf("job %s: a target label named component hides the metrics' own", sc.JobName)
			}
		}
	}
	for _, j := range []string{"jisr-gateway", "jisr-adapter", "jisr-backend"} {
		if !jobs[j] {
			t.Errorf("prometheus.yml: no targets for job %s", j)
		}
	}

	type datasource struct{ Type, UID string }
	var dash struct {
		UID, Title    string
		SchemaVersion int
		Templating    struct {
			List []struct{ Name, Type, Query string }
		}
		Panels []struct {
			Title      string
			Datasource datasource
			Targets    []struct{ Expr string }
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
	dsVar := false
	for _, v := range dash.Templating.List {
		dsVar = dsVar || (v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus")
	}
	if !dsVar {
		t.Error("dashboard has no Prometheus data source variable to pick at import")
	}
	for _, p := range dash.Panels {
		if p.Datasource != (datasource{Type: "prometheus", UID: "${datasource}"}) {
			t.Errorf("panel %q does not query the chosen data source: %+v", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			// Grafana replaces its interval variables before querying.
			if _, err := promql.ParseExpr(strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m").Replace(q.Expr)); err != nil {
				t.Errorf("panel %q: %q is not PromQL: %v", p.Title, q.Expr, err)
			}
			for _, m := range metricName.FindAllString(q.Expr, -1) {
				if !exists(m) {
					t.Errorf("panel %q queries %s, which no component exports", p.Title, m)
				}
			}
		}
	}
}

// checkTraceShape checks each span's parent, kind and attributes against
// the path of a query: consumer adapter → gateway (steps) → provider adapter
// → backend → store.
func checkTraceShape(t *testing.T, spans []*tracev1.Span) {
	t.Helper()
	const grpcName = "jisr.civilregistry.v1.CivilRegistry/GetPerson"
	key := func(s *tracev1.Span) string {
		if s == nil {
			return ""
		}
		return s.GetName() + "/" + strings.TrimPrefix(s.GetKind().String(), "SPAN_KIND_")
	}
	parents := map[string][]string{ // span → the parents it may have
		grpcName + "/SERVER":              {"", grpcName + "/CLIENT"}, // consumer adapter (root), backend
		"send jisr.q/CLIENT":              {grpcName + "/SERVER"},
		"process jisr.q/SERVER":           {""}, // a root, linked to send jisr.q
		"gateway.policy.check/INTERNAL":   {"process jisr.q/SERVER"},
		"gateway.consent.verify/INTERNAL": {"process jisr.q/SERVER"},
		"gateway.minimise/INTERNAL":       {"process jisr.q/SERVER"},
		"gateway.audit.append/INTERNAL":   {"process jisr.q/SERVER"},
		"send jisr.p/CLIENT":              {"process jisr.q/SERVER"},
		"process jisr.p/SERVER":           {"send jisr.p/CLIENT"},
		grpcName + "/CLIENT":              {"process jisr.p/SERVER"},
		"store.lookup/INTERNAL":           {grpcName + "/SERVER"},
	}
	byID := map[string]*tracev1.Span{}
	for _, s := range spans {
		byID[hexID(s.GetSpanId())] = s
	}
	for _, s := range spans {
		want, ok := parents[key(s)]
		if !ok {
			t.Errorf("unexpected span %s in the query's trace", key(s))
			continue
		}
		if got := key(byID[hexID(s.GetParentSpanId())]); !slices.Contains(want, got) {
			t.Errorf("span %s: parent %q, want one of %q", key(s), got, want)
		}
		attrs := map[string]string{}
		for _, a := range s.GetAttributes() {
			attrs[a.GetKey()] = a.GetValue().GetStringValue()
		}
		switch name := s.GetName(); {
		case name == grpcName:
			if attrs["rpc.system"] != "grpc" || attrs["rpc.service"] != "jisr.civilregistry.v1.CivilRegistry" || !strings.HasSuffix(attrs["rpc.method"], "GetPerson") {
				t.Errorf("%s: RPC attributes %v", key(s), attrs)
			}
		case strings.HasPrefix(name, "send ") || strings.HasPrefix(name, "process "):
			subj := attrs["messaging.destination.name"]
			if attrs["messaging.system"] != "nats" || attrs["messaging.operation"] != strings.Fields(name)[0] ||
				!strings.HasPrefix(subj, strings.Fields(name)[1]+".") || attrs["jisr.ckey"] == "" || !strings.HasSuffix(subj, "."+attrs["jisr.ckey"]) {
				t.Errorf("%s: messaging attributes %v", key(s), attrs)
			}
			if name == "process jisr.q" && (attrs["jisr.consumer"] != "cnss" || attrs["jisr.provider"] != "civil-registry" ||
				attrs["rpc.system"] != "grpc" || attrs["rpc.method"] != "GetPerson" || attrs["jisr.legal_basis"] != "consent") {
				t.Errorf("gateway query span attributes %v", attrs)
			}
		}
	}
}

// loopbackAddr returns a loopback address with a port free at the time of the
// call (for flags that take an address but do not report the port chosen).
func loopbackAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// runBackground runs one jisr command against the dev fixture's federation
// until the test ends.
func (f *devFixture) runBackground(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	root := newRootCmd()
	root.SetArgs(append([]string{"--federation", f.g.FederationPath, "--certs", f.g.CertsDir,
		"--nats", f.demo.Endpoints["nats"], "--log-level", "warn"}, args...))
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("jisr %v: %v", args, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("jisr %v did not stop", args)
		}
	})
}

// waitHealthy polls /healthz until it answers 200.
func waitHealthy(t *testing.T, base string) {
	t.Helper()
	bustest.Eventually(t, 60*time.Second, func() error {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return fmt.Errorf("%s/healthz not ready: %w", base, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s/healthz not ready: %s", base, resp.Status)
		}
		return nil
	})
}

// TestStandaloneAdapterAndBackendServeMetrics runs an adapter and a backend
// as their own commands (as deployed) beside the dev federation, each with
// --http: both serve /healthz and valid Prometheus exposition on /metrics,
// their hop latency moves with a query, and no eID appears in either.
func TestStandaloneAdapterAndBackendServeMetrics(t *testing.T) {
	f := startDev(t)
	tok := f.getPersonToken(t)
	// A second civil-registry backend, with its own store (same demo
	// citizens), and a second cnss adapter whose provider side uses dev's
	// cnss backend.
	backendGRPC, backendHTTP := loopbackAddr(t), loopbackAddr(t)
	f.runBackground(t, "--data", t.TempDir(), "backend", "--member", "civil-registry", "--citizens", "500",
		"--listen", backendGRPC, "--http", backendHTTP)
	adapterGRPC, adapterHTTP := loopbackAddr(t), loopbackAddr(t)
	f.runBackground(t, "--data", t.TempDir(), "adapter", "--member", "cnss",
		"--listen", adapterGRPC, "--http", adapterHTTP, "--backend", f.demo.Endpoints["backend/cnss"])
	waitHealthy(t, "http://"+backendHTTP)
	waitHealthy(t, "http://"+adapterHTTP)
	// The adapter's /readyz: NATS connected and its backend SERVING over
	// gRPC health (the negative cases: services/adapter TestReadyFollows…).
	bustest.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + adapterHTTP + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return bustest.Check(resp.StatusCode == http.StatusOK, "/readyz 200, got "+resp.Status+" "+string(body))
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dial := func(addr string) civilv1.CivilRegistryClient {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return civilv1.NewCivilRegistryClient(cc)
	}
	call := metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", tok.Purpose, "jisr-consent", tok.Token))
	// The standalone adapter's consumer side, through the gateway …
	// (/healthz answers while the component still starts; WaitForReady
	// waits for its gRPC port.)
	if _, err := dial(adapterGRPC).GetPerson(call, &civilv1.GetPersonRequest{Eid: tok.Citizen}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("through the standalone adapter: %v", err)
	}
	// … and the standalone backend directly (as its adapter would).
	if _, err := dial(backendGRPC).GetPerson(ctx, &civilv1.GetPersonRequest{Eid: tok.Citizen}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("the standalone backend: %v", err)
	}

	for _, tc := range []struct {
		addr, series string
		identity     string // its NATS connection, if any
	}{
		{adapterHTTP, `jisr_grpc_server_duration_seconds_count{code="OK",component="adapter",member="cnss",method="GetPerson",service="jisr.civilregistry.v1.CivilRegistry"}`, "cnss"},
		{backendHTTP, `jisr_grpc_server_duration_seconds_count{code="OK",component="backend",member="civil-registry",method="GetPerson",service="jisr.civilregistry.v1.CivilRegistry"}`, ""},
	} {
		m := scrape(t, "http://"+tc.addr)
		if m.values[tc.series] != 1 {
			t.Errorf("%s: %s = %v, want 1", tc.addr, tc.series, m.values[tc.series])
		}
		if !m.families["process_resident_memory_bytes"] && !m.families["go_goroutines"] {
			t.Errorf("%s: no runtime metrics", tc.addr)
		}
		if tc.identity != "" {
			if m.values[`jisr_nats_connected{identity="`+tc.identity+`"}`] != 1 || m.values[`jisr_svid_expiry_timestamp_seconds{identity="`+tc.identity+`"}`] == 0 {
				t.Errorf("%s: NATS connection or SVID expiry missing", tc.addr)
			}
		}
		if strings.Contains(m.text, tok.Citizen) {
			t.Errorf("%s: /metrics contains the eID", tc.addr)
		}
	}
}

func TestLogFormatAuto(t *testing.T) {
	for _, tc := range []struct{ flag, command, want string }{
		{"auto", "dev", "text"},
		{"auto", "gateway", "json"},
		{"auto", "adapter", "json"},
		{"auto", "backend", "json"},
		{"auto", "nats-server", "json"},
		{"auto", "query", "text"},
		{"json", "dev", "json"},
		{"text", "gateway", "text"},
	} {
		if got := process.LogFormatFor(tc.flag, tc.command); got != tc.want {
			t.Errorf("--log-format %s for %s: %s, want %s", tc.flag, tc.command, got, tc.want)
		}
	}
	g := &process.Env{LogFormat: "yaml", LogLevel: "info"}
	if err := g.Init(); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("--log-format yaml: %v", err)
	}
}

// auditorClient is an HTTPS client with the auditor's SVID (the files `jisr
// certs` wrote), checking that the server is the gateway.
func auditorClient(t *testing.T, g *process.Env) *http.Client {
	t.Helper()
	fed, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	src, err := svid.Open(t.Context(), g.CertsDir, fed.ID("auditor"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	c := svid.ClientTLS(src, tlsconfig.AuthorizeID(fed.ID("gateway")))
	c.MinVersion = tls.VersionTLS13
	return &http.Client{Transport: &http.Transport{TLSClientConfig: c}, Timeout: 30 * time.Second}
}
