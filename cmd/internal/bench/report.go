package bench

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Result is one scenario's measurement.
type Result struct {
	Name         string             `json:"name"`
	Scenario     string             `json:"scenario"`
	Concurrency  int                `json:"concurrency"`
	Queries      int64              `json:"queries"`
	Errors       int64              `json:"errors"`
	FirstError   string             `json:"first_error,omitempty"`
	Seconds      float64            `json:"seconds"`
	QPS          float64            `json:"qps"`
	P50          float64            `json:"p50_ms"`
	P90          float64            `json:"p90_ms"`
	P99          float64            `json:"p99_ms"`
	CPUMicros    float64            `json:"cpu_us_per_query"`
	CPUByProcess map[string]float64 `json:"cpu_us_per_query_by_process,omitempty"`
	// ClientCPUMicros is the load generator's own CPU per query (not in
	// CPUMicros: it is not part of the path, but it shares the cores).
	ClientCPUMicros float64 `json:"client_cpu_us_per_query"`
	// BusyPath, BusyClient and BusyMachine are the fractions of all the
	// machine's cores used by the path's processes, by the load generator
	// and by everything (other users included) during the scenario.
	BusyPath    float64   `json:"busy_path"`
	BusyClient  float64   `json:"busy_client"`
	BusyMachine float64   `json:"busy_machine"`
	Rounds      int       `json:"rounds,omitempty"` // alternating rounds merged into this result
	RoundP50    []float64 `json:"round_p50_ms,omitempty"`
	RoundQPS    []float64 `json:"round_qps,omitempty"`
	// Offered is, for calls paced to a fixed rate, that rate in queries/s
	// (0: the callers called again as soon as a call returned).
	Offered float64 `json:"offered_qps,omitempty"`
	// Control is, for a safeguard switched off, the full path measured in
	// the rounds alternating with it.
	Control *Control `json:"control,omitempty"`
	Ratio   float64  `json:"ratio_to_baseline,omitempty"`
	// AllocsPerQuery is the heap allocations (runtime.MemStats.Mallocs) of
	// the path's processes per query, in all and by process; 0 without
	// --profile (read from each process's pprof endpoint).
	AllocsPerQuery  float64            `json:"allocs_per_query,omitempty"`
	AllocsByProcess map[string]float64 `json:"allocs_per_query_by_process,omitempty"`
	// GOMAXPROCS is, for a scaling point, the cores each component but
	// NATS was limited to.
	GOMAXPROCS   int              `json:"gomaxprocs,omitempty"`
	RSSUnderLoad map[string]int64 `json:"rss_under_load_bytes,omitempty"`

	lat            []time.Duration
	cpu, clientCPU time.Duration
	perCPU         map[string]time.Duration
	machine        cpuTicks
}

