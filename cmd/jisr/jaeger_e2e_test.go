//go:build jaeger

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/console"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// jaeger is a real Jaeger all-in-one (v1.76, in-memory storage) on
// loopback: its OTLP/gRPC receiver and its query service.
type jaeger struct {
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{} // closed once it has exited
	err    error         // why, once exited
	otlp   string        // host:port of the OTLP/gRPC receiver
	query  string        // base URL of the query service (/api/traces)
}

// startJaeger runs bin/jaeger-all-in-one (make jaeger builds it once into
// ~/.cache/jisr/jaeger-<version>) with every port on loopback.
func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	bin := os.Getenv("JISR_JAEGER_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin")
	}
	exe := filepath.Join(bin, "jaeger-all-in-one")
	if _, err := os.Stat(exe); err != nil {
		t.Fatalf("%s not found: run `make jaeger` (or make test-jaeger)", exe)
	}
	// Ports drawn below Linux's ephemeral range (32768 and up): one drawn
	// there could become the local end of an outgoing connection before
	// Jaeger binds it (seen in CI: "bind: address already in use").
	port := func() string {
		for range 64 {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(20000+rand.IntN(12000)))
			if err != nil {
				continue
			}
			defer l.Close()
			return l.Addr().String()
		}
		t.Fatal("no free loopback port below 32000")
		return ""
	}
	j := &jaeger{log: &syncBuffer{}, otlp: port(), exited: make(chan struct{})}
	queryAddr, admin := port(), port()
	j.query = "http://" + queryAddr
	j.cmd = exec.Command(exe,
		"--collector.otlp.grpc.host-port="+j.otlp, "--collector.otlp.http.host-port="+port(),
		"--collector.grpc-server.host-port="+port(), "--collector.http-server.host-port="+port(),
		"--query.http-server.host-port="+queryAddr, "--query.grpc-server.host-port="+port(),
		"--admin.http.host-port="+admin, "--memory.max-traces=10000", "--log-level=warn")
	j.cmd.Env = append(os.Environ(), "SPAN_STORAGE_TYPE=memory")
	j.cmd.Stdout, j.cmd.Stderr = j.log, j.log
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { j.err = j.cmd.Wait(); close(j.exited) }()
	t.Cleanup(j.stop)
	bustest.Eventually(t, 60*time.Second, func() error {
		select {
		case <-j.exited:
			t.Fatalf("jaeger-all-in-one stopped: %v\n%s", j.err, j.log.String())
		default:
		}
		resp, err := http.Get("http://" + admin + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return bustest.Check(resp.StatusCode == http.StatusOK, "Jaeger's health check")
	})
	return j
}

// stop ends Jaeger (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (j *jaeger) stop() {
	select {
	case <-j.exited:
		return
	default:
	}
	_ = j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.exited:
	case <-time.After(10 * time.Second):
		_ = j.cmd.Process.Kill()
		<-j.exited
	}
}

