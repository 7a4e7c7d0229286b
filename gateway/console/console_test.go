package console_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/export"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/console"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

const (
	td    = "jisr.internal"
	alice = "AB123456"
	bob   = "CD654321"
)

type harness struct {
	env    *bustest.Env
	url    string
	log    *audit.Log
	log2   *audit.Log
	store  *console.Store
	srv    *console.Server
	traces *telemetry.Memory
	tp     *sdktrace.TracerProvider
	logs   *bytes.Buffer
	now    time.Time
}

// newHarness runs a real bus with the audit streams, a gateway's audit log,
// the console's index following it, and the console on a real mTLS
// listener with the gateway's SVID. keys, when set, are the keys the
// console trusts instead of the log's own.
func newHarness(t *testing.T, foreignKeys bool) *harness {
	t.Helper()
	return newHarnessWith(t, harnessOptions{foreignKeys: foreignKeys, rules: console.Rules{ProbingRefusals: 10, HoursFrom: 0, HoursTo: 24}}) // usual hours: all day, whenever the test runs
}

type harnessOptions struct {
	foreignKeys bool
	rules       console.Rules
	// secondLog also opens log gw-2 (harness.log2), checkpointed only hourly.
	secondLog bool
	// signIn, given the console's base URL, returns the OIDC sign-in's
	// sessions and routes: the console then also admits a signed-in
	// auditor, and the handshake lets a browser without a certificate in.
	signIn func(base string) (console.Sessions, map[string]http.Handler)
	// traceBackend: the tracing backend the console reads traces from first.
	traceBackend console.TraceBackend
}

