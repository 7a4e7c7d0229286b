// Package bench is the harness of `jisr bench`: it starts a federation from
// scratch in a temporary directory, every component a jisr process of its
// own as deployed, drives real gRPC calls through it beside a raw two-hop
// baseline over the same NATS, mTLS and payload sizes, and writes the report
// (latest.{md,json,svg} and dated copies) with the targets and what limits
// those that are missed.
//
// The one invariant it keeps: the figures are measured on separate
// processes started from the jisr binary named in Config.Exe, never on
// components linked into the load generator.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/consent"
)

// Config is what a run requires.
type Config struct {
	// Exe is the jisr binary every component is started from (a test
	// binary that acts as jisr when JISR_TEST_MAIN=1 will do).
	Exe string
	// Federation is the federation file.
	Federation string
	// Out is the directory of the report and the CPU profiles.
	Out string
	// Clients opens the harness's own clients (NATS connections, the
	// consent service) of the federation the run started, located by env.
	Clients func(env Env) Clients
}

// Env locates the federation a run started.
type Env struct {
	Federation string // the federation file, absolute
	Certs      string // the dev PKI made by `jisr certs init`
	Data       string // the data directory of the components
	NATS       string // the NATS server URL
}

// Clients are the harness's own clients of the federation under test, made
// as the operator's tools make them.
type Clients interface {
	Federation() (*federation.Federation, error)
	Keyer() (*ckey.Keyer, error)
	// Connect dials NATS as an identity ("gateway", "consent" or a member).
	Connect(ctx context.Context, identity string) (*nats.Conn, io.Closer, error)
	// ConsentService is the consent service, connected to NATS; done
	// closes it.
	ConsentService(ctx context.Context) (svc *consent.Service, done func(), err error)
}

// Option sets an optional setting of a run.
type Option func(*options)

type options struct {
	out         string
	duration    time.Duration
	warmup      time.Duration
	concurrency []int
	large       int
	revocations int
	profile     bool
	scaling     []int
	natsConns   int
	keep        bool
	// compare is a report of a smaller machine, read from comparePath:
	// the heaviest load's throughput is set against its own.
	compare     *Report
	comparePath string
	eventsOnly  bool
	stdout      io.Writer
	progress    io.Writer

	// safeguards: the safeguards whose cost is measured (all by default);
	// safeguardsOnly: nothing else is.
	safeguards     []string
	safeguardsOnly bool
}

func defaults() options {
	return options{duration: 3 * time.Second, warmup: 700 * time.Millisecond, concurrency: []int{1, 16, 128, 512},
		large: 1000000, revocations: 20, profile: true, stdout: io.Discard, progress: io.Discard}
}

// WithDuration sets the measured time of each scenario (default 3 s).
func WithDuration(d time.Duration) Option { return func(o *options) { o.duration = d } }

// WithWarmup sets the unmeasured warm-up before each scenario (default 700 ms).
func WithWarmup(d time.Duration) Option { return func(o *options) { o.warmup = d } }

// WithConcurrency sets the concurrent callers of the full path and of the
// baseline (default 1, 16, 128, 512); the last is the heaviest load.
func WithConcurrency(c ...int) Option { return func(o *options) { o.concurrency = c } }

// WithLarge sets the citizens of the large-population run (default
// 1,000,000; 0 skips it).
func WithLarge(n int) Option { return func(o *options) { o.large = n } }

// WithRevocations sets the revocations timed on two gateway replicas
// (default 20; 0 skips them).
func WithRevocations(n int) Option { return func(o *options) { o.revocations = n } }

// WithProfile saves a CPU profile of every component under the heaviest
// load beside the report (default true).
func WithProfile(on bool) Option { return func(o *options) { o.profile = on } }

// WithScaling measures the full path at the heaviest load, and the raw
// two-hop baseline beside it, with every component but NATS limited to each
// of cores (GOMAXPROCS), and writes the curve to the report. ScalingSteps
// gives 1, 2, 4, … up to the machine's cores. None (the default) skips it.
func WithScaling(cores ...int) Option { return func(o *options) { o.scaling = cores } }

// ScalingSteps returns 1, 2, 4, … below n, then n.
func ScalingSteps(n int) []int {
	var out []int
	for c := 1; c < n; c *= 2 {
		out = append(out, c)
	}
	return append(out, max(n, 1))
}

// WithCompare reads the JSON report at path (latest.json of a run on a
// smaller machine) and adds a target: the full path's throughput at the
// heaviest load is at least 5× that report's at the same load.
func WithCompare(path string) (Option, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if rep.Facts.Cores == 0 {
		return nil, fmt.Errorf("%s: the report does not say how many cores it ran on (made by an older jisr bench)", path)
	}
	return func(o *options) { o.compare, o.comparePath = &rep, path }, nil
}

// WithNATSConns starts the gateway and the adapters with --nats-conns n
// (default 0: their own default).
func WithNATSConns(n int) Option { return func(o *options) { o.natsConns = n } }

// WithKeep keeps the temporary directory with the logs of every process.
func WithKeep(on bool) Option { return func(o *options) { o.keep = on } }

// WithEventsOnly measures only the full path at each concurrency and the
// life events (publication and delivery) beside it, in the same run: the
// events' figure against the query path's, without the rest.
func WithEventsOnly(on bool) Option { return func(o *options) { o.eventsOnly = on } }

// WithSafeguardsOnly measures only the cost of the named safeguards
// (consent, audit, minimise: the gateway restarted with and without each,
// alternating rounds, at the heaviest load), nothing else. With profiles
// on, the first round with and the first without each are profiled, as
// <safeguard>-on-<component>-… and <safeguard>-off-<component>-….
func WithSafeguardsOnly(names ...string) Option {
	return func(o *options) { o.safeguards, o.safeguardsOnly = names, true }
}

// Safeguards are the safeguards a gateway can be started without
// (--unsafe-skip), whose cost the run measures.
var Safeguards = []string{"consent", "audit", "minimise"}

// WithStdout is where the Markdown report is printed (default: nowhere).
func WithStdout(w io.Writer) Option { return func(o *options) { o.stdout = w } }

// WithProgress is where the steps and progress bars go (default: nowhere).
func WithProgress(w io.Writer) Option { return func(o *options) { o.progress = w } }

// Quick is a smoke run of a few seconds: short scenarios, callers 1 and 16,
// a 20,000-citizen "large" population, three revocations, no profile. It
// overrides the options before it.
func Quick() Option {
	return func(o *options) {
		o.duration, o.warmup, o.concurrency, o.large, o.revocations, o.profile, o.scaling = 500*time.Millisecond, 200*time.Millisecond, []int{1, 16}, 20000, 3, false, nil
	}
}

// ErrConfig is returned for a Config or an Option that cannot run.
var ErrConfig = errors.New("bench: bad configuration")
