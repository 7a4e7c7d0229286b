package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/consent"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/progress"
)

const (
	queryService = "jisr.civilregistry.v1.CivilRegistry"
	queryMethod  = "GetPerson"
	queryPurpose = "amo-enrolment"
	tokensPerRun = 1000 // distinct citizens (and tokens) per run
)

// cluster is the federation under test, one process per component.
type cluster struct {
	nats         *proc
	natsURL      string
	backend      *proc
	backendAddr  string
	large        *proc // the large population's backend, beside the 10,000
	largeAddr    string
	gateways     []*proc
	gwHTTP       []string
	provider     *proc
	consumer     *proc
	consumerAddr string
}

func (f *cluster) procs() []*proc {
	out := []*proc{f.nats, f.backend, f.large, f.provider, f.consumer}
	out = append(out, f.gateways...)
	var live []*proc
	for _, p := range out {
		if p != nil {
			live = append(live, p)
		}
	}
	return live
}

// Run runs every scenario and writes the report under cfg.Out.
func Run(ctx context.Context, cfg Config, opts ...Option) error {
	o := defaults()
	for _, opt := range opts {
		opt(&o)
	}
	if err := validate(cfg, o); err != nil {
		return err
	}
	o.out = cfg.Out
	fedPath, err := filepath.Abs(cfg.Federation)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "jisr-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintf(o.progress, "working directory (kept): %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	if fedPath, err = liftFederation(fedPath, dir); err != nil {
		return fmt.Errorf("the bench's copy of the federation: %w", err)
	}
	b := &harness{cfg: cfg, o: o, dir: dir, exe: cfg.Exe, fedPath: fedPath, stderr: o.progress, pprof: map[string]string{}}
	b.facts.Started = time.Now().UTC()
	b.facts.Machine, b.facts.Cores = machine(), runtime.NumCPU()

	// The dev PKI, as an operator makes it.
	if err := b.runOnce(ctx, "certs", "certs", "init"); err != nil {
		return err
	}
	if err := b.run(ctx); err != nil {
		return err
	}
	return b.report(o.stdout)
}

func validate(cfg Config, o options) error {
	switch {
	case cfg.Exe == "":
		return fmt.Errorf("%w: Config.Exe: the jisr binary is required", ErrConfig)
	case cfg.Federation == "":
		return fmt.Errorf("%w: Config.Federation: the federation file is required", ErrConfig)
	case cfg.Out == "":
		return fmt.Errorf("%w: Config.Out: the report directory is required", ErrConfig)
	case cfg.Clients == nil:
		return fmt.Errorf("%w: Config.Clients is required", ErrConfig)
	case len(o.concurrency) == 0:
		return fmt.Errorf("%w: at least one concurrency is required", ErrConfig)
	case o.safeguardsOnly && len(o.safeguards) == 0:
		return fmt.Errorf("%w: name at least one safeguard to measure", ErrConfig)
	}
	for _, s := range o.safeguards {
		if !slices.Contains(Safeguards, s) {
			return fmt.Errorf("%w: unknown safeguard %q (one of %s)", ErrConfig, s, strings.Join(Safeguards, ", "))
		}
	}
	return nil
}

// clients opens the harness's own clients of the federation at natsURL.
func (b *harness) clients(natsURL string) Clients {
	return b.cfg.Clients(Env{Federation: b.fedPath, Certs: filepath.Join(b.dir, "certs"), Data: filepath.Join(b.dir, "data"), NATS: natsURL})
}

func (b *harness) run(ctx context.Context) error {
	f := &cluster{}
	defer func() {
		for _, p := range f.procs() {
			p.stop()
		}
	}()
	b.step("starting NATS, backend (10,000 citizens), gateway and two adapters, each as its own process")
	tokens, err := b.startFederation(ctx, f)
	if err != nil {
		return err
	}
	client, closeClient, err := b.dial(f)
	if err != nil {
		return err
	}
	if b.o.eventsOnly {
		for _, c := range b.o.concurrency {
			b.results = append(b.results, b.measureCalls(ctx, fmt.Sprintf("full path, c=%d", c), "full", c, f.procs(), tokens, client))
		}
		if err := b.eventsBracketed(ctx, f, tokens, client); err != nil {
			return err
		}
		closeClient()
		return nil
	}
	if b.o.safeguardsOnly {
		defer closeClient()
		return b.safeguards(ctx, f, tokens, client)
	}
	if err := b.measureSizes(ctx, f, client, tokens[0]); err != nil {
		return err
	}
	if err := b.measureFull(ctx, f, tokens, client); err != nil {
		return err
	}
	if err := b.eventsBracketed(ctx, f, tokens, client); err != nil {
		return err
	}
	closeClient()
	if err := b.scalingFull(ctx, f, tokens); err != nil {
		return fmt.Errorf("scaling: %w", err)
	}

	if err := b.paired(ctx, f, tokens); err != nil {
		return fmt.Errorf("full path and baseline alternating: %w", err)
	}

	// The transport's own limit: client → relay → responder over the same
	// NATS, mTLS and sizes, without a single check.
	b.step("raw two-hop baseline (gateway, adapters and backend stopped)")
	for _, p := range append(f.gateways, f.provider, f.consumer) {
		p.stop()
	}
	f.gateways, f.gwHTTP, f.provider, f.consumer = nil, nil, nil, nil
	if err := b.baseline(ctx, f, tokens); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}

	if b.o.large > 0 {
		if err := b.population(ctx, f, tokens); err != nil {
			return fmt.Errorf("large population: %w", err)
		}
	}
	for _, p := range f.procs() {
		p.stop()
	}
	*f = cluster{}

	b.step("start-up time and memory of `jisr dev` with an existing data directory")
	return b.devStartup(ctx)
}