// TestConsoleReadsTracesFromJaeger runs jisr dev exporting its spans over
// OTLP to a real Jaeger, with the console reading traces from Jaeger's
// query API (--traces-from). One consented query's trace, opened in the
// console, is read from Jaeger and shows every hop — the consumer adapter,
// the gateway's steps, the provider adapter, the backend — and exactly the
// spans the gateway holds in memory, with the same names, parents, services
// and times. With Jaeger stopped, the page says so and shows the in-memory
// spans instead.
func TestConsoleReadsTracesFromJaeger(t *testing.T) {
	j := startJaeger(t)
	t.Setenv("OTEL_SDK_DISABLED", "")
	t.Setenv("OTEL_SERVICE_NAME", "")
	f := startDevWith(t, func(g *process.Env) {
		g.OTLP = j.otlp
		g.TraceMemory = 1000
		g.TracesFrom = "jaeger=" + j.query
	})
	tok := f.getPersonToken(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	client := civilv1.NewCivilRegistryClient(f.dial(t, "cnss"))
	call := metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", tok.Purpose, "jisr-consent", tok.Token))
	if _, err := client.GetPerson(call, &civilv1.GetPersonRequest{Eid: tok.Citizen}); err != nil {
		t.Fatal(err)
	}
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
		t.Fatalf("the query's audit record has no trace id:\n%s", out)
	}

	// What the gateway holds in memory: its trace, and the caller's it links.
	consoleURL := strings.TrimSuffix(f.demo.Endpoints["console"], "/console/")
	auditor := auditorClient(t, f.g)
	memTrace := func(id string) []telemetry.Span {
		t.Helper()
		resp, err := auditor.Get(consoleURL + "/v1/traces/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct {
			Spans []telemetry.Span `json:"spans"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
			t.Fatalf("GET /v1/traces/%s: %s", id, resp.Status)
		}
		return v.Spans
	}
	mem := memTrace(traceID)
	var callerTrace string
	for _, s := range mem {
		if s.Name == "process jisr.q" && len(s.Links) == 1 {
			callerTrace = s.Links[0].TraceID
		}
	}
	if callerTrace == "" {
		t.Fatalf("the gateway's query span links no caller's trace: %+v", mem)
	}
	mem = append(mem, memTrace(callerTrace)...)

	// The console's trace page, read from Jaeger once the spans are there
	// (the exporters send in batches, every few seconds).
	page := func() string {
		t.Helper()
		resp, err := auditor.Get(consoleURL + "/console/trace/" + traceID)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("the console's trace page: %s\n%s", resp.Status, b)
		}
		return string(b)
	}
	spanRow := regexp.MustCompile(`<tr class="span" data-depth="(\d+)" data-span="([0-9a-f]{16})"><td dir="ltr" class="d\d+">([^<]*)</td><td>([^<]*)</td>`)
	var body string
	bustest.Eventually(t, 60*time.Second, func() error {
		body = page()
		if !strings.Contains(body, `id="trace-source">Spans read from <span dir="ltr">Jaeger at `+j.query+`</span>`) {
			return fmt.Errorf("the page does not show spans read from Jaeger yet")
		}
		return bustest.Check(len(spanRow.FindAllStringSubmatch(body, -1)) >= len(mem), "every span in Jaeger")
	})
	if strings.Contains(body, `id="trace-backend-failed"`) {
		t.Fatalf("a fallback banner although Jaeger answered:\n%s", body)
	}
	t.Logf("the waterfall read from Jaeger: %d spans; the gateway holds %d", len(spanRow.FindAllStringSubmatch(body, -1)), len(mem))
	shown := map[string][]string{} // span id → depth, name, service
	names := map[string]int{}
	for _, m := range spanRow.FindAllStringSubmatch(body, -1) {
		shown[m[2]] = []string{m[1], m[3], m[4]}
		names[m[3]+" @ "+m[4]]++
	}
	// Every hop, with the component that made it.
	for _, hop := range []string{
		"jisr.civilregistry.v1.CivilRegistry/GetPerson @ jisr-adapter-cnss", // the consumer adapter's gRPC server span
		"send jisr.q @ jisr-adapter-cnss",
		"process jisr.q @ jisr-gateway", "gateway.policy.check @ jisr-gateway", "gateway.consent.verify @ jisr-gateway",
		"send jisr.p @ jisr-gateway", "gateway.minimise @ jisr-gateway", "gateway.audit.append @ jisr-gateway",
		"process jisr.p @ jisr-adapter-civil-registry",
		"jisr.civilregistry.v1.CivilRegistry/GetPerson @ jisr-adapter-civil-registry", // its client call to the backend
		"jisr.civilregistry.v1.CivilRegistry/GetPerson @ jisr-backend-civil-registry",
		"store.lookup @ jisr-backend-civil-registry",
	} {
		if names[hop] == 0 {
			t.Errorf("no %q in the waterfall read from Jaeger (have %v)", hop, names)
		}
	}
	// Exactly the spans the gateway holds, and the gateway's query span
	// drawn under the caller's (the link, as Jaeger keeps it).
	if len(shown) != len(mem) {
		t.Errorf("the page shows %d spans from Jaeger, the gateway holds %d", len(shown), len(mem))
	}
	for _, s := range mem {
		row, ok := shown[s.SpanID]
		switch {
		case !ok:
			t.Errorf("span %s %q held by the gateway is not in the page read from Jaeger", s.SpanID, s.Name)
		case row[1] != s.Name || row[2] != s.Service:
			t.Errorf("span %s: %q @ %q from Jaeger, %q @ %q in memory", s.SpanID, row[1], row[2], s.Name, s.Service)
		case s.Name == "process jisr.q" && row[0] == "0":
			t.Errorf("the gateway's query span is a root of the waterfall: the link to the caller was lost")
		}
	}

	// Span by span, Jaeger's answer as the console reads it matches the
	// gateway's: parent, links, kind, status and times (Jaeger keeps µs).
	backend, err := console.ParseTracesFrom("jaeger=" + j.query)
	if err != nil {
		t.Fatal(err)
	}
	fromJaeger := map[string]telemetry.Span{}
	for _, id := range []string{traceID, callerTrace} {
		tid, _ := trace.TraceIDFromHex(id)
		spans, err := backend.Trace(ctx, tid)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range spans {
			fromJaeger[s.SpanID] = s
		}
	}
	for _, m := range mem {
		s := fromJaeger[m.SpanID]
		if s.TraceID != m.TraceID || s.ParentID != m.ParentID || s.Kind != m.Kind || s.Status != m.Status ||
			fmt.Sprint(s.Links) != fmt.Sprint(m.Links) ||
			s.Start.Sub(m.Start).Abs() > time.Microsecond || s.End.Sub(m.End).Abs() > 2*time.Microsecond {
			t.Errorf("span %s %q:\n Jaeger %+v\n memory %+v", m.SpanID, m.Name, s, m)
		}
		for k, v := range m.Attributes {
			if s.Attributes[k] != v {
				t.Errorf("span %q attribute %s: %q from Jaeger, %q in memory", m.Name, k, s.Attributes[k], v)
			}
		}
	}

	// Jaeger gone: the page says so, names the error, and shows the
	// gateway's own spans — the same ones.
	j.stop()
	body = page()
	if !strings.Contains(body, `id="trace-backend-failed"`) || !strings.Contains(body, "Jaeger at "+j.query) || !strings.Contains(body, "Spans from this gateway&#39;s memory") {
		t.Fatalf("with Jaeger stopped the page does not say so:\n%s", body)
	}
	if n := len(spanRow.FindAllStringSubmatch(body, -1)); n != len(mem) {
		t.Errorf("with Jaeger stopped the page shows %d spans, the gateway holds %d", n, len(mem))
	}
}
