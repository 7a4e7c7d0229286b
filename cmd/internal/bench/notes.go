package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// notes explains, from the run's own measurements, what limits each missed
// target, and summarises the CPU profiles. They are generated, not written
// by hand, so that they stay true of the figures beside them.
func (b *harness) notes(targets []Target) []string {
	missed := func(prefix string) bool {
		for _, t := range targets {
			if strings.HasPrefix(t.Target, prefix) {
				return !t.Met
			}
		}
		return false
	}
	var out []string
	add := func(n string) {
		if n != "" {
			out = append(out, n)
		}
	}
	if missed("full path at c=") {
		add(b.throughputNote())
	}
	if missed("p99 at c=16") {
		add(b.p99Note())
	}
	if missed(fmt.Sprintf("%d citizens", b.facts.Large)) {
		add(b.populationNote())
	}
	if r := b.facts.Revocation; missed("revocation") && r != nil {
		out = append(out, fmt.Sprintf("Revocation: p99 %.0f ms over %d samples. Each replica learns of a revocation from its watch of the "+
			"jisr_revocations JetStream bucket; a lag near the 5 s bound means a replica's watch stalled or reconnected — see the gateway logs (--keep).", r.P99, r.Samples))
	}
	if missed("whole dev federation") {
		out = append(out, "The dev federation's memory is over budget: see the per-process figures above and take a heap profile with --pprof-addr.")
	}
	if missed("`jisr dev` ready") {
		out = append(out, "`jisr dev` start-up is over budget with an existing data directory: run it with --pprof-addr and profile the start.")
	}
	add(b.replicasNote())
	add(b.noiseNote())
	add(b.profilesNote())
	return out
}

// throughputNote explains a full path below half of the baseline.
func (b *harness) throughputNote() string {
	top, cores := b.judgedAt(), float64(runtime.NumCPU())
	full, base := b.find("paired-full", top), b.find("paired-baseline", top)
	if full == nil || base == nil {
		full, base = b.find("full", top), b.find("baseline", top)
	}
	if full == nil || base == nil || full.QPS <= 0 {
		return ""
	}
	fullAll, baseAll := full.CPUMicros+full.ClientCPUMicros, base.CPUMicros+base.ClientCPUMicros
	n := fmt.Sprintf("Throughput at c=%d is bound by CPU on this %.0f-core machine: during the full-path run the cores were %.0f%% busy "+
		"(the path's processes %.0f%%, the load generator %.0f%%). A query through the full path costs %.0f µs of CPU in its processes (%s) "+
		"plus %.0f µs in the load generator's gRPC client; the baseline costs %.0f µs plus %.0f µs. With every core busy, the throughput "+
		"ratio follows the inverse ratio of CPU per query, %.0f/%.0f = %.0f%% (measured %.0f%%). Reaching 50%% would take the whole path "+
		"below about %.0f µs per query.",
		top, cores, 100*full.BusyMachine, 100*full.BusyPath, 100*full.BusyClient, full.CPUMicros, byProcess(full), full.ClientCPUMicros,
		base.CPUMicros, base.ClientCPUMicros, baseAll, fullAll, 100*baseAll/fullAll, 100*full.QPS/base.QPS, 2*baseAll-full.ClientCPUMicros)
	n += " What the full path does beyond the two NATS hops of the baseline: two more gRPC/HTTP-2 hops (load generator → consumer adapter, " +
		"provider adapter → backend) with their protobuf work, a SQLite look-up in the backend, and in the gateway the checks and the audit " +
		"record (a JetStream publish, its acknowledgement and, for the citizen's access log, the gateway's index of its own records)."
	var saved []string
	var sum float64
	how := ""
	for _, s := range []string{"consent", "audit", "minimise"} {
		r := b.find("paced-no-"+s, b.top()) // the safeguards are measured at the heaviest load
		if r != nil && r.KeptUp() {
			how = " at the same offered rate"
		} else {
			r = b.find("no-"+s, b.top())
		}
		if r != nil && r.Control != nil {
			cost := r.Control.CPUMicros - r.CPUMicros
			if paid, ok := paidCost(*r); ok {
				cost = paid
			}
			saved = append(saved, fmt.Sprintf("%s %.0f µs", s, cost))
			sum += cost
		}
	}
	if len(saved) > 0 {
		n += fmt.Sprintf(" The safeguards' own share, measured by switching each off%s, in the gateway and NATS (see the tables above): %s — %.0f µs of the %.0f µs "+
			"that separate the full path from the baseline; the rest is the extra hops.", how, strings.Join(saved, ", "), sum, fullAll-baseAll)
	}
	return n
}