// eventsBracketed measures the life events between two rounds of the full
// path at the same load (scenario events-full, the rounds merged), which
// the events' target compares them with: the full path's own scenario ran
// a minute or more before, and this machine's speed drifts within minutes.
func (b *harness) eventsBracketed(ctx context.Context, f *cluster, tokens []token, client civilv1.CivilRegistryClient) error {
	c := b.judgedAt()
	// One gateway replica on both sides, as the events run with (the
	// replicas' step before may have left two).
	if len(f.gateways) != 1 {
		if err := b.restartGateways(ctx, f, nil, "gw-1"); err != nil {
			return err
		}
	}
	var rounds []Result
	measure := func(when string) {
		rounds = append(rounds, b.measureCalls(ctx, fmt.Sprintf("full path, c=%d, %s the life events", c, when), "events-full", c, f.procs(), tokens, client))
	}
	measure("before")
	if err := b.measureEvents(ctx, f); err != nil { // events.go
		return fmt.Errorf("life events: %w", err)
	}
	measure("after")
	b.results = append(b.results, mergeResults(fmt.Sprintf("full path, c=%d, rounds before and after the life events", c), rounds))
	return nil
}

// step says which part of the run starts.
func (b *harness) step(msg string) { fmt.Fprintf(b.stderr, "» %s\n", msg) }

// top is the heaviest load: the last concurrency.
func (b *harness) top() int { return b.o.concurrency[len(b.o.concurrency)-1] }

// startFederation starts NATS, the 10,000-citizen backend, a gateway and
// both adapters, and mints the tokens of the run.
func (b *harness) startFederation(ctx context.Context, f *cluster) ([]token, error) {
	if err := b.startNATS(ctx, f); err != nil {
		return nil, err
	}
	seed := time.Now()
	var err error
	if f.backend, f.backendAddr, err = b.startBackend(ctx, "backend", 10000, filepath.Join(b.dir, "data")); err != nil {
		return nil, err
	}
	b.facts.Seed10k = time.Since(seed).Seconds()
	if err := b.startGateways(ctx, f, nil, "gw-1"); err != nil {
		return nil, err
	}
	if err := b.startAdapters(ctx, f); err != nil {
		return nil, err
	}
	return b.mint(ctx, f, 10000)
}

// measureSizes makes one call to learn the payload sizes the baseline must
// carry, and reads the idle memory of every process.
func (b *harness) measureSizes(ctx context.Context, f *cluster, client civilv1.CivilRegistryClient, t token) error {
	resp, err := client.GetPerson(t.ctx(ctx), &civilv1.GetPersonRequest{Eid: t.eid})
	if err != nil {
		return fmt.Errorf("first call through the federation: %w", err)
	}
	b.reqSize, b.respSize = proto.Size(&civilv1.GetPersonRequest{Eid: t.eid}), proto.Size(resp)
	// The provider's reply before minimisation: what crosses the provider
	// hop, asked of the backend directly.
	if b.fullRespSize, err = b.backendReplySize(ctx, f.backendAddr, t.eid); err != nil {
		return fmt.Errorf("the backend's reply size: %w", err)
	}
	b.facts.HeaderBytes = len(t.token) + len(queryPurpose) + 64
	time.Sleep(500 * time.Millisecond)
	b.facts.IdleRSS = map[string]int64{}
	for _, p := range f.procs() {
		b.facts.IdleRSS[p.name] = p.rss()
	}
	return nil
}

// measureCalls drives GetPerson calls with toks through cl, measuring procs.
func (b *harness) measureCalls(ctx context.Context, label, scenario string, conc int, procs []*proc, toks []token, cl civilv1.CivilRegistryClient) Result {
	return b.measurePaced(ctx, label, scenario, conc, 0, procs, toks, cl)
}

// measurePaced is measureCalls at an offered rate of rate queries/s in all
// (0: as fast as the callers go).
func (b *harness) measurePaced(ctx context.Context, label, scenario string, conc int, rate float64, procs []*proc, toks []token, cl civilv1.CivilRegistryClient) Result {
	var every time.Duration
	if rate > 0 {
		every = time.Duration(float64(time.Second) / rate)
	}
	r := b.loadPaced(ctx, label, conc, every, procs, func(ctx context.Context, w, i int) error {
		t := toks[(w*7919+i)%len(toks)]
		cctx, cancel := context.WithTimeout(t.ctx(ctx), 10*time.Second)
		defer cancel()
		_, err := cl.GetPerson(cctx, &civilv1.GetPersonRequest{Eid: t.eid})
		return err
	})
	r.Scenario, r.Offered = scenario, rate
	return r
}

// measureFull measures the full path at every concurrency, the cost of
// each safeguard, two gateway replicas and the revocation lag.
func (b *harness) measureFull(ctx context.Context, f *cluster, tokens []token, client civilv1.CivilRegistryClient) error {
	for _, c := range b.o.concurrency {
		var prof chan error
		if b.o.profile && c == b.top() {
			prof = b.profile(ctx, f.procs(), b.o.warmup)
		}
		b.results = append(b.results, b.measureCalls(ctx, fmt.Sprintf("full path, c=%d", c), "full", c, f.procs(), tokens, client))
		if prof != nil {
			if err := <-prof; err != nil {
				fmt.Fprintf(b.stderr, "profile: %v\n", err)
			}
		}
	}
	if err := b.safeguards(ctx, f, tokens, client); err != nil {
		return err
	}
	b.step("two gateway replicas")
	if err := b.restartGateways(ctx, f, nil, "gw-1", "gw-2"); err != nil {
		return err
	}
	top := b.top()
	b.results = append(b.results, b.measureCalls(ctx, fmt.Sprintf("two gateway replicas, c=%d", top), "two-replicas", top, f.procs(), tokens, client))
	if b.o.revocations > 0 {
		if err := b.measureRevocation(ctx, f); err != nil {
			return fmt.Errorf("revocation lag: %w", err)
		}
	}
	return nil
}

