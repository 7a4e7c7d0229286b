package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/services/progress"
)

// harness is one run: its temporary directory, processes and results.
type harness struct {
	cfg      Config
	o        options
	dir      string
	exe      string
	fedPath  string
	stderr   io.Writer
	results  []Result
	facts    Facts
	reqSize  int
	respSize int
	// fullRespSize is the provider's reply before minimisation.
	fullRespSize int
	pprof        map[string]string // component → its pprof address
	// gomaxprocs, when set, limits the components started from now on
	// (GOMAXPROCS) — NATS is never restarted with it.
	gomaxprocs int
}

// proc is one component running as its own process.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	logf string
}

func (b *harness) spawn(name string, args ...string) (*proc, error) {
	logf := filepath.Join(b.dir, "logs", name+".log")
	lf, err := os.Create(logf)
	if err != nil {
		return nil, err
	}
	base := []string{"--federation", b.fedPath, "--certs", filepath.Join(b.dir, "certs"),
		"--data", filepath.Join(b.dir, "data"), "--log-level", "warn"}
	if b.o.profile {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		base = append(base, "--pprof-addr", addr)
		b.pprof[name] = addr
	}
	c := exec.Command(b.exe, append(base, args...)...)
	c.Stdout, c.Stderr = lf, lf
	c.Env = append(os.Environ(), "JISR_TEST_MAIN=1") // lets a test binary act as jisr
	if b.gomaxprocs > 0 {
		c.Env = append(c.Env, fmt.Sprintf("GOMAXPROCS=%d", b.gomaxprocs))
	}
	if err := c.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: c, done: make(chan struct{}), logf: logf}
	go func() { p.err = c.Wait(); lf.Close(); close(p.done) }()
	return p, nil
}

// runOnce runs a jisr command to completion (e.g. certs init).
func (b *harness) runOnce(ctx context.Context, name string, args ...string) error {
	p, err := b.spawn(name, args...)
	if err != nil {
		return err
	}
	delete(b.pprof, name) // nothing to profile
	select {
	case <-p.done:
	case <-ctx.Done():
		p.stop()
		return ctx.Err()
	}
	if p.err != nil {
		out, _ := os.ReadFile(p.logf)
		return fmt.Errorf("jisr %s: %v\n%s", strings.Join(args, " "), p.err, tail(string(out), 2000))
	}
	return nil
}

// stop asks the process to shut down gracefully and waits.
func (p *proc) stop() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() error {
	select {
	case <-p.done:
		b, _ := os.ReadFile(p.logf)
		return fmt.Errorf("%s exited (%v):\n%s", p.name, p.err, tail(string(b), 2000))
	default:
		return nil
	}
}