// p99Note explains a p99 at c=16 over 5 ms.
func (b *harness) p99Note() string {
	cores := float64(runtime.NumCPU())
	f := b.find("full", 16)
	if f == nil || f.QPS <= 0 {
		return ""
	}
	n := fmt.Sprintf("p99 at c=16 is queueing for CPU, not the path's own latency: 16 callers at %.0f queries/s spend on average %.1f ms "+
		"each in the system (Little's law) while the cores are %.0f%% busy.", f.QPS, 16/f.QPS*1000, 100*f.BusyMachine)
	if one := b.find("full", 1); one != nil {
		n += fmt.Sprintf(" One caller alone, with nothing to queue behind, sees p50 %.2f ms and p99 %.2f ms.", one.P50, one.P99)
	}
	need := 16 / 0.0025 // a p99 of 5 ms needs a mean of about half of it: 2.5 ms
	n += fmt.Sprintf(" A p99 of 5 ms with 16 callers needs a mean near 2.5 ms, about %.0f queries/s, i.e. at most ~%.0f µs of CPU per "+
		"query on %.0f cores including the load generator, against %.0f µs measured.", need, cores*1e6/need, cores, f.CPUMicros+f.ClientCPUMicros)
	return n
}

// roundsText is populationRounds in words.
func roundsText() string {
	names := []string{"10k", "large"}
	parts := make([]string, len(populationRounds))
	for i, r := range populationRounds {
		parts[i] = names[r]
	}
	return strings.Join(parts, ", ")
}

// populationNote explains a large population slower than the 10,000.
func (b *harness) populationNote() string {
	small, large := b.find("population-10k", 0), b.find("large", 0)
	if small == nil || large == nil {
		return ""
	}
	return fmt.Sprintf("%d vs 10,000 citizens: measured in alternating rounds (%s) against the same NATS, gateway and "+
		"adapters; p50 of the rounds: 10k %s ms, large %s ms. The backend's CPU per query: %.0f µs (10k) vs %.0f µs (large); the machine was "+
		"%.0f%% / %.0f%% busy. A look-up is by primary key in a B-tree, one or two more levels for 100× the rows; a difference much larger "+
		"than the spread between rounds of the same population points at page-cache misses of the large store (%.0f MiB on disk).",
		b.facts.Large, roundsText(), joinMs(small.RoundP50), joinMs(large.RoundP50), small.CPUByProcess["backend"], large.CPUByProcess["backend-large"],
		100*small.BusyMachine, 100*large.BusyMachine, mib(b.facts.LargeStoreBytes))
}

// replicasNote compares two gateway replicas with one (not a target).
func (b *harness) replicasNote() string {
	top := b.top()
	two, one := b.find("two-replicas", top), b.find("control", top)
	if two == nil || one == nil || two.QPS <= 0 {
		return ""
	}
	if two.QPS >= one.QPS {
		return fmt.Sprintf("Two gateway replicas (not a target): %.0f queries/s against %.0f with one (%.2f×), at %.0f vs %.0f µs of CPU per query: "+
			"with cores to spare, a second replica adds throughput; each keeps its own index of the whole audit stream "+
			"(every replica serves any citizen's access log), which is most of the extra CPU per query.",
			two.QPS, one.QPS, two.QPS/one.QPS, two.CPUMicros, one.CPUMicros)
	}
	return fmt.Sprintf("Two gateway replicas (not a target): %.0f queries/s against %.0f with one, at %.0f vs %.0f µs of CPU per query. "+
		"On %.0f cores there is no idle core for a second replica to use, and each replica keeps its own index of the whole audit stream "+
		"(every replica serves any citizen's access log), so that work is done once per replica. Replicas add throughput where each has "+
		"cores of its own; here they show that the path stays correct and the revocation reaches both.",
		two.QPS, one.QPS, two.CPUMicros, one.CPUMicros, float64(runtime.NumCPU()))
}