// safeguards measures the cost of each safeguard: the same load with it
// switched off, against the full path with a gateway restarted the same
// way, in alternating rounds (on, off, off, on) so that drift and other
// load on the machine fall on both alike. Then the same again at one
// offered rate for both, 70 % of what the path did with the safeguard on:
// at full load the path without it also goes faster, and a busier process
// spends less per query (more work per wake-up, fuller writes), which the
// first comparison counts as the safeguard's cost; at the same rate the
// difference is the safeguard's own work.
func (b *harness) safeguards(ctx context.Context, f *cluster, tokens []token, client civilv1.CivilRegistryClient) error {
	top := b.top()
	var controls []Result
	names := Safeguards
	if b.o.safeguards != nil {
		names = b.o.safeguards
	}
	for _, skip := range names {
		b.step("the gateway with and without " + skip + ", alternating")
		on, off, err := b.alternate(ctx, f, tokens, client, skip, 0)
		if err != nil {
			return err
		}
		ctl := mergeResults("", on)
		b.results = append(b.results, withControl(mergeResults(fmt.Sprintf("without %s, c=%d", skip, top), off), ctl))
		controls = append(controls, on...)

		rate := math.Round(pacedShare * ctl.QPS)
		if rate <= 0 {
			continue
		}
		b.step(fmt.Sprintf("the gateway with and without %s, alternating, both at %.0f queries/s", skip, rate))
		pon, poff, err := b.alternate(ctx, f, tokens, client, skip, rate)
		if err != nil {
			return err
		}
		b.results = append(b.results, withControl(mergeResults(fmt.Sprintf("without %s, %.0f queries/s offered, c=%d", skip, rate, top), poff), mergeResults("", pon)))
	}
	b.results = append(b.results, mergeResults(fmt.Sprintf("full path, restarted gateway (the controls), c=%d", top), controls))
	return b.restartGateways(ctx, f, nil, "gw-1")
}

// pacedShare is the offered rate of the paced safeguard rounds, as a share
// of the control's throughput at full load: low enough that both sides
// keep up on a machine whose speed drifts by a quarter within minutes.
const pacedShare = 0.7

// alternate measures the full path at the heaviest load with the gateway
// restarted with and without skip, in rounds on, off, off, on; at rate
// queries/s offered where rate > 0 (scenarios paced-no-<skip> and
// paced-control), else as fast as the callers go (no-<skip>, control).
func (b *harness) alternate(ctx context.Context, f *cluster, tokens []token, client civilv1.CivilRegistryClient, skip string, rate float64) (on, off []Result, err error) {
	top := b.top()
	prefix, at := "", ""
	if rate > 0 {
		prefix, at = "paced-", fmt.Sprintf(" at %.0f/s", rate)
	}
	for i, without := range []bool{false, true, true, false} {
		var skips []string
		label := fmt.Sprintf("full path (control for %s)%s, c=%d (%d/4)", skip, at, top, i+1)
		if without {
			skips = []string{skip}
			label = fmt.Sprintf("without %s%s, c=%d (%d/4)", skip, at, top, i+1)
		}
		if err := b.restartGateways(ctx, f, skips, "gw-1"); err != nil {
			return nil, nil, err
		}
		var prof chan error
		if b.o.profile && b.o.safeguardsOnly && i < 2 && rate == 0 {
			prof = b.profileAs(ctx, f.procs(), b.o.warmup, skip+map[bool]string{false: "-on-", true: "-off-"}[without])
		}
		r := b.measurePaced(ctx, label, prefix+"control", top, rate, f.procs(), tokens, client)
		if prof != nil {
			if err := <-prof; err != nil {
				fmt.Fprintf(b.stderr, "profile: %v\n", err)
			}
		}
		if without {
			r.Scenario = prefix + "no-" + skip
			off = append(off, r)
		} else {
			on = append(on, r)
		}
	}
	return on, off, nil
}

// withControl is r with ctl as its control.
func withControl(r, ctl Result) Result {
	r.Control = &Control{QPS: ctl.QPS, P50: ctl.P50, P99: ctl.P99, CPUMicros: ctl.CPUMicros, CPUByProcess: ctl.CPUByProcess}
	return r
}

func (b *harness) startNATS(ctx context.Context, f *cluster) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	if f.nats, err = b.spawn("nats", "nats-server", "--listen", addr); err != nil {
		return err
	}
	f.natsURL = "tls://" + addr
	if err := waitFor(ctx, f.nats, "NATS", tcpOpen(addr)); err != nil {
		return err
	}
	// The operator creates the streams and buckets, as in production: the
	// gateway only opens them.
	return b.runOnce(ctx, "nats-init", "--nats", f.natsURL, "nats", "init")
}

// population compares a store of --large citizens with the 10,000 of the
// other runs under the same conditions: both backends run side by side and
// the provider adapter is pointed at one, then the other, in alternating
// rounds (populationRounds) so that drift and other load on the machine
// fall on both alike.
// populationRounds is the order of the population rounds, 0 for the
// 10,000 and 1 for the large: twice 10k, large, large, 10k — on this kind
// of shared machine the speed drifts by a quarter within minutes, and one
// such sequence was not enough to tell the populations apart from it.
var populationRounds = []int{0, 1, 1, 0, 0, 1, 1, 0}