// cpu is the process's user+system CPU time so far.
func (p *proc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// rss is the process's resident memory in bytes.
func (p *proc) rss() int64 { return rssOf(p.cmd.Process.Pid) }

func rssOf(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitFor polls check until it succeeds, the process dies or 60 s pass.
func waitFor(ctx context.Context, p *proc, what string, check func(context.Context) error) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if e := p.exited(); e != nil {
			return e
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not ready: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialLoopback dials a component's gRPC port as its local client would: the
// adapters and backends of the bench listen on loopback, where they serve
// plaintext by design (the sidecar exception, docs/ARCHITECTURE.md); any
// other address is refused rather than dialled in plaintext.
func dialLoopback(addr string) (*grpc.ClientConn, error) {
	if !loopback.Is(addr) {
		return nil, fmt.Errorf("%s is not a loopback address: the bench dials components only on this host", addr)
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func grpcServing(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		cc, err := dialLoopback(addr)
		if err != nil {
			return err
		}
		defer cc.Close()
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", r.GetStatus())
		}
		return nil
	}
}

func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

func tcpOpen(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// load drives calls from conc workers for warm-up plus duration and
// measures the steady part: latencies, errors, and the CPU the given
// processes spent.
func (b *harness) load(ctx context.Context, label string, conc int, procs []*proc, call func(ctx context.Context, worker, i int) error) Result {
	return b.loadPaced(ctx, label, conc, 0, procs, call)
}

// loadPaced is load with the calls paced to one every `every` among all the
// callers (an offered rate of 1/every; 0: each caller calls again as soon as
// its call returns). Paced, the throughput is the offered rate for as long
// as the path keeps up, so that two variants of the path can be compared
// doing the same work in the same time.
func (b *harness) loadPaced(ctx context.Context, label string, conc int, every time.Duration, procs []*proc, call func(ctx context.Context, worker, i int) error) Result {
	ws := startWorkers(ctx, conc, every, call)
	bar := progress.New(b.stderr, fmt.Sprintf("%-34s", label))
	sleepBar := func(d time.Duration, from, total time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			time.Sleep(min(100*time.Millisecond, time.Until(end)))
			bar.Update(int((from+d-time.Until(end))/time.Millisecond), int(total/time.Millisecond))
		}
	}
	total := b.o.warmup + b.o.duration
	sleepBar(b.o.warmup, 0, total)
	m0 := b.mallocs(procs)
	s0 := sampleCPU(procs)
	t0 := time.Now()
	ws.measuring.Store(true)
	sleepBar(b.o.duration, b.o.warmup, total)
	ws.measuring.Store(false)
	elapsed := time.Since(t0)
	s1 := sampleCPU(procs)
	m1 := b.mallocs(procs)
	rss := map[string]int64{}
	perCPU := map[string]time.Duration{}
	for _, p := range procs {
		rss[p.name] = p.rss()
		perCPU[p.name] = s1.per[p.name] - s0.per[p.name]
	}
	lat, errs, firstErr := ws.halt()
	bar.Done()

	r := Result{Name: label, Concurrency: conc, Errors: errs, FirstError: firstErr, Seconds: elapsed.Seconds(), RSSUnderLoad: rss,
		lat: lat, cpu: s1.path - s0.path, clientCPU: s1.self - s0.self, machine: s1.machine.sub(s0.machine), perCPU: perCPU}
	r.summarise()
	r.AllocsByProcess, r.AllocsPerQuery = allocsPerQuery(m0, m1, r.Queries+r.Errors)
	return r
}

// workers are callers running call in a loop; they record latencies and
// errors only while measuring is set.
type workers struct {
	measuring, stop atomic.Bool
	errs            atomic.Int64
	// slot numbers the paced calls: call k is due at start + k·every.
	slot     atomic.Int64
	firstErr atomic.Value
	wg       sync.WaitGroup
	lat      [][]time.Duration
}

func startWorkers(ctx context.Context, conc int, every time.Duration, call func(ctx context.Context, worker, i int) error) *workers {
	ws := &workers{lat: make([][]time.Duration, conc)}
	start := time.Now()
	for w := range conc {
		ws.wg.Add(1)
		go func() {
			defer ws.wg.Done()
			for i := 0; !ws.stop.Load(); i++ {
				if every > 0 {
					ws.pace(ctx, start, every)
					if ws.stop.Load() {
						return
					}
				}
				t0 := time.Now()
				err := call(ctx, w, i)
				d := time.Since(t0)
				if !ws.measuring.Load() {
					continue
				}
				if err != nil {
					ws.errs.Add(1)
					ws.firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ws.lat[w] = append(ws.lat[w], d)
			}
		}()
	}
	return ws
}

// pace waits for the caller's next slot of the schedule start + k·every.
// Slots missed by more than a few periods are skipped, not made up in a
// burst: a path that does not keep up shows as fewer queries done than
// offered.
func (ws *workers) pace(ctx context.Context, start time.Time, every time.Duration) {
	for {
		due := start.Add(time.Duration(ws.slot.Add(1)-1) * every)
		d := time.Until(due)
		if d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			return
		}
		if d > -4*every {
			return
		}
	}
}

// halt stops the workers, waits for them and returns what they recorded.
func (ws *workers) halt() (lat []time.Duration, errs int64, firstErr string) {
	ws.stop.Store(true)
	ws.wg.Wait()
	for _, l := range ws.lat {
		lat = append(lat, l...)
	}
	firstErr, _ = ws.firstErr.Load().(string)
	return lat, ws.errs.Load(), firstErr
}

// cpuSample is the CPU time spent so far by the path's processes (in all
// and each), by the load generator and by the whole machine.
type cpuSample struct {
	path, self time.Duration
	machine    cpuTicks
	per        map[string]time.Duration
}

func sampleCPU(procs []*proc) cpuSample {
	s := cpuSample{path: sumCPU(procs), self: selfCPU(), machine: machineCPU(), per: map[string]time.Duration{}}
	for _, p := range procs {
		s.per[p.name] = p.cpu()
	}
	return s
}

// summarise computes the figures of r from its raw measurements.
func (r *Result) summarise() {
	all := r.lat
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r.Queries = int64(len(all))
	if len(all) == 0 {
		return
	}
	r.QPS = float64(len(all)) / r.Seconds
	r.P50 = ms(all[len(all)*50/100])
	r.P90 = ms(all[len(all)*90/100])
	r.P99 = ms(all[min(len(all)-1, len(all)*99/100)])
	n := float64(len(all) + int(r.Errors))
	r.CPUMicros = float64(r.cpu/time.Microsecond) / n
	r.ClientCPUMicros = float64(r.clientCPU/time.Microsecond) / n
	r.CPUByProcess = map[string]float64{}
	for name, d := range r.perCPU {
		r.CPUByProcess[name] = float64(d/time.Microsecond) / n
	}
	wall := r.Seconds * float64(runtime.NumCPU())
	r.BusyPath = r.cpu.Seconds() / wall
	r.BusyClient = r.clientCPU.Seconds() / wall
	if r.machine.total > 0 {
		r.BusyMachine = float64(r.machine.busy) / float64(r.machine.total)
	}
}

// mergeResults combines rounds of the same scenario into one result.
func mergeResults(name string, rounds []Result) Result {
	m := Result{Name: name, Scenario: rounds[0].Scenario, Concurrency: rounds[0].Concurrency, Offered: rounds[0].Offered, Rounds: len(rounds), perCPU: map[string]time.Duration{}}
	for _, r := range rounds {
		m.lat = append(m.lat, r.lat...)
		m.Errors += r.Errors
		m.Seconds += r.Seconds
		m.cpu += r.cpu
		m.clientCPU += r.clientCPU
		m.machine = m.machine.add(r.machine)
		for k, v := range r.perCPU {
			m.perCPU[k] += v
		}
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
		m.RSSUnderLoad = r.RSSUnderLoad
		m.RoundP50 = append(m.RoundP50, r.P50)
		m.RoundQPS = append(m.RoundQPS, r.QPS)
	}
	m.summarise()
	return m
}

func sumCPU(ps []*proc) time.Duration {
	var t time.Duration
	for _, p := range ps {
		t += p.cpu()
	}
	return t
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// selfCPU is this process's (the load generator's) user+system CPU time.
func selfCPU() time.Duration {
	return (&proc{cmd: &exec.Cmd{Process: &os.Process{Pid: os.Getpid()}}}).cpu()
}

// cpuTicks is the machine's CPU time from /proc/stat, in clock ticks: all
// of it and the part not idle (or waiting for I/O).
type cpuTicks struct{ total, busy int64 }

func (a cpuTicks) sub(b cpuTicks) cpuTicks { return cpuTicks{a.total - b.total, a.busy - b.busy} }
func (a cpuTicks) add(b cpuTicks) cpuTicks { return cpuTicks{a.total + b.total, a.busy + b.busy} }

func machineCPU() cpuTicks {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTicks{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return cpuTicks{}
	}
	var t cpuTicks
	for i, f := range fields[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		if i >= 8 { // guest time is already counted in user time
			break
		}
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t
}