func newHarnessWith(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	foreignKeys := o.foreignKeys
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	keyDir := t.TempDir()
	kp, _, err := checkpoint.EnsureKey(keyDir, "gw-1", checkpoint.Origin(td, "gw-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	gw := env.Connect(t, "gateway")
	l, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: td, LogID: "gw-1", Key: kp}, audit.WithLogger(env.Log), audit.WithCheckpointEvery(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	var l2 *audit.Log
	if o.secondLog {
		kp2, _, err := checkpoint.EnsureKey(keyDir, "gw-2", checkpoint.Origin(td, "gw-2"))
		if err != nil {
			t.Fatal(err)
		}
		if l2, err = audit.Open(ctx, audit.Config{Conn: env.Connect(t, "gateway"), TrustDomain: td, LogID: "gw-2", Key: kp2}, audit.WithLogger(env.Log), audit.WithCheckpointEvery(time.Hour)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l2.Close(context.Background()) })
	}
	trustDir := keyDir
	if foreignKeys {
		trustDir = t.TempDir()
		if _, _, err := checkpoint.EnsureKey(trustDir, "gw-1", checkpoint.Origin(td, "gw-1")); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := checkpoint.LoadPublicKeys(trustDir)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(gw)
	records, _ := js.Stream(ctx, subject.AuditStream)
	ckpts, _ := js.Stream(ctx, subject.CheckpointStream)
	store, err := console.OpenStore(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { store.Follow(fctx, records, func(err error) { t.Log(err) }); close(done) }()
	t.Cleanup(func() { stop(); <-done; store.Close() })

	h := &harness{env: env, log: l, log2: l2, store: store, traces: telemetry.NewMemory(1000), logs: &bytes.Buffer{}, now: time.Now()}
	h.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.traces))
	gwSrc := env.Source(t, env.ID("gateway"))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.url = "https://" + lis.Addr().String()
	auth := console.Auth{Auditor: env.ID("auditor"), Bundle: gwSrc}
	var signInRoutes map[string]http.Handler
	if o.signIn != nil {
		auth.Sessions, signInRoutes = o.signIn(h.url)
	}
	svcs, err := descset.Services(env.Fed, env.Fed.Descriptors, nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(env.Fed, svcs)
	if err != nil {
		t.Fatal(err)
	}
	h.srv, err = console.New(console.Config{
		Federation: env.Fed, Keyer: env.Keyer, Store: store, Records: records, Checkpoints: ckpts, Keys: keys,
		Traces: h.traces, TraceBackend: o.traceBackend, Catalog: func() *catalog.Catalog { return cat }, Audit: l, Auth: auth,
		Log: bustest.Logger(t), CheckpointEvery: time.Second,
		Rules: o.rules,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, hd := range h.srv.Routes() {
		mux.Handle(p, hd)
	}
	for p, hd := range signInRoutes {
		mux.Handle(p, hd)
	}
	tlsConf := svid.ServerTLS(gwSrc, tlsconfig.AuthorizeMemberOf(env.Fed.TrustDomain))
	if o.signIn != nil {
		tlsConf = console.OptionalClientCert(tlsConf)
	}
	hs := &http.Server{Handler: mux, TLSConfig: tlsConf, ErrorLog: nil}
	go hs.Serve(tls.NewListener(lis, tlsConf))
	t.Cleanup(func() { hs.Close() })
	return h
}

// client is an HTTPS client holding src's certificate (nil: none) that
// checks the server is the gateway.
func (h *harness) client(t *testing.T, src svid.Source) *http.Client {
	t.Helper()
	gwID := h.env.ID("gateway")
	var c *tls.Config
	if src != nil {
		c = svid.ClientTLS(src, tlsconfig.AuthorizeID(gwID))
	} else {
		c = tlsconfig.TLSClientConfig(h.env.Source(t, h.env.ID("auditor")), tlsconfig.AuthorizeID(gwID))
	}
	return &http.Client{
		Transport:     &http.Transport{TLSClientConfig: c},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
}

func (h *harness) auditor(t *testing.T) *http.Client {
	return h.client(t, h.env.Source(t, h.env.ID("auditor")))
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *harness) append(t *testing.T, ds ...*decision.Decision) {
	t.Helper()
	for _, d := range ds {
		if err := h.log.Append(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
}

func (h *harness) waitRows(t *testing.T, f console.Filter, n int) []console.Row {
	t.Helper()
	var rows []console.Row
	bustest.Eventually(t, 20*time.Second, func() error {
		var err error
		rows, err = h.store.Page(t.Context(), f, console.Cursor{}, 1000)
		if err != nil {
			return err
		}
		return bustest.Check(len(rows) >= n, "rows indexed")
	})
	return rows
}

func allowed(consumer, eid string, h *harness, method string) *decision.Decision {
	return &decision.Decision{Time: h.now, Consumer: consumer, Provider: "civil-registry", Service: "jisr.civilregistry.v1.CivilRegistry",
		Method: method, CKey: h.env.Keyer.CKey(eid), Purpose: "amo-enrolment", LegalBasis: "consent", Rule: "cnss-civil-status",
		Allowed: true, Reason: decision.ReasonAllowed, Latency: 3 * time.Millisecond}
}

// Attack first: nobody but the auditor reads the console or a trace — not
// a client without a certificate, not a member, not a certificate for the
// auditor's ID from another CA, not a plaintext request.
func TestOnlyTheAuditorGetsIn(t *testing.T) {
	h := newHarness(t, false)
	h.append(t, allowed("cnss", alice, h, "GetPerson"))
	h.waitRows(t, console.Filter{}, 1)
	paths := []string{"/console/", "/console/export.jsonl", "/console/stats", "/console/findings", "/console/integrity",
		"/console/trace/0123456789abcdef0123456789abcdef", "/v1/traces/0123456789abcdef0123456789abcdef"}

	// No certificate: the handshake itself fails.
	noCert := h.client(t, nil)
	noCert.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = nil
	noCert.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	for _, p := range paths {
		if resp, err := noCert.Get(h.url + p); err == nil {
			resp.Body.Close()
			t.Fatalf("GET %s without a client certificate: %d, want a refused handshake", p, resp.StatusCode)
		}
	}
	// A member's certificate: 403, and nothing of the records.
	for _, member := range []string{"cnss", "tax"} {
		c := h.client(t, h.env.Source(t, h.env.ID(member)))
		for _, p := range paths {
			code, body := get(t, c, h.url+p)
			if code != http.StatusForbidden || strings.Contains(body, "cnss-civil-status") {
				t.Fatalf("GET %s as %s: %d %q, want 403", p, member, code, body)
			}
		}
	}
	// The gateway's and the consent service's certificates are not the auditor's either.
	for _, id := range []string{"gateway", "consent", "operator"} {
		if code, _ := get(t, h.client(t, h.env.Source(t, h.env.ID(id))), h.url+"/console/"); code != http.StatusForbidden {
			t.Fatalf("GET /console/ as %s: %d, want 403", id, code)
		}
	}
	// The auditor's SPIFFE ID from another CA: refused at the handshake.
	other := t.TempDir()
	if _, err := devca.Init(other, h.env.Fed.TrustDomain, h.env.Fed.Identities()); err != nil {
		t.Fatal(err)
	}
	oca, err := devca.Load(other)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := oca.Issue(h.env.ID("auditor"))
	if err != nil {
		t.Fatal(err)
	}
	fc := h.client(t, svid.NewStatic(forged, h.env.CA.Bundle()))
	if resp, err := fc.Get(h.url + "/console/"); err == nil {
		resp.Body.Close()
		t.Fatalf("a forged auditor certificate: %d, want a refused handshake", resp.StatusCode)
	}
	// Plaintext (the gateway's loopback HTTP): 401 from the handler itself.
	rec := &recorder{h: http.Header{}}
	h.srv.TracesHandler().ServeHTTP(rec, httpRequest(t, "/v1/traces/0123456789abcdef0123456789abcdef"))
	if rec.code != http.StatusUnauthorized {
		t.Fatalf("plaintext /v1/traces: %d, want 401", rec.code)
	}
	// The auditor gets in.
	if code, body := get(t, h.auditor(t), h.url+"/console/"); code != http.StatusOK || !strings.Contains(body, "cnss-civil-status") && !strings.Contains(body, "GetPerson") {
		t.Fatalf("GET /console/ as the auditor: %d\n%s", code, body)
	}
}

// The decisions table filters by every column, turns a citizen's eID into
// its ckey without keeping it anywhere, pages, exports the selection, and
// records each of the auditor's looks in the audit log.
func TestDecisionsFilterPageExportAndTheLookIsAudited(t *testing.T) {
	h := newHarness(t, false)
	for i := range 60 {
		h.append(t, allowed("cnss", bob, h, "IsAlive"))
		if i%20 == 0 {
			h.append(t, allowed("health", alice, h, "GetPerson"))
		}
	}
	h.append(t, &decision.Decision{Time: h.now, Consumer: "tax", Provider: "cnss", Service: "jisr.cnss.v1.SocialSecurity", Method: "GetContributions",
		CKey: h.env.Keyer.CKey(alice), Purpose: "income-verification", LegalBasis: "mandate", Allowed: false, Reason: decision.ReasonNoRule, Code: codes.PermissionDenied})
	h.waitRows(t, console.Filter{}, 64)
	c := h.auditor(t)

	// The citizen's eID goes in a form body; the answer is a redirect to its ckey.
	resp, err := c.PostForm(h.url+"/console/citizen", url.Values{"eid": {" ab123456 "}, "lang": {"fr"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || strings.Contains(strings.ToUpper(loc), alice) || !strings.Contains(loc, url.QueryEscape(h.env.Keyer.CKey(alice))) {
		t.Fatalf("POST /console/citizen: %d Location %q", resp.StatusCode, loc)
	}
	code, body := get(t, c, h.url+loc)
	if code != http.StatusOK || strings.Count(body, `<tr class="ok"`)+strings.Count(body, `<tr class="refused"`) != 4 || strings.Contains(body, alice) ||
		!strings.Contains(body, `lang="fr"`) || !strings.Contains(body, "Décisions") {
		t.Fatalf("alice's decisions (fr): %d\n%s", code, body)
	}
	// Refused, by reason and legal basis.
	code, body = get(t, c, h.url+"/console/?decision=refused&basis=mandate&reason=NO_ACCESS_RULE&lang=ar")
	if code != http.StatusOK || strings.Count(body, `<tr class="refused"`) != 1 || strings.Count(body, `<tr class="ok"`) != 0 || !strings.Contains(body, `dir="rtl"`) {
		t.Fatalf("refused decisions (ar): %d\n%s", code, body)
	}
	// Paging: 50 rows, then the rest, no row twice.
	code, body = get(t, c, h.url+"/console/?consumer=cnss")
	if code != http.StatusOK || strings.Count(body, `<tr class="ok"`) != 50 || !strings.Contains(body, `id="next"`) {
		t.Fatalf("first page: %d, %d rows", code, strings.Count(body, `<tr class="ok"`))
	}
	next := body[strings.Index(body, `id="next" href="`)+len(`id="next" href="`):]
	next = strings.ReplaceAll(next[:strings.Index(next, `"`)], "&amp;", "&")
	code, body = get(t, c, h.url+next)
	if code != http.StatusOK || strings.Count(body, `<tr class="ok"`) != 10 {
		t.Fatalf("second page %s: %d, %d rows", next, code, strings.Count(body, `<tr class="ok"`))
	}
	// A bad filter is refused, not ignored.
	if code, _ := get(t, c, h.url+"/console/?decision=maybe"); code != http.StatusBadRequest {
		t.Fatalf("decision=maybe: %d", code)
	}
	if code, _ := get(t, c, h.url+"/console/?from=yesterday"); code != http.StatusBadRequest {
		t.Fatalf("from=yesterday: %d", code)
	}
	// Export of the selection: the export format, alice's 4 records and the
	// auditor's look at her (itself a record about alice).
	h.waitRows(t, console.Filter{Consumer: "auditor", CKey: h.env.Keyer.CKey(alice)}, 1)
	code, body = get(t, c, h.url+"/console/export.jsonl?ckey="+url.QueryEscape(h.env.Keyer.CKey(alice)))
	if code != http.StatusOK {
		t.Fatalf("export: %d %s", code, body)
	}
	dec := export.NewDecoder(strings.NewReader(body), "console")
	var nhdr, members, looks int
	for {
		line, _, _, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("export: %v\n%s", err, body)
		}
		switch line.Type {
		case export.TypeHeader:
			nhdr++
			if !line.Partial || !strings.Contains(line.Selection, "ckey=") || len(line.Keys) != 1 {
				t.Fatalf("export header: %+v", line)
			}
		case export.TypeRecord:
			var rec struct{ Consumer, Ckey string }
			if err := json.Unmarshal(line.Record, &rec); err != nil || rec.Ckey != h.env.Keyer.CKey(alice) {
				t.Fatalf("exported record %s: %v", line.Record, err)
			}
			if rec.Consumer == "auditor" {
				looks++
			} else {
				members++
			}
		}
	}
	if nhdr != 1 || members != 4 || looks < 1 {
		t.Fatalf("export: %d headers, %d members' records, %d looks; want 1, 4 and at least 1", nhdr, members, looks)
	}
	// Every look is in the audit log: the citizen's one under alice's ckey.
	recorded := h.waitRows(t, console.Filter{Consumer: "auditor"}, 5)
	var aboutAlice, exports int
	for _, r := range recorded {
		if r.CKey == h.env.Keyer.CKey(alice) && r.Method == "decisions" {
			aboutAlice++
		}
		if r.Method == "export" {
			exports++
		}
	}
	if aboutAlice != 1 || exports != 1 {
		t.Fatalf("the auditor's looks: %d at alice, %d exports, want 1 and 1 (%d looks)", aboutAlice, exports, len(recorded))
	}
	// The eID is nowhere in the index.
	all, _ := h.store.Page(t.Context(), console.Filter{}, console.Cursor{}, 0)
	for _, r := range all {
		if bytes.Contains(bytes.ToUpper(r.Data), []byte(alice)) || strings.Contains(r.Rule+r.Purpose, alice) {
			t.Fatalf("the eID is stored: %+v", r)
		}
	}
}

// A decision's trace opens as a waterfall of every span kept.
func TestTraceWaterfall(t *testing.T) {
	h := newHarness(t, false)
	tr := h.tp.Tracer("test")
	ctx, root := tr.Start(t.Context(), "cnss-adapter CivilRegistry/GetPerson")
	ctx2, gwSpan := tr.Start(ctx, "gateway query")
	_, prov := tr.Start(ctx2, "civil-registry backend GetPerson")
	prov.End()
	gwSpan.End()
	root.End()
	d := allowed("cnss", alice, h, "GetPerson")
	d.TraceID = root.SpanContext().TraceID().String()
	h.append(t, d)
	h.waitRows(t, console.Filter{TraceID: d.TraceID}, 1)
	code, body := get(t, h.auditor(t), h.url+"/console/trace/"+d.TraceID)
	if code != http.StatusOK || strings.Count(body, `<tr class="span"`) != 3 || !strings.Contains(body, "<svg") ||
		!strings.Contains(body, `data-depth="2"`) || !strings.Contains(body, "civil-registry backend GetPerson") {
		t.Fatalf("trace: %d\n%s", code, body)
	}
	// Without a tracing backend the page says the spans are the gateway's memory, with no banner.
	if strings.Contains(body, `id="trace-backend-failed"`) || !strings.Contains(body, "Spans from this gateway&#39;s memory") {
		t.Fatalf("trace without a backend:\n%s", body)
	}
	code, body = get(t, h.auditor(t), h.url+"/v1/traces/"+d.TraceID)
	if code != http.StatusOK || strings.Count(body, `"span_id"`) != 3 {
		t.Fatalf("/v1/traces: %d\n%s", code, body)
	}
}

// With a tracing backend configured that cannot be reached, the trace page
// says so in a banner, names the backend and the error, and shows the
// gateway's in-memory spans instead: never a silent fallback, never an
// empty page without a reason.
func TestTraceBackendUnreachableFallsBackVisibly(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + lis.Addr().String()
	lis.Close() // nothing listens there now
	backend, err := console.ParseTracesFrom("jaeger=" + dead)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, harnessOptions{rules: console.Rules{HoursFrom: 0, HoursTo: 24}, traceBackend: backend})
	ctx, root := h.tp.Tracer("test").Start(t.Context(), "cnss-adapter CivilRegistry/GetPerson")
	_, child := h.tp.Tracer("test").Start(ctx, "gateway query")
	child.End()
	root.End()
	d := allowed("cnss", alice, h, "GetPerson")
	d.TraceID = root.SpanContext().TraceID().String()
	h.append(t, d)
	h.waitRows(t, console.Filter{TraceID: d.TraceID}, 1)
	code, body := get(t, h.auditor(t), h.url+"/console/trace/"+d.TraceID)
	if code != http.StatusOK || !strings.Contains(body, `id="trace-backend-failed"`) || !strings.Contains(body, "Jaeger at "+dead) ||
		!strings.Contains(body, "connection refused") || !strings.Contains(body, "in-memory spans") || strings.Count(body, `<tr class="span"`) != 2 {
		t.Fatalf("trace with the backend down: %d\n%s", code, body)
	}
}

// A tracing backend that answers what it should not — a span of another
// trace, an id that is not one, an error, a redirect elsewhere — is not
// believed: the page shows the banner with the reason and the in-memory
// spans.
func TestTraceBackendHostileAnswers(t *testing.T) {
	var answer func(w http.ResponseWriter, r *http.Request)
	backendSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { answer(w, r) }))
	t.Cleanup(backendSrv.Close)
	backend, err := console.ParseTracesFrom("jaeger=" + backendSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, harnessOptions{rules: console.Rules{HoursFrom: 0, HoursTo: 24}, traceBackend: backend})
	_, root := h.tp.Tracer("test").Start(t.Context(), "gateway query")
	root.End()
	d := allowed("cnss", alice, h, "GetPerson")
	d.TraceID = root.SpanContext().TraceID().String()
	h.append(t, d)
	h.waitRows(t, console.Filter{TraceID: d.TraceID}, 1)
	span := func(traceID, spanID string) string {
		return `{"data":[{"traceID":"` + traceID + `","spans":[{"traceID":"` + traceID + `","spanID":"` + spanID +
			`","operationName":"forged","references":[],"startTime":1,"duration":1,"tags":[],"processID":"p1"}],"processes":{"p1":{"serviceName":"x"}}}]}`
	}
	for name, tc := range map[string]struct {
		answer func(w http.ResponseWriter, r *http.Request)
		why    string
	}{
		"another trace": {func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, span(strings.Repeat("ab", 16), "0123456789abcdef"))
		}, "a span of another trace"},
		"not an id": {func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, span(d.TraceID, "<script>")) }, "span id"},
		"not JSON":  {func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "<html>") }, "not Jaeger&#39;s trace JSON"},
		"an error":  {func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusBadGateway) }, "502 Bad Gateway"},
		"a redirect": {func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.2:1/", http.StatusFound)
		}, "302 Found"},
		"nothing": {func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, `{"errors":[{"code":404,"msg":"trace not found"}]}`, http.StatusNotFound)
		}, "no span of this trace"},
	} {
		answer = tc.answer
		code, body := get(t, h.auditor(t), h.url+"/console/trace/"+d.TraceID)
		if code != http.StatusOK || !strings.Contains(body, `id="trace-backend-failed"`) || !strings.Contains(body, tc.why) ||
			strings.Contains(body, "forged") || strings.Count(body, `<tr class="span"`) != 1 || !strings.Contains(body, "gateway query") {
			t.Errorf("%s: %d\n%s", name, code, body)
		}
	}
	// A good answer is believed, and says where it comes from.
	answer = func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, span(d.TraceID, "0123456789abcdef")) }
	if _, body := get(t, h.auditor(t), h.url+"/console/trace/"+d.TraceID); strings.Contains(body, `id="trace-backend-failed"`) ||
		!strings.Contains(body, "Spans read from") || !strings.Contains(body, "Jaeger at "+backendSrv.URL) || !strings.Contains(body, `data-span="0123456789abcdef"`) {
		t.Errorf("a good answer:\n%s", body)
	}
}

