//go:build benchsmoke

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/jisr-bus/jisr/cmd/internal/bench"
)

// TestBenchQuickRunsEveryScenario runs `jisr bench --quick` end to end —
// every component a separate process (this test binary acting as jisr) —
// and checks the report: every scenario measured without errors, the
// targets evaluated, the JSON, Markdown and SVG written. It takes about
// four minutes under -race on 2 cores: `make test-bench` (mk/benchsmoke.mk)
// runs it, and CI after `make test`.
func TestBenchQuickRunsEveryScenario(t *testing.T) {
	out := t.TempDir()
	root := newRootCmd()
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"--federation", "../testdata/federation.yaml", "bench", "--quick", "--scaling", "--out", out})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	var rep bench.Report
	b, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range rep.Results {
		seen[r.Scenario]++
		if r.Queries == 0 || r.Errors != 0 || r.QPS <= 0 || r.P99 < r.P50 || r.CPUMicros <= 0 {
			t.Errorf("%s: %+v", r.Name, r)
		}
		if (r.Scenario == "full" || r.Scenario == "paired-full") && r.Ratio <= 0 {
			t.Errorf("%s has no ratio to the baseline", r.Name)
		}
		if r.BusyPath <= 0 || r.BusyClient <= 0 || r.BusyMachine <= 0 {
			t.Errorf("%s: cores busy not measured: path %v, load generator %v, machine %v", r.Name, r.BusyPath, r.BusyClient, r.BusyMachine)
		}
		if (r.Scenario == "large" || r.Scenario == "population-10k") && len(r.RoundP50) != 4 {
			t.Errorf("%s: %d rounds, want 4 alternating", r.Name, len(r.RoundP50))
		}
		if (strings.HasPrefix(r.Scenario, "paired-") || r.Scenario == "events-full") && len(r.RoundQPS) != 2 {
			t.Errorf("%s: %d rounds, want 2 alternating with the other side", r.Name, len(r.RoundQPS))
		}
		if _, two := r.CPUByProcess["gateway-gw-2"]; two && (r.Scenario == "events-full" || strings.HasPrefix(r.Scenario, "events-")) {
			t.Errorf("%s ran on two gateway replicas: the life events and the rounds around them run on one", r.Name)
		}
		if r.Offered > 0 && r.Ratio != 0 {
			t.Errorf("%s: paced, but a ratio to the baseline (%v)", r.Name, r.Ratio)
		}
		if strings.HasPrefix(r.Scenario, "paced-") != (r.Offered > 0) || strings.HasPrefix(r.Scenario, "paced-") && r.Control == nil {
			t.Errorf("%s: offered %v queries/s, control %v", r.Name, r.Offered, r.Control)
		}
	}
	for _, s := range []string{"full", "baseline", "no-consent", "no-audit", "no-minimise", "paced-no-consent", "paced-no-audit", "paced-no-minimise", "two-replicas", "paired-full", "paired-baseline", "events-full", "population-10k", "large", "events-publish", "events-delivery-unary", "events-stream-publish", "events-delivery"} {
		if seen[s] == 0 {
			t.Errorf("no %s scenario in the report", s)
		}
	}
	// --scaling: the full path and the baseline at each number of cores.
	steps := bench.ScalingSteps(runtime.NumCPU())
	if seen["scaling"] != len(steps) || seen["scaling-baseline"] != len(steps) {
		t.Errorf("scaling: %d full-path and %d baseline points, want %d each (%v cores)", seen["scaling"], seen["scaling-baseline"], len(steps), steps)
	}
	if rep.Facts.Revocation == nil || rep.Facts.Revocation.Samples == 0 || rep.Facts.Revocation.Max >= 5000 {
		t.Errorf("revocation lag not measured or not effective: %+v", rep.Facts.Revocation)
	}
	if r := rep.Facts.Revocation; r != nil && (r.PerReplica["gw-1"].Max <= 0 || r.PerReplica["gw-2"].Max <= 0) {
		t.Errorf("revocation lag not measured per replica: %+v", r.PerReplica)
	}
	if rep.Sizes[0] <= 0 || rep.Sizes[1] <= 0 || rep.ProviderReply < rep.Sizes[1] {
		t.Errorf("payload sizes: request and reply %v, provider's reply %d", rep.Sizes, rep.ProviderReply)
	}
	if rep.Facts.DevStart <= 0 || rep.Facts.DevIdleRSS <= 0 || len(rep.Facts.IdleRSS) != 5 {
		t.Errorf("start-up or memory not measured: %+v", rep.Facts)
	}
	if len(rep.Targets) < 4 {
		t.Errorf("targets: %+v", rep.Targets)
	}
	md, _ := os.ReadFile(filepath.Join(out, "latest.md"))
	if !strings.Contains(string(md), "at one offered rate for both") {
		t.Errorf("the Markdown report lacks the safeguards' cost at one offered rate:\n%s", md)
	}
	if !strings.Contains(string(md), "| full path, c=16 |") || !strings.Contains(stdout.String(), "## Targets") || !strings.Contains(string(md), "## Scaling with cores") {
		t.Errorf("the Markdown report lacks the table:\n%s", md)
	}
	svg, _ := os.ReadFile(filepath.Join(out, "latest.svg"))
	if err := xml.Unmarshal(svg, new(struct{ XMLName xml.Name })); err != nil || !bytes.Contains(svg, []byte("<polyline")) {
		t.Errorf("the SVG chart is not well-formed or has no series: %v", err)
	}
}