func (b *harness) population(ctx context.Context, f *cluster, small []token) error {
	largeTokens, err := b.startLarge(ctx, f)
	if err != nil {
		return err
	}
	cl, closeCl, err := b.dial(f)
	if err != nil {
		return err
	}
	defer closeCl()
	c := 16
	if !slices.Contains(b.o.concurrency, c) {
		c = b.o.concurrency[0]
	}
	type pop struct {
		name     string
		backend  *proc
		addr     string
		tokens   []token
		rounds   []Result
		scenario string
	}
	pops := []*pop{
		{name: "10,000", backend: f.backend, addr: f.backendAddr, tokens: small, scenario: "population-10k"},
		{name: fmt.Sprintf("%d", b.o.large), backend: f.large, addr: f.largeAddr, tokens: largeTokens, scenario: "large"},
	}
	var order []*pop
	for _, i := range populationRounds {
		order = append(order, pops[i])
	}
	for i, p := range order {
		if f.provider != nil {
			f.provider.stop()
			f.provider = nil
		}
		if err := b.startProvider(ctx, f, p.addr); err != nil {
			return err
		}
		procs := append([]*proc{f.nats, f.consumer, f.provider, p.backend}, f.gateways...)
		label := fmt.Sprintf("%s citizens, c=%d (%d/%d)", p.name, c, i+1, len(order))
		p.rounds = append(p.rounds, b.measureCalls(ctx, label, p.scenario, c, procs, p.tokens, cl))
	}
	for _, p := range pops {
		b.results = append(b.results, mergeResults(fmt.Sprintf("%s citizens, c=%d", p.name, c), p.rounds))
	}
	return nil
}

// startLarge seeds the large population's backend beside the 10,000 and
// starts a gateway and the consumer adapter again; it returns the tokens of
// the large population.
func (b *harness) startLarge(ctx context.Context, f *cluster) ([]token, error) {
	fmt.Fprintf(b.stderr, "» seeding a second backend with %d citizens\n", b.o.large)
	seed := time.Now()
	var err error
	if f.large, f.largeAddr, err = b.startBackend(ctx, "backend-large", b.o.large, filepath.Join(b.dir, "data-large")); err != nil {
		return nil, err
	}
	b.facts.SeedLarge, b.facts.Large = time.Since(seed).Seconds(), b.o.large
	b.facts.LargeStoreBytes = dirSize(filepath.Join(b.dir, "data-large"))
	// Let the kernel write the freshly seeded store back before
	// measuring, so the run does not compete with that I/O.
	syscall.Sync()
	time.Sleep(2 * time.Second)
	if err := b.startGateways(ctx, f, nil, "gw-1"); err != nil {
		return nil, err
	}
	if err := b.startConsumer(ctx, f); err != nil {
		return nil, err
	}
	return b.mint(ctx, f, b.o.large)
}

func (b *harness) startBackend(ctx context.Context, name string, citizens int, dataDir string) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := b.spawn(name, "--data", dataDir, "backend", "--member", "civil-registry",
		"--listen", addr, "--citizens", fmt.Sprint(citizens))
	if err != nil {
		return nil, "", err
	}
	return p, addr, waitFor(ctx, p, name, grpcServing(addr))
}

func (b *harness) startGateways(ctx context.Context, f *cluster, skip []string, instances ...string) error {
	for _, inst := range instances {
		httpAddr, err := freeAddr()
		if err != nil {
			return err
		}
		args := []string{"--nats", f.natsURL, "gateway", "--instance", inst, "--http", httpAddr, "--grpc", "", "--pprof", "--nats-conns", fmt.Sprint(b.o.natsConns)}
		for _, s := range skip {
			args = append(args, "--unsafe-skip", s)
		}
		p, err := b.spawn("gateway-"+inst, args...)
		if err != nil {
			return err
		}
		f.gateways = append(f.gateways, p)
		f.gwHTTP = append(f.gwHTTP, "http://"+httpAddr)
		if err := waitFor(ctx, p, "gateway", httpOK("http://"+httpAddr+"/readyz")); err != nil {
			return err
		}
	}
	return nil
}

func (b *harness) restartGateways(ctx context.Context, f *cluster, skip []string, instances ...string) error {
	for _, p := range f.gateways {
		p.stop()
	}
	f.gateways, f.gwHTTP = nil, nil
	return b.startGateways(ctx, f, skip, instances...)
}

func (b *harness) startAdapters(ctx context.Context, f *cluster) error {
	if err := b.startProvider(ctx, f, f.backendAddr); err != nil {
		return err
	}
	return b.startConsumer(ctx, f)
}

func (b *harness) startProvider(ctx context.Context, f *cluster, backendAddr string) error {
	paddr, err := freeAddr()
	if err != nil {
		return err
	}
	if f.provider, err = b.spawn("adapter-civil-registry", "--nats", f.natsURL, "adapter", "--member", "civil-registry",
		"--listen", paddr, "--backend", backendAddr, "--nats-conns", fmt.Sprint(b.o.natsConns)); err != nil {
		return err
	}
	return waitFor(ctx, f.provider, "provider adapter", grpcServing(paddr))
}

func (b *harness) startConsumer(ctx context.Context, f *cluster) error {
	caddr, err := freeAddr()
	if err != nil {
		return err
	}
	if f.consumer, err = b.spawn("adapter-cnss", "--nats", f.natsURL, "adapter", "--member", "cnss", "--listen", caddr, "--nats-conns", fmt.Sprint(b.o.natsConns)); err != nil {
		return err
	}
	f.consumerAddr = caddr
	return waitFor(ctx, f.consumer, "consumer adapter", grpcServing(caddr))
}