type Control struct {
	QPS       float64 `json:"qps"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	CPUMicros float64 `json:"cpu_us_per_query"`
	// CPUByProcess is the control's CPU per query of each process.
	CPUByProcess map[string]float64 `json:"cpu_us_per_query_by_process,omitempty"`
}

type RevocationFacts struct {
	Revocations int `json:"revocations"`
	Samples     int `json:"samples"` // revocations × replicas
	RevocationLag
	PerReplica map[string]RevocationLag `json:"per_replica"`
}

// revocationLag is the time from the revocation to the first refusal.
type RevocationLag struct {
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Facts are the run's other measurements.
type Facts struct {
	Started         time.Time        `json:"started"`
	Machine         string           `json:"machine"`
	Cores           int              `json:"cores"`
	Seed10k         float64          `json:"seed_10k_seconds"`
	Large           int              `json:"large_citizens,omitempty"`
	SeedLarge       float64          `json:"seed_large_seconds,omitempty"`
	LargeStoreBytes int64            `json:"large_store_bytes,omitempty"`
	HeaderBytes     int              `json:"header_bytes"`
	IdleRSS         map[string]int64 `json:"idle_rss_bytes"`
	Revocation      *RevocationFacts `json:"revocation,omitempty"`
	DevFirstStart   float64          `json:"dev_first_start_seconds"`
	DevStart        float64          `json:"dev_start_seconds"`
	DevIdleRSS      int64            `json:"dev_idle_rss_bytes"`
	// EventGateways is the gateway replicas that served the life events
	// (one, as for the full path they are compared with);
	// DeliveriesPerEvent the consumers' deliveries each publication made
	// (an audit record, a store, an ack and a backend call each).
	EventGateways      int      `json:"event_gateways,omitempty"`
	DeliveriesPerEvent float64  `json:"deliveries_per_event,omitempty"`
	Profiles           []string `json:"profiles,omitempty"`
	// OtherProfiles are the allocation and mutex profiles taken
	// with the CPU profiles.
	OtherProfiles []string `json:"other_profiles,omitempty"`
}

type Target struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

type Report struct {
	Facts Facts  `json:"facts"`
	Sizes [2]int `json:"request_reply_bytes"`
	// ProviderReply is the provider's reply before minimisation: the
	// size that crosses the provider hop (the baseline's responder sends it).
	ProviderReply int      `json:"provider_reply_bytes"`
	Results       []Result `json:"results"`
	Targets       []Target `json:"targets"`
	Notes         []string `json:"notes"`
}

func machine() string {
	model := ""
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		f.Close()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
	}
	return fmt.Sprintf("%d cores (%s)%s, %s/%s, %s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// judgedAt is the load the ratio targets are judged at — the full path
// against the baseline (issue 14), the life events against the full path
// (issue 19) — and the life events are measured at: 128 callers where the
// run measures it, else its heaviest load.
func (b *harness) judgedAt() int {
	if slices.Contains(b.o.concurrency, 128) {
		return 128
	}
	return b.top()
}

func (b *harness) find(scenario string, conc int) *Result { return findIn(b.results, scenario, conc) }

// findIn is the first of results of the scenario at the concurrency (any,
// where conc is 0), or nil.
func findIn(results []Result, scenario string, conc int) *Result {
	for i := range results {
		if r := &results[i]; r.Scenario == scenario && (conc == 0 || r.Concurrency == conc) {
			return r
		}
	}
	return nil
}

// report fills the ratios and targets, writes latest.{json,md,svg} and a
// dated copy of each under --out, and prints the Markdown.
func (b *harness) report(out io.Writer) error {
	for i := range b.results {
		r := &b.results[i]
		base := b.find("baseline", r.Concurrency)
		switch r.Scenario {
		case "baseline", "paired-baseline":
			base = nil
		case "paired-full":
			base = b.find("paired-baseline", r.Concurrency)
		}
		if r.Offered > 0 {
			base = nil // paced: its throughput is the rate it was offered
		}
		if base != nil && base.QPS > 0 {
			r.Ratio = r.QPS / base.QPS
		}
	}
	rep := Report{Facts: b.facts, Sizes: [2]int{b.reqSize, b.respSize}, Results: b.results, Targets: b.targets(), ProviderReply: b.fullRespSize}
	rep.Notes = b.notes(rep.Targets)
	if err := os.MkdirAll(b.o.out, 0o755); err != nil {
		return err
	}
	stamp := b.facts.Started.Format("2006-01-02T1504Z")
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	md := b.markdown(rep)
	svg := b.svg()
	for name, data := range map[string][]byte{"json": append(js, '\n'), "md": []byte(md), "svg": []byte(svg)} {
		for _, base := range []string{"latest", stamp} {
			if err := os.WriteFile(filepath.Join(b.o.out, base+"."+name), data, 0o644); err != nil {
				return err
			}
		}
	}
	fmt.Fprintln(out, md)
	fmt.Fprintf(out, "written: %s/latest.{md,json,svg} (and %s.*)\n", b.o.out, stamp)
	return nil
}

func (b *harness) targets() []Target {
	var ts []Target
	add := func(target string, ok bool, measured string, args ...any) {
		ts = append(ts, Target{Target: target, Measured: fmt.Sprintf(measured, args...), Met: ok})
	}
	var failed []string
	for _, r := range b.results {
		if r.Errors > 0 {
			failed = append(failed, fmt.Sprintf("%s: %d", r.Name, r.Errors))
		}
	}
	add("no errors in any measured scenario (a figure with errors is not a measure of the path)", len(failed) == 0, "%s", cmp.Or(strings.Join(failed, "; "), "none"))
	top := b.o.concurrency[len(b.o.concurrency)-1]
	at := b.judgedAt()
	if f, base := b.find("paired-full", at), b.find("paired-baseline", at); f != nil && base != nil && base.QPS > 0 {
		ratio := f.QPS / base.QPS
		apart := ""
		if f1, b1 := b.find("full", at), b.find("baseline", at); f1 != nil && b1 != nil && b1.QPS > 0 {
			apart = fmt.Sprintf("; the separate scenarios, minutes apart: %.0f%% (%.0f of %.0f)", 100*f1.QPS/b1.QPS, f1.QPS, b1.QPS)
		}
		add(fmt.Sprintf("full path at c=%d ≥ 50%% of the raw two-hop baseline, in alternating rounds (aim 70%%)", at), ratio >= .5,
			"%.0f%% (%.0f of %.0f queries/s; rounds: full path %s, baseline %s)%s", 100*ratio, f.QPS, base.QPS, joinQPS(f.RoundQPS), joinQPS(base.RoundQPS), apart)
	} else if f, base := b.find("full", at), b.find("baseline", at); f != nil && base != nil && base.QPS > 0 {
		ratio := f.QPS / base.QPS
		add(fmt.Sprintf("full path at c=%d ≥ 50%% of the raw two-hop baseline (aim 70%%)", at), ratio >= .5,
			"%.0f%% (%.0f of %.0f queries/s)", 100*ratio, f.QPS, base.QPS)
	}
	if f := b.find("full", 16); f != nil {
		add("p99 at c=16 ≤ 5 ms end to end", f.P99 <= 5, "%.2f ms", f.P99)
	}
	if a := b.find("no-audit", top); a != nil {
		if paid, ok := paidCost(*a); ok {
			p := b.find("paced-no-audit", top)
			if pp, ok := paidCostOf(p); ok && p.KeptUp() {
				add("audit ≤ 30 µs of CPU per query (in the gateway and NATS, switched off in alternating rounds at the same offered rate)", pp <= 30,
					"%.0f µs in the gateway and NATS at %.0f queries/s offered to both (whole path: %.0f µs); at full load, where the path without it also goes %+.0f%% faster: %.0f µs (whole path: %.0f µs)",
					pp, p.Offered, p.Control.CPUMicros-p.CPUMicros, 100*(a.QPS/a.Control.QPS-1), paid, a.Control.CPUMicros-a.CPUMicros)
			} else {
				slow := ""
				if p != nil {
					slow = fmt.Sprintf("; paced to %.0f queries/s, the path did %.0f with it and %.0f without: not the same work, not compared", p.Offered, p.Control.QPS, p.QPS)
				}
				add("audit ≤ 30 µs of CPU per query (in the gateway and NATS, switched off in alternating rounds)", paid <= 30,
					"%.0f µs in the gateway and NATS (whole path, adapters and backend included: %.0f µs)%s", paid, a.Control.CPUMicros-a.CPUMicros, slow)
			}
		}
	}
	ec := at
	f, around := b.find("events-full", ec), ""
	if f != nil {
		around = fmt.Sprintf(" in rounds just before and after the events (%s)", joinQPS(f.RoundQPS))
	} else {
		f = b.find("full", ec)
	}
	if ev := b.find("events-delivery", ec); f != nil && ev != nil && f.QPS > 0 {
		unary := ""
		if u := b.find("events-delivery-unary", ec); u != nil {
			unary = fmt.Sprintf("; unary Publish (a call per event, %d callers): %.0f events/s end to end (%.0f%%)", ec, u.QPS, 100*u.QPS/f.QPS)
		}
		add(fmt.Sprintf("life events end to end with audit (PublishStream, %d in flight; the receiving adapter delivering %d at once, --event-in-flight) ≥ the full path's throughput at c=%d, same run (issue 19)", ec, eventInFlight(ec), ec), ev.QPS >= f.QPS,
			"%.0f events/s (%.0f deliveries/s, %.2f per event) vs %.0f queries/s%s (%.0f%%), both through %d gateway replica(s); lag p50 %.1f ms, p99 %.1f ms%s",
			ev.QPS, ev.QPS*b.facts.DeliveriesPerEvent, b.facts.DeliveriesPerEvent, f.QPS, around, 100*ev.QPS/f.QPS, b.facts.EventGateways, ev.P50, ev.P99, unary)
	}
	if ref := b.o.compare; ref != nil {
		mine, theirs := b.find("full", top), findIn(ref.Results, "full", top)
		unmet := fmt.Sprintf("full path at c=%d ≥ 5× the figure of %s", top, b.o.comparePath)
		switch {
		case mine == nil || theirs == nil || theirs.QPS <= 0:
			add(unmet, false, "not comparable: that report or this run has no full path at c=%d", top)
		case ref.Facts.Cores >= b.facts.Cores:
			add(unmet, false, "not comparable: that report ran on %d cores, this run on %d", ref.Facts.Cores, b.facts.Cores)
		default:
			add(fmt.Sprintf("full path at c=%d on %d cores ≥ 5× the %d-core figure (%s, %s)", top, b.facts.Cores, ref.Facts.Cores, b.o.comparePath, ref.Facts.Started.Format("2006-01-02 15:04 MST")), mine.QPS >= 5*theirs.QPS,
				"%.0f vs %.0f queries/s (%.1f×)", mine.QPS, theirs.QPS, mine.QPS/theirs.QPS)
		}
	}
	if small, large := b.find("population-10k", 0), b.find("large", 0); small != nil && large != nil && small.P50 > 0 {
		add(fmt.Sprintf("%d citizens: p50 within 20%% of 10,000 (c=%d, alternating rounds)", b.facts.Large, large.Concurrency), large.P50 <= 1.2*small.P50,
			"%.2f ms vs %.2f ms (%+.0f%%)", large.P50, small.P50, 100*(large.P50/small.P50-1))
	}
	if r := b.facts.Revocation; r != nil {
		ok, per := len(r.PerReplica) >= 2, []string{}
		for _, inst := range sortedKeys(r.PerReplica) {
			ok = ok && r.PerReplica[inst].P99 < 1000
			per = append(per, fmt.Sprintf("%s p99 %.1f ms", inst, r.PerReplica[inst].P99))
		}
		add("revocation effective on both replicas: p99 < 1 s", ok, "%s (both: p50 %.1f ms, max %.1f ms, %d samples)", strings.Join(per, ", "), r.P50, r.Max, r.Samples)
	}
	if b.facts.DevIdleRSS > 0 {
		add("whole dev federation < 300 MiB resident, idle", b.facts.DevIdleRSS < 300<<20, "%.0f MiB", mib(b.facts.DevIdleRSS))
	}
	if b.facts.DevStart > 0 {
		add("`jisr dev` ready < 5 s with an existing data directory", b.facts.DevStart < 5, "%.2f s", b.facts.DevStart)
	}
	return ts
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func (b *harness) markdown(rep Report) string {
	var s strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&s, format, args...) }
	w("# jisr bench — %s\n\n", rep.Facts.Started.Format("2006-01-02 15:04 MST"))
	w("Machine: %s. Every component a separate process on loopback, mTLS on every NATS link. ", rep.Facts.Machine)
	w("Query: `CivilRegistry/GetPerson` through the CNSS adapter with a consent token (request %d B + %d B of headers; reply %d B from the provider, %d B after minimisation — the baseline carries the same sizes on each hop), %d citizens with a token each, on a copy of the federation with every member's fair-share limits lifted to the most it allows (the limiter is not what is measured). ", rep.Sizes[0], rep.Facts.HeaderBytes, rep.ProviderReply, rep.Sizes[1], tokensPerRun)
	conns := b.o.natsConns
	if conns == 0 {
		conns = min(max(runtime.NumCPU()/4, 1), 4) // the processes' default (process.DefaultNATSConns)
	}
	w("Connections: the gateway and each adapter %d NATS connection(s), the load generator %d HTTP/2 link(s) to the cnss adapter; the baseline's client, relay and responder one NATS connection each. ", conns, loadLinks())
	w("Each scenario: %s warm-up, %s measured.\n\n", b.o.warmup, b.o.duration)
	w("| scenario | callers | queries/s | p50 ms | p90 ms | p99 ms | CPU µs/query | vs baseline | cores busy: path + load generator / machine | errors |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		if strings.HasPrefix(r.Scenario, "scaling") || r.Offered > 0 {
			continue // their own sections
		}
		ratio := "—"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.0f%%", 100*r.Ratio)
		}
		w("| %s | %d | %.0f | %.2f | %.2f | %.2f | %.0f | %s | %.0f%% + %.0f%% / %.0f%% | %d |\n", r.Name, r.Concurrency, r.QPS, r.P50, r.P90, r.P99, r.CPUMicros, ratio,
			100*r.BusyPath, 100*r.BusyClient, 100*r.BusyMachine, r.Errors)
	}
	w("\nCPU µs/query is the user+system CPU (from /proc/<pid>/stat) of every process of the path — NATS, gateway(s), both adapters, backend; or NATS, relay, responder for the baseline — divided by the queries; the load generator (this process) is not in it. ")
	w("Cores busy: the share of all %d cores used by the path's processes, by the load generator, and by the whole machine (other users included: anything above the first two is noise from elsewhere).\n\n", runtime.NumCPU())
	markdownCosts(w, rep)
	b.markdownAllocs(w, rep)
	markdownScaling(w, rep)
	w("## Targets\n\n| target | measured | met |\n|---|---|---|\n")
	for _, t := range rep.Targets {
		met := "yes"
		if !t.Met {
			met = "**no**"
		}
		w("| %s | %s | %s |\n", t.Target, t.Measured, met)
	}
	b.markdownMemory(w, rep)
	if len(rep.Notes) > 0 {
		w("\n## Notes: what limits the missed targets\n\n")
		for _, n := range rep.Notes {
			w("- %s\n", n)
		}
	}
	if len(rep.Facts.Profiles) > 0 {
		w("\nCPU profiles of each component under the heaviest full-path load, beside this report: %s (e.g. `go tool pprof -top bin/jisr %s`).\n",
			"`"+strings.Join(rep.Facts.Profiles, "`, `")+"`", rep.Facts.Profiles[0])
		if len(rep.Facts.OtherProfiles) > 0 {
			w("Allocation and mutex-contention profiles of the same seconds: `<component>-{allocs,mutex}.pprof` (e.g. `go tool pprof -top -sample_index=alloc_objects bin/jisr gateway-gw-1-allocs.pprof`, `go tool pprof -top bin/jisr gateway-gw-1-mutex.pprof`).\n")
		}
	}
	return s.String()
}

// markdownCosts writes the tables of the cost of each safeguard: at full
// load, and at one offered rate for both.
func markdownCosts(w func(string, ...any), rep Report) {
	var costs, paced []Result
	for _, r := range rep.Results {
		switch {
		case r.Control == nil:
		case r.Offered > 0:
			paced = append(paced, r)
		default:
			costs = append(costs, r)
		}
	}
	if len(costs) == 0 {
		return
	}
	w("## The cost of each safeguard\n\n")
	w("The gateway restarted with `--unsafe-skip <safeguard>`, against the full path with a gateway restarted the same way, in alternating rounds (on, off, off, on), c=%d.\n\n", costs[0].Concurrency)
	w("| safeguard | queries/s on → off | p50 ms on → off | p99 ms on → off | CPU µs/query on → off | its cost per query: whole path | in the gateway and NATS |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range costs {
		c := r.Control
		w("| %s | %.0f → %.0f (%+.0f%%) | %.2f → %.2f | %.2f → %.2f | %.0f → %.0f | %.0f µs | %s |\n", safeguardOf(r),
			c.QPS, r.QPS, 100*(r.QPS/c.QPS-1), c.P50, r.P50, c.P99, r.P99, c.CPUMicros, r.CPUMicros, c.CPUMicros-r.CPUMicros, paidText(&r))
	}
	w("\nA safeguard's work is done in the gateway (and, for the audit record, its store and acknowledgement, in NATS); the adapters and the backend do the same work with it or without it, so their differences, listed below, are the noise of the run, and the last column leaves them out.\n\n")
	costsByProcess(w, costs)
	if len(paced) == 0 {
		w("\n")
		return
	}
	w("\nAt full load a path without a safeguard also goes faster, and a busier process spends less CPU per query (more work for each wake-up, fuller writes): the difference above counts that gain as the safeguard's cost too. The same rounds again at one offered rate for both — %.0f%% of what the control did, calls paced among the %d callers — compare the same work in the same time; the difference is the safeguard's own work (compared only where both sides did at least %.0f%% of the rate).\n\n", 100*pacedShare, paced[0].Concurrency, 100*keptUp)
	w("| safeguard | offered queries/s | done on → off | p50 ms on → off | p99 ms on → off | CPU µs/query on → off | its cost per query: whole path | in the gateway and NATS |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range paced {
		c := r.Control
		whole, paid := fmt.Sprintf("%.0f µs", c.CPUMicros-r.CPUMicros), paidText(&r)
		if !r.KeptUp() {
			whole, paid = "not compared: a side did not keep up", "—"
		}
		w("| %s | %.0f | %.0f → %.0f | %.2f → %.2f | %.2f → %.2f | %.0f → %.0f | %s | %s |\n", safeguardOf(r), r.Offered,
			c.QPS, r.QPS, c.P50, r.P50, c.P99, r.P99, c.CPUMicros, r.CPUMicros, whole, paid)
	}
	w("\n")
	costsByProcess(w, paced)
	w("\n")
}

// safeguardOf names the safeguard r was measured without.
func safeguardOf(r Result) string {
	return strings.TrimPrefix(strings.TrimPrefix(r.Scenario, "paced-"), "no-")
}

// paidText is paidCost of r as a table cell.
func paidText(r *Result) string {
	if v, ok := paidCostOf(r); ok {
		return fmt.Sprintf("%.0f µs", v)
	}
	return "—"
}

// costsByProcess lists where each cost is paid: the CPU per query of each
// process, on → off.
func costsByProcess(w func(string, ...any), costs []Result) {
	for _, r := range costs {
		if len(r.Control.CPUByProcess) == 0 {
			continue
		}
		var parts []string
		for _, p := range sortedKeys(r.Control.CPUByProcess) {
			on, off := r.Control.CPUByProcess[p], r.CPUByProcess[p]
			parts = append(parts, fmt.Sprintf("%s %.0f → %.0f (%+.0f)", p, on, off, off-on))
		}
		w("- %s, CPU µs/query by process, on → off: %s.\n", safeguardOf(r), strings.Join(parts, ", "))
	}
}

// joinQPS lists throughputs, as "2836, 2910".
func joinQPS(qps []float64) string {
	parts := make([]string, len(qps))
	for i, q := range qps {
		parts[i] = fmt.Sprintf("%.0f", q)
	}
	return strings.Join(parts, ", ")
}

// KeptUp reports whether a paced result and its control both did at least
// 97 % of the offered rate — the condition for comparing their CPU per
// query as the same work in the same time. An unpaced result keeps up.
func (r *Result) KeptUp() bool {
	if r.Offered <= 0 {
		return true
	}
	return r.QPS >= keptUp*r.Offered && (r.Control == nil || r.Control.QPS >= keptUp*r.Offered)
}

// keptUp is the share of its offered rate a paced run must do.
const keptUp = 0.97

// paidCostOf is paidCost of r; false where r is nil.
func paidCostOf(r *Result) (float64, bool) {
	if r == nil {
		return 0, false
	}
	return paidCost(*r)
}

// paidCost is a safeguard's cost per query in the processes that do its
// work — the gateway replicas and NATS — on → off, from alternating
// rounds; false without CPU by process.
func paidCost(r Result) (float64, bool) {
	if r.Control == nil || len(r.Control.CPUByProcess) == 0 {
		return 0, false
	}
	sum, found := 0.0, false
	for p, on := range r.Control.CPUByProcess {
		if p == "nats" || strings.HasPrefix(p, "gateway") {
			sum += on - r.CPUByProcess[p]
			found = true
		}
	}
	return sum, found
}

// markdownMemory writes the memory and start-up section.
func (b *harness) markdownMemory(w func(string, ...any), rep Report) {
	w("\n## Memory and start-up\n\n| process | resident idle | resident under load (c=%d) |\n|---|---:|---:|\n", b.top())
	var loaded map[string]int64
	if f := b.find("full", b.top()); f != nil {
		loaded = f.RSSUnderLoad
	}
	var idleSum, loadSum int64
	for _, name := range sortedKeys(rep.Facts.IdleRSS) {
		w("| %s | %.0f MiB | %.0f MiB |\n", name, mib(rep.Facts.IdleRSS[name]), mib(loaded[name]))
		idleSum += rep.Facts.IdleRSS[name]
		loadSum += loaded[name]
	}
	w("| **all five** | **%.0f MiB** | **%.0f MiB** |\n", mib(idleSum), mib(loadSum))
	w("| `jisr dev` (everything, 4 ministries, one process) | %.0f MiB | |\n\n", mib(rep.Facts.DevIdleRSS))
	w("`jisr dev` start: %.2f s with an existing data directory (first start, creating the PKI and seeding 4 × 10,000 citizens: %.2f s). ", rep.Facts.DevStart, rep.Facts.DevFirstStart)
	w("Seeding the civil registry: 10,000 citizens %.1f s", rep.Facts.Seed10k)
	if rep.Facts.Large > 0 {
		w(", %d citizens %.1f s (seeded afresh on every run: well under the few minutes that would call for a cached store)", rep.Facts.Large, rep.Facts.SeedLarge)
	}
	w(".\n")
	if r := rep.Facts.Revocation; r != nil {
		w("\nRevocation lag, two replicas: from the revocation (the consent service's revoke, as `jisr consent revoke` does it) to the first refusal by each replica, %d revocations: p50 %.1f ms, p99 %.1f ms, max %.1f ms", r.Revocations, r.P50, r.P99, r.Max)
		for _, inst := range sortedKeys(r.PerReplica) {
			l := r.PerReplica[inst]
			w("; %s p50 %.1f ms, p99 %.1f ms", inst, l.P50, l.P99)
		}
		w(". Queries carrying the revoked token are sent as the cnss adapter sends them, four at a time, until each replica has refused one; the `Jisr-Gateway` reply header names the replica that answered.\n")
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}

// svg draws throughput and p99 against concurrency for the full path and
// the baseline: two panels, log-scaled concurrency axis.
func (b *harness) svg() string {
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH)
	fmt.Fprintf(&s, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	b.svgPanel(&s, svgPad, "Throughput (queries/s)", func(r *Result) float64 { return r.QPS }, "queries/s")
	b.svgPanel(&s, 2*svgPad+svgPW, "p99 latency (ms)", func(r *Result) float64 { return r.P99 }, "ms")
	for i, sr := range svgSeries {
		fmt.Fprintf(&s, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			svgPad+i*220, svgH-14, sr.color, svgPad+i*220+18, svgH-4, sr.label)
	}
	s.WriteString("</svg>\n")
	return s.String()
}

// The chart's size, padding and panels.
const (
	svgW, svgH, svgPad = 900, 360, 60
	svgPW              = (svgW - 3*svgPad) / 2
	svgPH              = svgH - 2*svgPad
)

var svgSeries = []struct {
	scenario, label, color string
}{{"full", "full path", "#1f6feb"}, {"baseline", "raw two-hop baseline", "#8b949e"}}

// svgX is the abscissa of concurrency c in the panel at x0.
func (b *harness) svgX(c int, x0 int) float64 {
	concs := b.o.concurrency
	lo, hi := math.Log2(float64(concs[0])), math.Log2(float64(concs[len(concs)-1]))
	if hi == lo {
		return float64(x0 + svgPW/2)
	}
	return float64(x0) + (math.Log2(float64(c))-lo)/(hi-lo)*float64(svgPW)
}

// svgPanel draws one panel at x0: value of each series against concurrency.
func (b *harness) svgPanel(s *strings.Builder, x0 int, title string, value func(r *Result) float64, unit string) {
	const pad, pw, ph = svgPad, svgPW, svgPH
	concs := b.o.concurrency
	maxV := 0.0
	for _, sr := range svgSeries {
		for _, c := range concs {
			if r := b.find(sr.scenario, c); r != nil {
				maxV = math.Max(maxV, value(r))
			}
		}
	}
	if maxV == 0 {
		maxV = 1
	}
	maxV *= 1.1
	fmt.Fprintf(s, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", x0, pad-25, title)
	fmt.Fprintf(s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0, pad+ph, x0+pw, pad+ph)
	fmt.Fprintf(s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0, pad, x0, pad+ph)
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		y := float64(pad+ph) - float64(ph)*float64(i)/4
		fmt.Fprintf(s, `<text x="%d" y="%.0f" text-anchor="end">%.4g</text>`+"\n", x0-5, y+4, v)
		fmt.Fprintf(s, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="#eee"/>`+"\n", x0, y, x0+pw, y)
	}
	for _, c := range concs {
		fmt.Fprintf(s, `<text x="%.0f" y="%d" text-anchor="middle">%d</text>`+"\n", b.svgX(c, x0), pad+ph+16, c)
	}
	fmt.Fprintf(s, `<text x="%d" y="%d" text-anchor="middle">concurrent callers (%s)</text>`+"\n", x0+pw/2, pad+ph+34, unit)
	for _, sr := range svgSeries {
		var pts []string
		for _, c := range concs {
			if r := b.find(sr.scenario, c); r != nil {
				x, y := b.svgX(c, x0), float64(pad+ph)-value(r)/maxV*float64(ph)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
				fmt.Fprintf(s, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x, y, sr.color)
			}
		}
		fmt.Fprintf(s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), sr.color)
	}
}