// --traces-from: Jaeger only; plaintext on loopback only.
func TestParseTracesFrom(t *testing.T) {
	for v, ok := range map[string]bool{
		"jaeger=http://127.0.0.1:16686": true, "jaeger=http://localhost:16686/": true, "jaeger=https://jaeger.example:443": true,
		"jaeger=http://jaeger.example:16686": false, "jaeger=http://10.0.0.1:16686": false, "tempo=http://127.0.0.1:3200": false,
		"http://127.0.0.1:16686": false, "jaeger=": false, "jaeger=ftp://127.0.0.1": false, "jaeger=http://u:p@127.0.0.1:16686": false,
	} {
		if _, err := console.ParseTracesFrom(v); (err == nil) != ok {
			t.Errorf("%q: %v", v, err)
		}
	}
	if b, err := console.ParseTracesFrom(""); b != nil || err != nil {
		t.Errorf("none: %v %v", b, err)
	}
}

// A burst of refusals of one kind from one member is a probing finding,
// with its evidence and a link to the decisions behind it; statistics count it.
func TestProbingFindingAndStats(t *testing.T) {
	h := newHarness(t, false)
	for i := range 12 {
		d := allowed("tax", fmt.Sprintf("AB%06d", i), h, "GetPerson")
		d.Allowed, d.Reason, d.Code = false, decision.ReasonNoRule, codes.PermissionDenied
		h.append(t, d)
	}
	h.append(t, allowed("cnss", bob, h, "GetPerson"))
	h.waitRows(t, console.Filter{}, 13)
	c := h.auditor(t)
	code, body := get(t, c, h.url+"/console/findings")
	if code != http.StatusOK || !strings.Contains(body, `data-kind="probing"`) || !strings.Contains(body, "12 refusals NO_ACCESS_RULE by tax") {
		t.Fatalf("findings: %d\n%s", code, body)
	}
	link := body[strings.Index(body, `class="evidence-link" href="`)+len(`class="evidence-link" href="`):]
	link = strings.ReplaceAll(link[:strings.Index(link, `"`)], "&amp;", "&")
	code, body = get(t, c, h.url+link)
	if code != http.StatusOK || strings.Count(body, `<tr class="refused"`) != 12 {
		t.Fatalf("the finding's decisions %s: %d\n%s", link, code, body)
	}
	// The finding is a metric (deploy/observability/alerts.yml: JisrProbing).
	reg := prometheus.NewRegistry()
	if err := h.srv.Register(reg); err != nil {
		t.Fatal(err)
	}
	h.srv.UpdateMetrics(t.Context())
	if err := promtestutil.GatherAndCompare(reg, strings.NewReader(`
# HELP jisr_console_findings Anomaly findings of the auditor's console now, by kind and member or log.
# TYPE jisr_console_findings gauge
jisr_console_findings{kind="distinct_citizens",subject=""} 0
jisr_console_findings{kind="log_stalled",subject=""} 0
jisr_console_findings{kind="off_hours",subject=""} 0
jisr_console_findings{kind="probing",subject=""} 0
jisr_console_findings{kind="probing",subject="tax"} 12
jisr_console_findings{kind="repeated_queries",subject=""} 0
jisr_console_findings{kind="stale_checkpoint",subject=""} 0
`), "jisr_console_findings"); err != nil {
		t.Fatal(err)
	}
	code, body = get(t, c, h.url+"/console/stats")
	if code != http.StatusOK || !strings.Contains(body, "<polyline") || !strings.Contains(body, "<circle") || !strings.Contains(body, "NO_ACCESS_RULE") {
		t.Fatalf("stats: %d\n%s", code, body)
	}
}