// noiseNote names the scenarios during which other programs used the cores.
func (b *harness) noiseNote() string {
	var noisy []string
	for _, r := range b.results {
		if other := r.BusyMachine - r.BusyPath - r.BusyClient; other > 0.15 {
			noisy = append(noisy, fmt.Sprintf("%s (%.0f%% of the cores)", r.Name, 100*other))
		}
	}
	if len(noisy) == 0 {
		return ""
	}
	return "Other load on the machine (not jisr's) during: " + strings.Join(noisy, ", ") + ". Those figures are pessimistic; rerun on a quiet machine."
}

// profilesNote summarises the CPU profiles by kind of code.
func (b *harness) profilesNote() string {
	if len(b.facts.Profiles) == 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var lines []string
	for _, p := range b.facts.Profiles {
		if s, err := profileSummary(ctx, b.exe, filepath.Join(b.o.out, p)); err == nil && s != "" {
			lines = append(lines, fmt.Sprintf("%s: %s", strings.TrimSuffix(p, "-cpu.pprof"), s))
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return fmt.Sprintf("Where the CPU goes at c=%d (flat share of each component's CPU profile, by kind of code): ", b.top()) +
		strings.Join(lines, "; ") + ". Much of it is the cost of crossing a process boundary — system calls, TLS, the Go scheduler waking " +
		"goroutines, allocation and GC — which every extra hop multiplies; the checks themselves are small (see the Go benchmarks)."
}

func byProcess(r *Result) string {
	names := make([]string, 0, len(r.CPUByProcess))
	for k := range r.CPUByProcess {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return r.CPUByProcess[names[i]] > r.CPUByProcess[names[j]] })
	var parts []string
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, r.CPUByProcess[k]))
	}
	return strings.Join(parts, ", ")
}

func joinMs(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(parts, ", ")
}

// profileKinds classifies a function by the kind of code it is, in order:
// the first prefix that matches wins.
var profileKinds = []struct{ kind, prefix string }{
	{"system calls", "internal/runtime/syscall"},
	{"system calls", "syscall."},
	{"system calls", "runtime.futex"},
	{"system calls", "runtime.usleep"},
	{"system calls", "runtime.epoll"},
	{"system calls", "internal/poll"},
	{"TLS and crypto", "crypto/"},
	{"tracing", "go.opentelemetry.io"},
	{"tracing", "github.com/jisr-bus/jisr/bus/telemetry"},
	{"jisr", "github.com/jisr-bus/jisr"},
	{"gRPC/HTTP-2", "google.golang.org/grpc"},
	{"gRPC/HTTP-2", "golang.org/x/net/http2"},
	{"protobuf", "google.golang.org/protobuf"},
	{"NATS", "github.com/nats-io"},
	{"SQLite", "modernc.org/"},
	{"Go runtime: GC, scheduler, allocation", "runtime."},
	{"Go runtime: GC, scheduler, allocation", "internal/runtime"},
	{"Go runtime: GC, scheduler, allocation", "gcWriteBarrier"},
}

// profileSummary runs `go tool pprof -top` on a CPU profile and returns
// the flat share of each kind of code, largest first.
func profileSummary(ctx context.Context, exe, path string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodefraction=0", "-nodecount=1000000", exe, path).Output()
	if err != nil {
		return "", err
	}
	shares := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		if err != nil {
			continue
		}
		fn := strings.Join(f[5:], " ")
		kind := "standard library and other"
		for _, k := range profileKinds {
			if strings.HasPrefix(fn, k.prefix) {
				kind = k.kind
				break
			}
		}
		shares[kind] += pct
	}
	kinds := make([]string, 0, len(shares))
	for k := range shares {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return shares[kinds[i]] > shares[kinds[j]] })
	var parts []string
	for _, k := range kinds {
		if shares[k] >= 3 {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", k, shares[k]))
		}
	}
	return strings.Join(parts, ", "), nil
}