// markdownAllocs writes the heap allocations per query of each process,
// for the full path and the baseline at the heaviest load.
func (b *harness) markdownAllocs(w func(string, ...any), rep Report) {
	full, base := b.find("full", b.top()), b.find("baseline", b.top())
	if full == nil || full.AllocsPerQuery == 0 {
		return
	}
	w("## Allocations per query\n\n")
	w("Heap allocations (`runtime.MemStats.Mallocs`, read from each process's pprof endpoint before and after the measured part) divided by the queries, c=%d.\n\n", b.top())
	w("| process | full path | raw two-hop baseline |\n|---|---:|---:|\n")
	names := sortedKeys(full.AllocsByProcess)
	if base != nil {
		for _, n := range sortedKeys(base.AllocsByProcess) {
			if _, ok := full.AllocsByProcess[n]; !ok {
				names = append(names, n)
			}
		}
	}
	cell := func(r *Result, n string) string {
		if r == nil {
			return "—"
		}
		if v, ok := r.AllocsByProcess[n]; ok {
			return fmt.Sprintf("%.0f", v)
		}
		return "—"
	}
	for _, n := range names {
		w("| %s | %s | %s |\n", n, cell(full, n), cell(base, n))
	}
	total := "—"
	if base != nil && base.AllocsPerQuery > 0 {
		total = fmt.Sprintf("%.0f", base.AllocsPerQuery)
	}
	w("| **all** | **%.0f** | **%s** |\n\n", full.AllocsPerQuery, total)
}