// Integrity: each log's size and checkpoint; a verification that fails
// (here: the console trusts another key than the log's) raises the red
// banner on every page; one that passes does not.
func TestIntegrityBanner(t *testing.T) {
	for _, tc := range []struct {
		name    string
		foreign bool
	}{{"good", false}, {"bad key", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.foreign)
			h.append(t, allowed("cnss", alice, h, "GetPerson"))
			h.waitRows(t, console.Filter{}, 1)
			c := h.auditor(t)
			bustest.Eventually(t, 20*time.Second, func() error {
				_, body := get(t, c, h.url+"/console/integrity")
				return bustest.Check(strings.Contains(body, "<td>gw-1</td>") && (tc.foreign || strings.Contains(body, " · 20")), "log and checkpoint shown")
			})
			resp, err := c.Post(h.url+"/console/integrity", "application/x-www-form-urlencoded", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			_, body := get(t, c, h.url+"/console/")
			if banner := strings.Contains(body, `id="integrity-banner"`); banner != tc.foreign {
				t.Fatalf("banner %v, want %v\n%s", banner, tc.foreign, body)
			}
		})
	}
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(c int)           { r.code = c }

func httpRequest(t *testing.T, path string) *http.Request {
	r, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://127.0.0.1"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Each other kind of finding, from its rule: many distinct citizens,
// repeated queries about one citizen, queries outside the usual hours, a
// log that stopped growing and a checkpoint older than its interval.
func TestEveryKindOfFinding(t *testing.T) {
	// Usual hours that leave out the hour it is now.
	hour := time.Now().UTC().Hour()
	rules := console.Rules{DistinctCitizens: 30, RepeatedQueries: 5, HoursFrom: 12, HoursTo: 24, LogStall: 10 * time.Minute}
	if hour >= 12 {
		rules.HoursFrom, rules.HoursTo = 0, 12
	}
	h := newHarnessWith(t, harnessOptions{secondLog: true, rules: rules})
	for i := range 30 { // health asks about 30 distinct citizens, with no history
		h.append(t, allowed("health", fmt.Sprintf("H%06d", i), h, "GetPerson"))
	}
	for range 6 { // cnss asks six times whether bob is alive: a predicate
		h.append(t, allowed("cnss", bob, h, "IsAlive"))
	}
	for range 7 { // and reads alice's record seven times: not a predicate, no threshold to scan
		h.append(t, allowed("cnss", alice, h, "GetPerson"))
	}
	// gw-2's one record is an hour old: its log stopped, and no checkpoint covers it.
	old := allowed("tax", alice, h, "GetPerson")
	old.Time = h.now.Add(-time.Hour)
	if err := h.log2.Append(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	h.waitRows(t, console.Filter{}, 44)
	want := map[string]string{
		console.KindDistinctCitizens: "health asked about 30 distinct citizens",
		console.KindRepeated:         "6 predicate queries IsAlive by cnss about one citizen",
		console.KindOffHours:         "queries by health",
		console.KindLogStalled:       "log gw-2: last record",
		console.KindStaleCheckpoint:  "log gw-2: 1 records after its latest checkpoint",
	}
	fs, err := h.srv.Findings(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range fs {
		got[f.Kind] += f.Evidence + "\n"
		if f.Link == "" {
			t.Errorf("finding %s has no link", f.Kind)
		}
	}
	for kind, evidence := range want {
		if !strings.Contains(got[kind], evidence) {
			t.Errorf("%s: %q, want %q", kind, got[kind], evidence)
		}
	}
	if strings.Count(got[console.KindRepeated], "\n") != 1 || strings.Contains(got[console.KindRepeated], "GetPerson") {
		t.Errorf("repeated queries of a method that is not a predicate make a finding: %q", got[console.KindRepeated])
	}
	if got[console.KindProbing] != "" {
		t.Errorf("a probing finding without refusals: %s", got[console.KindProbing])
	}
	// The repeated queries' link selects exactly them.
	for _, f := range fs {
		if f.Kind == console.KindRepeated {
			code, body := get(t, h.auditor(t), h.url+f.Link)
			if code != http.StatusOK || strings.Count(body, `<tr class="ok"`) != 6 {
				t.Fatalf("%s: %d, %d rows", f.Link, code, strings.Count(body, `<tr class="ok"`))
			}
		}
	}
}