// dial opens the load generator's links to the consumer adapter: one
// HTTP/2 connection per 4 cores, from 1 to 4, as the adapters' own NATS
// connections (one HTTP/2 connection serialises every call's frames
// through its one writer, in the client and in the adapter's server: on
// 16 cores that, not the path, was the limit). Calls take them in turn.
func (b *harness) dial(f *cluster) (civilv1.CivilRegistryClient, func(), error) {
	n := loadLinks()
	rr := &roundRobin{}
	closeAll := func() {
		for _, cc := range rr.conns {
			cc.Close()
		}
	}
	for range n {
		cc, err := dialLoopback(f.consumerAddr)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		rr.conns = append(rr.conns, cc)
		rr.clients = append(rr.clients, civilv1.NewCivilRegistryClient(cc))
	}
	rr.CivilRegistryClient = rr.clients[0]
	return rr, closeAll, nil
}

// loadLinks is how many HTTP/2 links the load generator opens to the
// consumer adapter.
func loadLinks() int { return min(max(runtime.NumCPU()/4, 1), 4) }

// roundRobin sends each GetPerson on the next of its links.
type roundRobin struct {
	civilv1.CivilRegistryClient // the other methods: the first link
	conns                       []*grpc.ClientConn
	clients                     []civilv1.CivilRegistryClient
	next                        atomic.Uint32
}

func (r *roundRobin) GetPerson(ctx context.Context, in *civilv1.GetPersonRequest, opts ...grpc.CallOption) (*civilv1.GetPersonResponse, error) {
	return r.clients[r.next.Add(1)%uint32(len(r.clients))].GetPerson(ctx, in, opts...)
}

// token is a citizen and a consent token for them.
type token struct {
	eid, token, jti string
	md              metadata.MD
}

func (t token) ctx(ctx context.Context) context.Context {
	return metadata.NewOutgoingContext(ctx, t.md)
}