// markdownScaling writes the throughput of the full path and of the
// baseline with their components limited to 1, 2, 4, … cores.
func markdownScaling(w func(string, ...any), rep Report) {
	full := map[int]Result{}
	base := map[int]Result{}
	var cores []int
	for _, r := range rep.Results {
		switch r.Scenario {
		case "scaling":
			full[r.GOMAXPROCS] = r
			cores = append(cores, r.GOMAXPROCS)
		case "scaling-baseline":
			base[r.GOMAXPROCS] = r
		}
	}
	if len(cores) == 0 {
		return
	}
	w("## Scaling with cores\n\n")
	w("The same load (c=%d) with the gateway, both adapters and the backend — or the baseline's relay and responder — each limited to n cores (`GOMAXPROCS=n`, restarted for each step); NATS and the load generator keep every core of the machine (%d). Speed-up is against 1 core.\n\n", full[cores[0]].Concurrency, runtime.NumCPU())
	w("| cores per component | full path queries/s | speed-up | p99 ms | CPU µs/query | baseline queries/s | full path vs baseline |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	one := full[cores[0]].QPS
	for _, n := range cores {
		f := full[n]
		bq, ratio := "—", "—"
		if b, ok := base[n]; ok && b.QPS > 0 {
			bq, ratio = fmt.Sprintf("%.0f", b.QPS), fmt.Sprintf("%.0f%%", 100*f.QPS/b.QPS)
		}
		speed := "—"
		if one > 0 {
			speed = fmt.Sprintf("%.2f×", f.QPS/one)
		}
		w("| %d | %.0f | %s | %.2f | %.0f | %s | %s |\n", n, f.QPS, speed, f.P99, f.CPUMicros, bq, ratio)
	}
	w("\n")
}
