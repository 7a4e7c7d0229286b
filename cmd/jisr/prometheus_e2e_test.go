//go:build prometheus

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/jisr-bus/jisr/bus/bustest"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// The scrape and rule evaluation interval of the test's Prometheus; the
// dashboard's $__interval is the query_range step, the same.
const promScrape = time.Second

// prometheus is a real Prometheus server (Debian's 2.42) on loopback, with
// its own throwaway data directory.
type prometheus struct {
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
	err    error
	base   string // http://127.0.0.1:port
}

// promBinary finds a Prometheus tool: $JISR_PROMETHEUS_BIN/<name>, or PATH.
func promBinary(t *testing.T, name string) string {
	t.Helper()
	if dir := os.Getenv("JISR_PROMETHEUS_BIN"); dir != "" {
		return filepath.Join(dir, name)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install Debian's prometheus package (.ci/run does)", name)
	}
	return p
}

func startPrometheus(t *testing.T, config string) *prometheus {
	t.Helper()
	addr := loopbackAddr(t)
	p := &prometheus{log: &syncBuffer{}, exited: make(chan struct{}), base: "http://" + addr}
	p.cmd = exec.Command(promBinary(t, "prometheus"), "--config.file="+config,
		"--storage.tsdb.path="+t.TempDir(), "--web.listen-address="+addr, "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.stop)
	bustest.Eventually(t, 60*time.Second, func() error {
		select {
		case <-p.exited:
			t.Fatalf("prometheus stopped: %v\n%s", p.err, p.log.String())
		default:
		}
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return bustest.Check(resp.StatusCode == http.StatusOK, "Prometheus ready")
	})
	return p
}

func (p *prometheus) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// api GETs one endpoint of Prometheus's HTTP API and decodes its data.
func (p *prometheus) api(t *testing.T, path string, q url.Values, data any) {
	t.Helper()
	resp, err := http.Get(p.base + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Status != "success" {
		t.Fatalf("GET %s?%s: %s: %s %s", path, q.Encode(), resp.Status, v.Error, b)
	}
	if err := json.Unmarshal(v.Data, data); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// grafanaVars substitutes the Grafana variables the dashboard's queries may
// use, as Grafana computes them for a Prometheus data source whose scrape
// interval is scrape, at query step step: $__interval is the step,
// $__rate_interval is max($__interval + scrape, 4 × scrape). Any other
// variable is an error: the test must be taught what it means.
func grafanaVars(expr string, step, scrape time.Duration) (string, error) {
	if strings.Contains(expr, "[[") {
		return "", fmt.Errorf("old-style [[variable]] in %q", expr)
	}
	rate := max(step+scrape, 4*scrape)
	var unknown []string
	out := regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)(:[a-z]+)?\}?`).ReplaceAllStringFunc(expr, func(v string) string {
		name := strings.Trim(strings.SplitN(strings.TrimPrefix(v, "$"), ":", 2)[0], "{}")
		switch name {
		case "__rate_interval":
			return strconv.Itoa(int(rate/time.Second)) + "s"
		case "__interval":
			return strconv.Itoa(int(step/time.Second)) + "s"
		}
		unknown = append(unknown, v)
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown Grafana variable(s) %v in %q", unknown, expr)
	}
	return out, nil
}

func TestGrafanaVars(t *testing.T) {
	got, err := grafanaVars("rate(x[$__rate_interval]) + rate(y[${__interval}])", time.Second, time.Second)
	if err != nil || got != "rate(x[4s]) + rate(y[1s])" {
		t.Fatalf("%q %v", got, err)
	}
	if got, _ := grafanaVars("rate(x[$__rate_interval])", 30*time.Second, 15*time.Second); got != "rate(x[60s])" {
		t.Fatalf("%q", got)
	}
	for _, bad := range []string{"x{job=\"$job\"}", "x[$__range]", "x{a=\"[[b]]\"}"} {
		if _, err := grafanaVars(bad, time.Second, time.Second); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

type dashPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		Type string `json:"type"`
	} `json:"datasource"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
		Hide         bool   `json:"hide"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // a row's
}

// TestDashboardAndAlertsAgainstPrometheus runs jisr dev, with a standalone
// adapter and backend beside it, under a real Prometheus scraping every job
// of deploy/observability/prometheus.yml (pointed at the running
// components) and loading deploy/observability/alerts.yml. Prometheus loads
// and evaluates every alert rule without error, and every query of every
// panel of the Grafana dashboard — with Grafana's variables substituted as
// Grafana does — returns data over the test's traffic (allowed queries,
// refusals, a provider's "no record", a revocation), each legend's labels
// present.
func TestDashboardAndAlertsAgainstPrometheus(t *testing.T) {
	begin := time.Now()
	f := startDev(t)
	tok := f.getPersonToken(t)

	// Each job of prometheus.yml gets a real target: dev's gateway port
	// (every in-process component), a standalone adapter and backend.
	backendGRPC, backendHTTP := loopbackAddr(t), loopbackAddr(t)
	f.runBackground(t, "--data", t.TempDir(), "backend", "--member", "civil-registry", "--citizens", "500",
		"--listen", backendGRPC, "--http", backendHTTP)
	adapterGRPC, adapterHTTP := loopbackAddr(t), loopbackAddr(t)
	f.runBackground(t, "--data", t.TempDir(), "adapter", "--member", "cnss",
		"--listen", adapterGRPC, "--http", adapterHTTP, "--backend", f.demo.Endpoints["backend/cnss"])
	waitHealthy(t, "http://"+backendHTTP)
	waitHealthy(t, "http://"+adapterHTTP)
	gw, err := url.Parse(f.demo.Endpoints["gateway_http"])
	if err != nil || gw.Scheme != "http" || !strings.HasPrefix(gw.Host, "127.0.0.1:") {
		t.Fatalf("jisr dev's metrics endpoint %q is not plain HTTP on loopback: %v", f.demo.Endpoints["gateway_http"], err)
	}
	targets := map[string]string{"jisr-gateway": gw.Host, "jisr-adapter": adapterHTTP, "jisr-backend": backendHTTP}

	// The scrape configuration: the repository's, with its targets replaced
	// by the running ones, its rule file by the repository's alerts.yml, and
	// intervals of a second. A job the test cannot point anywhere fails it.
	alertsPath, _ := filepath.Abs("../../deploy/observability/alerts.yml")
	b, err := os.ReadFile("../../deploy/observability/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := yaml.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	global, _ := conf["global"].(map[string]any)
	if global == nil {
		t.Fatal("prometheus.yml has no global section")
	}
	global["scrape_interval"], global["evaluation_interval"] = promScrape.String(), promScrape.String()
	if rf, _ := conf["rule_files"].([]any); !slices.Contains(rf, any("alerts.yml")) {
		t.Fatalf("prometheus.yml does not load alerts.yml: %v", conf["rule_files"])
	}
	conf["rule_files"] = []string{alertsPath}
	jobs, _ := conf["scrape_configs"].([]any)
	seen := map[string]bool{}
	for _, j := range jobs {
		job := j.(map[string]any)
		name, _ := job["job_name"].(string)
		target, ok := targets[name]
		if !ok {
			t.Fatalf("prometheus.yml: job %q has no counterpart in this test", name)
		}
		seen[name] = true
		job["static_configs"] = []any{map[string]any{"targets": []string{target}}}
	}
	if len(seen) != len(targets) {
		t.Fatalf("prometheus.yml jobs %v, want %v", seen, targets)
	}
	out, _ := yaml.Marshal(conf)
	config := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(config, out, 0o644); err != nil {
		t.Fatal(err)
	}
	// promtool, Prometheus's own checker, on both files.
	for _, args := range [][]string{{"check", "rules", alertsPath}, {"check", "config", config}} {
		if out, err := exec.Command(promBinary(t, "promtool"), args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
	p := startPrometheus(t, config)
	promStart := time.Now()

	// Every target up: scraped, and its exposition accepted.
	bustest.Eventually(t, 60*time.Second, func() error {
		var v struct {
			ActiveTargets []struct {
				ScrapePool string `json:"scrapePool"`
				ScrapeURL  string `json:"scrapeUrl"`
				Health     string `json:"health"`
				LastError  string `json:"lastError"`
			} `json:"activeTargets"`
		}
		p.api(t, "/api/v1/targets", url.Values{"state": {"active"}}, &v)
		up := map[string]bool{}
		for _, tg := range v.ActiveTargets {
			if tg.Health != "up" {
				return fmt.Errorf("target %s (%s): %s %s", tg.ScrapeURL, tg.ScrapePool, tg.Health, tg.LastError)
			}
			up[tg.ScrapePool] = true
		}
		return bustest.Check(len(up) == len(targets), fmt.Sprintf("every job's target up (have %v)", up))
	})

	// Traffic: one round per poll below, so every counter keeps moving
	// while Prometheus scrapes it.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dial := func(addr string) civilv1.CivilRegistryClient {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return civilv1.NewCivilRegistryClient(cc)
	}
	devCNSS, soloCNSS, soloBackend := dial(f.demo.Endpoints["adapter/cnss"]), dial(adapterGRPC), dial(backendGRPC)
	withMD := func(kv ...string) context.Context { return metadata.NewOutgoingContext(ctx, metadata.Pairs(kv...)) }
	round := func() {
		t.Helper()
		consented := withMD("jisr-purpose", tok.Purpose, "jisr-consent", tok.Token)
		for _, c := range []civilv1.CivilRegistryClient{devCNSS, soloCNSS} {
			if _, err := c.GetPerson(consented, &civilv1.GetPersonRequest{Eid: tok.Citizen}, grpc.WaitForReady(true)); err != nil {
				t.Fatalf("consented query: %v", err)
			}
		}
		if _, err := devCNSS.GetPerson(withMD("jisr-purpose", tok.Purpose), &civilv1.GetPersonRequest{Eid: tok.Citizen}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("a query without a token: %v, want Unauthenticated", err)
		}
		// A mandate (no token) about a citizen the registry does not have:
		// the provider answers NotFound, counted as provider_failed.
		if _, err := devCNSS.IsAlive(withMD("jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: "ZZ000000"}); status.Code(err) != codes.NotFound {
			t.Fatalf("a mandate query about an unknown citizen: %v, want NotFound", err)
		}
		if _, err := soloBackend.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: tok.Citizen}, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("the standalone backend: %v", err)
		}
	}
	round()
	// A revocation, once Prometheus has scraped the lag histogram at zero:
	// another token than the one the traffic uses.
	var revoke string
	for _, d := range f.demo.Tokens {
		if d.JTI != tok.JTI && d.JTI != "" {
			revoke = d.JTI
			break
		}
	}
	if revoke == "" {
		t.Fatal("demo.json has a single token: nothing to revoke beside the traffic's")
	}
	if _, stderr, err := f.cliAudit(t, "consent", "revoke", revoke); err != nil {
		t.Fatalf("consent revoke: %v\n%s", err, stderr)
	}

	// The alert rules: Prometheus loaded every rule of alerts.yml, and has
	// evaluated each without error.
	var alertsFile struct {
		Groups []struct {
			Name  string
			Rules []struct{ Alert, Record string }
		}
	}
	if b, err := os.ReadFile(alertsPath); err != nil || yaml.Unmarshal(b, &alertsFile) != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var wantRules []string
	for _, g := range alertsFile.Groups {
		for _, r := range g.Rules {
			wantRules = append(wantRules, g.Name+"/"+r.Alert+r.Record)
		}
	}
	sort.Strings(wantRules)
	bustest.Eventually(t, 60*time.Second, func() error {
		var v struct {
			Groups []struct {
				Name  string `json:"name"`
				File  string `json:"file"`
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		p.api(t, "/api/v1/rules", nil, &v)
		var got []string
		for _, g := range v.Groups {
			for _, r := range g.Rules {
				if r.LastError != "" {
					t.Fatalf("rule %s/%s: %s", g.Name, r.Name, r.LastError)
				}
				if r.Health != "ok" {
					return fmt.Errorf("rule %s/%s not evaluated yet (%s)", g.Name, r.Name, r.Health)
				}
				got = append(got, g.Name+"/"+r.Name)
			}
		}
		sort.Strings(got)
		return bustest.Check(slices.Equal(got, wantRules), fmt.Sprintf("Prometheus's rules %v to be alerts.yml's %v", got, wantRules))
	})

	// The dashboard: every panel's every query, through query_range over
	// the test's window as a Grafana panel asks it.
	b, err = os.ReadFile("../../deploy/observability/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct{ Name, Type string }
		}
		Panels []dashPanel
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	for _, v := range dash.Templating.List {
		if v.Type != "datasource" {
			t.Fatalf("dashboard variable %q of type %q: the test substitutes none but the data source", v.Name, v.Type)
		}
	}
	var panels []dashPanel
	var flatten func([]dashPanel)
	flatten = func(ps []dashPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				flatten(p.Panels)
				continue
			}
			panels = append(panels, p)
		}
	}
	flatten(dash.Panels)
	type query struct{ panel, ref, expr, legend string }
	var queries []query
	for _, pn := range panels {
		if pn.Datasource.Type != "prometheus" || len(pn.Targets) == 0 {
			t.Errorf("panel %d %q: data source %q, %d queries", pn.ID, pn.Title, pn.Datasource.Type, len(pn.Targets))
		}
		for _, tg := range pn.Targets {
			if tg.Hide {
				continue
			}
			expr, err := grafanaVars(tg.Expr, promScrape, promScrape)
			if err != nil {
				t.Fatalf("panel %d %q %s: %v", pn.ID, pn.Title, tg.RefID, err)
			}
			queries = append(queries, query{fmt.Sprintf("panel %d %q %s", pn.ID, pn.Title, tg.RefID), tg.RefID, expr, tg.LegendFormat})
		}
	}
	if len(queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	legendLabel := regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)
	// What each query lacks; empty once it has data.
	lacking := func(q query) string {
		var v struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		}
		p.api(t, "/api/v1/query_range", url.Values{"query": {q.expr},
			"start": {strconv.FormatInt(promStart.Unix(), 10)}, "end": {strconv.FormatInt(time.Now().Unix()+1, 10)},
			"step": {strconv.Itoa(int(promScrape / time.Second))}}, &v)
		for _, s := range v.Result {
			for _, m := range legendLabel.FindAllStringSubmatch(q.legend, -1) {
				if _, ok := s.Metric[m[1]]; !ok {
					t.Fatalf("%s: legend %q names %s, a label the series %v lacks", q.panel, q.legend, m[1], s.Metric)
				}
			}
			for _, pt := range s.Values {
				if x, err := strconv.ParseFloat(fmt.Sprint(pt[1]), 64); err == nil && !math.IsNaN(x) && !math.IsInf(x, 0) {
					return ""
				}
			}
		}
		return fmt.Sprintf("%s: %s returned %d series, none with a number", q.panel, q.expr, len(v.Result))
	}
	bustest.Eventually(t, 90*time.Second, func() error {
		round()
		var missing []string
		for _, q := range queries {
			if m := lacking(q); m != "" {
				missing = append(missing, m)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("panels without data:\n%s", strings.Join(missing, "\n"))
		}
		return nil
	})
	t.Logf("%d panels, %d queries, each with data in Prometheus; %d alert rules loaded and evaluated; %s in all",
		len(panels), len(queries), len(wantRules), time.Since(begin).Round(time.Second))
	select {
	case <-p.exited:
		t.Fatalf("prometheus stopped: %v\n%s", p.err, p.log.String())
	default:
	}
}