// mint grants, through the consent service, one token per citizen for
// tokensPerRun citizens spread over a population of n.
func (b *harness) mint(ctx context.Context, f *cluster, n int) ([]token, error) {
	bg := b.clients(f.natsURL)
	svc, done, err := bg.ConsentService(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	keyer, err := bg.Keyer()
	if err != nil {
		return nil, err
	}
	out := make([]token, 0, tokensPerRun)
	for k := range tokensPerRun {
		eid := demodata.EID(demodata.DefaultSeed, int((int64(k)*7919+13)%int64(n)))
		resp, err := svc.Grant(ctx, keyer.CKey(eid), consent.GrantRequest{
			To: "cnss", Service: queryService, Methods: []string{queryMethod}, Purpose: queryPurpose, TTL: "2h"})
		if err != nil {
			return nil, fmt.Errorf("grant: %w", err)
		}
		out = append(out, token{eid: eid, token: resp.Token, jti: resp.ID,
			md: metadata.Pairs("jisr-purpose", queryPurpose, "jisr-consent", resp.Token)})
	}
	return out, nil
}

// profile collects a CPU profile of every component while the next
// scenario runs, into the results directory as <component>-cpu.pprof, and
// beside it the allocations and mutex contention of the same seconds
// (<component>-{allocs,mutex}.pprof; the components sample contention while
// they serve profiles).
func (b *harness) profile(ctx context.Context, procs []*proc, after time.Duration) chan error {
	return b.profileAs(ctx, procs, after, "")
}

// profileAs is profile with the files named <prefix><component>-….
func (b *harness) profileAs(ctx context.Context, procs []*proc, after time.Duration, prefix string) chan error {
	done := make(chan error, 1)
	go func() {
		time.Sleep(after)
		secs := max(1, int(b.o.duration/time.Second))
		if err := os.MkdirAll(b.o.out, 0o755); err != nil {
			done <- err
			return
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for _, p := range procs {
			addr, ok := b.pprof[p.name]
			if !ok {
				continue
			}
			for kind, endpoint := range map[string]string{"cpu": "profile", "allocs": "allocs", "mutex": "mutex"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					path := filepath.Join(b.o.out, prefix+p.name+"-"+kind+".pprof")
					err := fetchTo(ctx, fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", addr, endpoint, secs), path)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, fmt.Errorf("%s %s: %w", p.name, kind, err))
						return
					}
					if kind == "cpu" {
						b.facts.Profiles = append(b.facts.Profiles, filepath.Base(path))
					} else {
						b.facts.OtherProfiles = append(b.facts.OtherProfiles, filepath.Base(path))
					}
				}()
			}
		}
		wg.Wait()
		sort.Strings(b.facts.Profiles)
		sort.Strings(b.facts.OtherProfiles)
		done <- errors.Join(errs...)
	}()
	return done
}

func fetchTo(ctx context.Context, url, path string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(fh, resp.Body); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// baseline runs the raw two-hop path at every concurrency.
func (b *harness) baseline(ctx context.Context, f *cluster, tokens []token) error {
	relay, responder, err := b.startRelay(ctx, f)
	if err != nil {
		return err
	}
	defer func() { relay.stop(); responder.stop() }()
	call, done, err := b.baselineClient(ctx, f, tokens)
	if err != nil {
		return err
	}
	defer done()
	procs := []*proc{f.nats, relay, responder}
	for _, c := range b.o.concurrency {
		r := b.load(ctx, fmt.Sprintf("raw two-hop baseline, c=%d", c), c, procs, call)
		r.Scenario = "baseline"
		b.results = append(b.results, r)
	}
	// The baseline's relay and responder limited like the path's components.
	for _, n := range b.o.scaling {
		relay.stop()
		responder.stop()
		b.gomaxprocs = n
		relay, responder, err = b.startRelay(ctx, f)
		b.gomaxprocs = 0
		if err != nil {
			return err
		}
		top := b.top()
		r := b.load(ctx, fmt.Sprintf("scaling: baseline, %d cores, c=%d", n, top), top, []*proc{f.nats, relay, responder}, call)
		r.Scenario, r.GOMAXPROCS = "scaling-baseline", n
		b.results = append(b.results, r)
	}
	return nil
}

// baselineClient connects the baseline's client (as cnss) and returns its
// call over the query messages of tokens; done closes the connection.
func (b *harness) baselineClient(ctx context.Context, f *cluster, tokens []token) (call func(ctx context.Context, w, i int) error, done func(), err error) {
	bg := b.clients(f.natsURL)
	nc, src, err := bg.Connect(ctx, "cnss")
	if err != nil {
		return nil, nil, err
	}
	done = func() { nc.Close(); src.Close() }
	msgs, err := b.queryMsgs(bg, tokens)
	if err != nil {
		done()
		return nil, nil, err
	}
	return baselineCall(nc, msgs), done, nil
}

// baselineCall is the baseline's call: msgs in turn, as requests over nc.
func baselineCall(nc *nats.Conn, msgs []*nats.Msg) func(ctx context.Context, w, i int) error {
	return func(ctx context.Context, w, i int) error {
		m := msgs[(w*7919+i)%len(msgs)]
		out := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := nc.RequestMsgWithContext(cctx, out)
		return err
	}
}

// pairedRounds is the order of the paired rounds, 0 for the full path and 1
// for the baseline.
var pairedRounds = []int{0, 1, 1, 0}

// paired measures the full path and the baseline at the load the ratio is
// judged at in alternating rounds (pairedRounds), so that the machine's
// drift between the scenarios, minutes apart, does not fall on one side of
// the ratio: on a shared virtual machine the baseline alone has measured
// anywhere from 8,000 to 14,000 queries/s at 128 callers in runs of the
// same code. The baseline's relay and responder answer the path's own
// subjects, so one side runs at a time: the gateway and the adapters are
// stopped for the baseline's rounds and started again after them.
func (b *harness) paired(ctx context.Context, f *cluster, tokens []token) error {
	c := b.judgedAt()
	b.step(fmt.Sprintf("the full path and the raw two-hop baseline in alternating rounds, c=%d", c))
	call, done, err := b.baselineClient(ctx, f, tokens)
	if err != nil {
		return err
	}
	defer done()
	var full, base []Result
	var relay, responder *proc
	defer func() {
		if relay != nil {
			relay.stop()
			responder.stop()
		}
	}()
	for i, which := range pairedRounds {
		n := fmt.Sprintf("(%d/%d)", i+1, len(pairedRounds))
		if which == 1 {
			if relay == nil {
				for _, p := range append(slices.Clone(f.gateways), f.provider, f.consumer) {
					p.stop()
				}
				f.gateways, f.gwHTTP, f.provider, f.consumer = nil, nil, nil, nil
				if relay, responder, err = b.startRelay(ctx, f); err != nil {
					return err
				}
			}
			r := b.load(ctx, fmt.Sprintf("raw two-hop baseline, c=%d %s", c, n), c, []*proc{f.nats, relay, responder}, call)
			r.Scenario = "paired-baseline"
			base = append(base, r)
			continue
		}
		if relay != nil {
			relay.stop()
			responder.stop()
			relay, responder = nil, nil
			if err := b.restartGateways(ctx, f, nil, "gw-1"); err != nil {
				return err
			}
			if err := b.startAdapters(ctx, f); err != nil {
				return err
			}
		}
		client, closeClient, err := b.dial(f)
		if err != nil {
			return err
		}
		full = append(full, b.measureCalls(ctx, fmt.Sprintf("full path, c=%d %s", c, n), "paired-full", c, f.procs(), tokens, client))
		closeClient()
	}
	b.results = append(b.results,
		mergeResults(fmt.Sprintf("full path, c=%d, rounds alternating with the baseline", c), full),
		mergeResults(fmt.Sprintf("raw two-hop baseline, c=%d, rounds alternating with the full path", c), base))
	return nil
}

// startRelay starts the baseline's relay and responder and waits until both are ready.
func (b *harness) startRelay(ctx context.Context, f *cluster) (relay, responder *proc, err error) {
	relay, err = b.spawn("relay", "--nats", f.natsURL, "bench", "relay", "--size", fmt.Sprint(b.respSize))
	if err != nil {
		return nil, nil, err
	}
	responder, err = b.spawn("responder", "--nats", f.natsURL, "bench", "responder", "--member", "civil-registry",
		"--size", fmt.Sprint(max(b.fullRespSize, b.respSize)))
	if err != nil {
		relay.stop()
		return nil, nil, err
	}
	for _, p := range []*proc{relay, responder} {
		if err := waitFor(ctx, p, p.name, logSays(p.logf, "ready")); err != nil {
			relay.stop()
			responder.stop()
			return nil, nil, err
		}
	}
	return relay, responder, nil
}

// scalingFull measures the full path at the heaviest load with the gateway,
// both adapters and the backend limited to each number of cores of
// WithScaling (GOMAXPROCS; NATS keeps every core), restarting them for each,
// then restarts them unlimited.
func (b *harness) scalingFull(ctx context.Context, f *cluster, tokens []token) error {
	if len(b.o.scaling) == 0 {
		return nil
	}
	top := b.top()
	for _, n := range append(slices.Clone(b.o.scaling), 0) {
		if n > 0 {
			b.step(fmt.Sprintf("scaling: gateway, adapters and backend limited to %d core(s)", n))
		}
		b.gomaxprocs = n
		err := b.restartPath(ctx, f)
		b.gomaxprocs = 0
		if err != nil || n == 0 {
			return err
		}
		client, closeClient, err := b.dial(f)
		if err != nil {
			return err
		}
		r := b.measureCalls(ctx, fmt.Sprintf("scaling: full path, %d cores, c=%d", n, top), "scaling", top, f.procs(), tokens, client)
		closeClient()
		r.GOMAXPROCS = n
		b.results = append(b.results, r)
	}
	return nil
}

// restartPath restarts the backend, the gateway and both adapters (not NATS).
func (b *harness) restartPath(ctx context.Context, f *cluster) error {
	for _, p := range []*proc{f.consumer, f.provider, f.backend} {
		p.stop()
	}
	var err error
	if f.backend, f.backendAddr, err = b.startBackend(ctx, "backend", 10000, filepath.Join(b.dir, "data")); err != nil {
		return err
	}
	if err := b.restartGateways(ctx, f, nil, "gw-1"); err != nil {
		return err
	}
	return b.startAdapters(ctx, f)
}

// queryMsgs builds, for each token, the NATS message the consumer adapter
// would publish: the query subject (with the citizen's ckey), the same
// payload and the same headers.
func (b *harness) queryMsgs(bg Clients, tokens []token) ([]*nats.Msg, error) {
	fed, err := bg.Federation()
	if err != nil {
		return nil, err
	}
	keyer, err := bg.Keyer()
	if err != nil {
		return nil, err
	}
	svcs, err := descset.Services(fed, fed.Descriptors, nil)
	if err != nil {
		return nil, err
	}
	cat, err := catalog.New(fed, svcs)
	if err != nil {
		return nil, err
	}
	m, err := cat.ByFullMethod("/" + queryService + "/" + queryMethod)
	if err != nil {
		return nil, err
	}
	var out []*nats.Msg
	for _, t := range tokens {
		subj, err := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: m.ServiceToken, Method: m.Name, CKey: keyer.CKey(t.eid)}.Subject()
		if err != nil {
			return nil, err
		}
		data, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: t.eid})
		h := nats.Header{}
		h.Set(bus.HeaderPurpose, queryPurpose)
		h.Set(bus.HeaderConsent, t.token)
		out = append(out, &nats.Msg{Subject: subj, Data: data, Header: h})
	}
	return out, nil
}

func logSays(path, word string) func(context.Context) error {
	return func(context.Context) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), word) {
			return fmt.Errorf("not yet %s", word)
		}
		return nil
	}
}

// measureRevocation revokes tokens one at a time while two gateway replicas
// serve them, and times, for each replica, from the revoke call to the first
// reply in which that replica refuses the token. Queries go straight to NATS
// as the consumer adapter would send them; the Jisr-Gateway reply header
// says which replica answered.
func (b *harness) measureRevocation(ctx context.Context, f *cluster) error {
	bg := b.clients(f.natsURL)
	nc, src, err := bg.Connect(ctx, "cnss")
	if err != nil {
		return err
	}
	defer func() { nc.Close(); src.Close() }()
	svc, done, err := bg.ConsentService(ctx)
	if err != nil {
		return err
	}
	defer done()
	keyer, err := bg.Keyer()
	if err != nil {
		return err
	}
	bar := progress.New(b.stderr, fmt.Sprintf("%-34s", "revocation lag, two replicas"))
	defer bar.Done()
	var lags []float64
	perReplica := map[string][]float64{}
	for rep := range b.o.revocations {
		eid := demodata.EID(demodata.DefaultSeed, 5000+rep)
		first, err := b.revokeOnce(ctx, bg, nc, svc, keyer.CKey(eid), eid, len(f.gateways))
		if err != nil {
			return err
		}
		for _, inst := range []string{"gw-1", "gw-2"} {
			d, ok := first[inst]
			if !ok {
				d = 5 * time.Second // not refused within the bound: counted at the bound
			}
			lags = append(lags, ms(d))
			perReplica[inst] = append(perReplica[inst], ms(d))
		}
		bar.Update(rep+1, b.o.revocations)
	}
	b.facts.Revocation = &RevocationFacts{Revocations: b.o.revocations, Samples: len(lags), PerReplica: map[string]RevocationLag{}}
	b.facts.Revocation.RevocationLag = lagOf(lags)
	for inst, l := range perReplica {
		b.facts.Revocation.PerReplica[inst] = lagOf(l)
	}
	return nil
}

// revokeOnce grants a token for eid, has each of the replicas accept (and
// cache) it, revokes it and returns, for each replica, the time from the
// revocation to its first refusal (absent: none within 5 s).
func (b *harness) revokeOnce(ctx context.Context, bg Clients, nc *nats.Conn, svc *consent.Service, ck, eid string, replicas int) (map[string]time.Duration, error) {
	g, err := svc.Grant(ctx, ck, consent.GrantRequest{To: "cnss", Service: queryService,
		Methods: []string{queryMethod}, Purpose: queryPurpose, TTL: "1h"})
	if err != nil {
		return nil, err
	}
	msgs, err := b.queryMsgs(bg, []token{{eid: eid, token: g.Token}})
	if err != nil {
		return nil, err
	}
	ask := func() (replica string, allowed bool, err error) {
		m := msgs[0]
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		reply, err := nc.RequestMsgWithContext(cctx, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header})
		if err != nil {
			return "", false, err
		}
		return reply.Header.Get(bus.HeaderGateway), bus.StatusOf(reply.Header).Code() == 0, nil
	}
	// Both replicas have verified (and cached) the token.
	seen := map[string]bool{}
	for i := 0; len(seen) < replicas && i < 500; i++ {
		r, ok, err := ask()
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("the fresh token was refused by %s", r)
		}
		seen[r] = true
	}
	if len(seen) < replicas {
		return nil, fmt.Errorf("queries reached only %v", seen)
	}
	t0 := time.Now()
	if _, err := svc.Store.Revoke(ctx, g.ID); err != nil {
		return nil, err
	}
	return firstRefusals(ask, t0, replicas), nil
}

// firstRefusals asks, four at a time, until each of the replicas has
// refused once or 5 s have passed since t0, and returns when each refused.
func firstRefusals(ask func() (string, bool, error), t0 time.Time, replicas int) map[string]time.Duration {
	var mu sync.Mutex
	first := map[string]time.Duration{}
	var wg sync.WaitGroup
	deadline := t0.Add(5 * time.Second)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				r, ok, err := ask()
				mu.Lock()
				if err == nil && !ok {
					if _, have := first[r]; !have {
						first[r] = time.Since(t0)
					}
				}
				n := len(first)
				mu.Unlock()
				if n == replicas {
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// devStartup times `jisr dev` with an existing data directory: a first run
// creates the PKI and seeds the stores, the second is timed until
// demo.json is written, then its idle memory is read.
func (b *harness) devStartup(ctx context.Context) error {
	dir := filepath.Join(b.dir, "dev")
	demo := filepath.Join(dir, "demo.json")
	run := func(name string) (*proc, time.Duration, error) {
		start := time.Now()
		p, err := b.spawn(name, "--data", dir, "--certs", filepath.Join(dir, "certs"), "dev", "--any-port")
		if err != nil {
			return nil, 0, err
		}
		err = waitFor(ctx, p, "jisr dev", func(context.Context) error { _, err := os.Stat(demo); return err })
		return p, time.Since(start), err
	}
	p, took, err := run("dev-first")
	if err != nil {
		return err
	}
	p.stop()
	b.facts.DevFirstStart = took.Seconds()
	_ = os.Remove(demo)
	p, took, err = run("dev")
	if err != nil {
		return err
	}
	defer p.stop()
	b.facts.DevStart = took.Seconds()
	time.Sleep(2 * time.Second)
	b.facts.DevIdleRSS = p.rss()
	return nil
}

// --- baseline processes -------------------------------------------------

// backendReplySize is the size of the backend's own reply to GetPerson.
func (b *harness) backendReplySize(ctx context.Context, addr, eid string) (int, error) {
	cc, err := dialLoopback(addr)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := civilv1.NewCivilRegistryClient(cc).GetPerson(cctx, &civilv1.GetPersonRequest{Eid: eid})
	if err != nil {
		return 0, err
	}
	return proto.Size(resp), nil
}

// Relay is the baseline's relay, run as the gateway identity on nc: it
// forwards every query to its provider without the gateway's checks, and replies
// with the first size bytes of the provider's answer (size < 0: all of it),
// as the gateway's minimised reply. It logs "relay ready" once subscribed
// and returns when ctx ends.
func Relay(ctx context.Context, nc *nats.Conn, size int, log *slog.Logger) error {
	sub, err := nc.QueueSubscribe(subject.AllQueries(), "jisr-bench-relay", func(msg *nats.Msg) {
		go relay(nc, msg, size)
	})
	if err != nil {
		return err
	}
	return serve(ctx, nc, sub, log, "relay ready")
}

func relay(nc *nats.Conn, msg *nats.Msg, size int) {
	q, err := subject.ParseQuery(msg.Subject)
	if err != nil {
		return
	}
	// The relay runs as the gateway identity: like the gateway, it answers
	// only on the asker's own inbox (the one check the baseline keeps; it
	// costs a string scan and stops the harness being a way around it).
	if subject.CheckReply(msg.Reply, q.Consumer) != nil {
		return
	}
	ps, err := q.ProviderSubject()
	if err != nil {
		return
	}
	reply, err := nc.RequestMsg(&nats.Msg{Subject: ps, Data: msg.Data, Header: msg.Header}, 10*time.Second)
	if err != nil {
		return
	}
	data := reply.Data
	if size >= 0 && size < len(data) {
		data = data[:size] // the same bytes as the gateway's minimised reply
	}
	_ = msg.RespondMsg(&nats.Msg{Subject: msg.Reply, Data: data, Header: reply.Header})
}

// Responder is the baseline's provider, run as member on nc: it answers
// every provider query to member with size bytes. It logs "responder
// ready" once subscribed and returns when ctx ends.
func Responder(ctx context.Context, nc *nats.Conn, member string, size int, log *slog.Logger) error {
	payload := make([]byte, size)
	sub, err := nc.QueueSubscribe(subject.ProviderQueries(member), "jisr-bench-responder", func(msg *nats.Msg) {
		// Like a provider adapter, it answers only the gateway's (here the
		// relay's) own inbox.
		if subject.CheckReply(msg.Reply, "gateway") != nil {
			return
		}
		_ = msg.Respond(payload)
	})
	if err != nil {
		return err
	}
	return serve(ctx, nc, sub, log, "responder ready")
}

// serve raises sub's pending limits, flushes the subscription to the
// server, says ready (the harness waits for the word in the log) and waits
// for ctx.
func serve(ctx context.Context, nc *nats.Conn, sub *nats.Subscription, log *slog.Logger, ready string) error {
	_ = sub.SetPendingLimits(1<<16, 256<<20)
	if err := nc.Flush(); err != nil {
		return err
	}
	log.Warn(ready)
	<-ctx.Done()
	return nil
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func lagOf(ms []float64) RevocationLag {
	sort.Float64s(ms)
	return RevocationLag{P50: ms[len(ms)*50/100], P99: ms[min(len(ms)-1, len(ms)*99/100)], Max: ms[len(ms)-1]}
}
