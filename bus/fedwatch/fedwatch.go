// Package fedwatch follows the signed federation versions published in the
// operator's bucket (jisr_federation) and hands each new one, verified, to
// its component to apply without a restart.
//
// Invariant: only a version whose signature verifies with a trusted
// governance key and that is newer than the one in force is applied; any
// other is refused, logged as an error and counted
// (jisr_federation_refused_total{reason}), and the running version stays.
package fedwatch

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
)

// Refusal reasons (the label of jisr_federation_refused_total).
const (
	ReasonBadSignature = "bad_signature"
	ReasonNotNewer     = "not_newer"
	ReasonMalformed    = "malformed"
	ReasonNotApplied   = "not_applied" // verified, but the component could not apply it
)

// Config holds what Start requires.
type Config struct {
	// Bucket is the federation bucket (natsstate.OpenBucket).
	Bucket  jetstream.KeyValue
	Trusted []ed25519.PublicKey
	// Apply puts a verified, newer version in force; an error refuses it.
	Apply func(*federation.Bundle, *federation.Federation) error
	// Component labels the metrics ("gateway").
	Component  string
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: not registered
	// Poll, when set, reads the bundle's latest revision every Poll (a
	// direct get) instead of watching the bucket with a consumer. Members'
	// adapters poll: their NATS user may read the bundle but create no
	// consumer, since a consumer's deliver subject would let a member make
	// the server publish where the member itself may not.
	Poll time.Duration
}

// Watcher is a running watch.
type Watcher struct {
	cfg      Config
	version  atomic.Uint64
	watching atomic.Bool
	refused  *prometheus.CounterVec
	gauge    prometheus.Gauge
	stop     func()
	wg       sync.WaitGroup
}

// Start watches the bucket: it applies the published version (if newer
// than none) before returning, then every later one as it comes.
func Start(ctx context.Context, cfg Config) (*Watcher, error) {
	if cfg.Bucket == nil || cfg.Apply == nil || len(cfg.Trusted) == 0 {
		return nil, errors.New("fedwatch: Bucket, Apply and a trusted governance key are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	w := &Watcher{cfg: cfg,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jisr_federation_refused_total",
			Help: "Federation versions refused (bad signature, not newer, malformed, not applied)", ConstLabels: prometheus.Labels{"component": cfg.Component}}, []string{"reason"}),
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jisr_federation_version",
			Help: "The federation version in force (0: the file the component started with)", ConstLabels: prometheus.Labels{"component": cfg.Component}}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.refused, w.gauge} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("fedwatch: metrics: %w", err)
			}
		}
	}
	if cfg.Poll > 0 {
		return w, w.poll(ctx)
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	kw, err := cfg.Bucket.Watch(wctx, subject.FederationKey)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("fedwatch: watch %s: %w", subject.FederationBucket, err)
	}
	w.stop = func() { cancel(); _ = kw.Stop() } // cancelled first: a stop is not logged as a failure
	// The current value, then nil: the initial state is read.
	for e := range kw.Updates() {
		if e == nil {
			break
		}
		w.take(e)
	}
	w.watching.Store(true)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for e := range kw.Updates() {
			if e != nil {
				w.take(e)
			}
		}
		w.watching.Store(false)
		if wctx.Err() == nil {
			cfg.Log.Error("federation watch stopped: new versions are no longer applied")
		}
	}()
	return w, nil
}

// poll applies the published version (if any) before returning, then reads
// the key every cfg.Poll and takes each new revision once.
func (w *Watcher) poll(ctx context.Context) error {
	var last uint64 // the latest revision taken
	get := func(ctx context.Context) error {
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		e, err := w.cfg.Bucket.Get(gctx, subject.FederationKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil // nothing published yet
		}
		if err != nil {
			return err
		}
		if e.Revision() > last {
			last = e.Revision()
			w.take(e)
		}
		return nil
	}
	if err := get(ctx); err != nil {
		return fmt.Errorf("fedwatch: read %s: %w", subject.FederationBucket, err)
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.stop = cancel
	w.watching.Store(true)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(w.cfg.Poll)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-pctx.Done():
				w.watching.Store(false)
				return
			case <-t.C:
			}
			err := get(pctx)
			switch {
			case err != nil && !failing && pctx.Err() == nil:
				w.cfg.Log.Warn("the federation bundle could not be read; retrying", "err", err)
				failing = true
			case err == nil && failing:
				w.cfg.Log.Info("the federation bundle is read again")
				failing = false
			}
		}
	}()
	return nil
}

func (w *Watcher) take(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		w.refuse(ReasonMalformed, fmt.Errorf("a %v of the federation key (revision %d)", e.Operation(), e.Revision()))
		return
	}
	b, fed, err := federation.Verify(e.Value(), w.cfg.Trusted, w.version.Load())
	switch {
	case errors.Is(err, federation.ErrBadSignature):
		w.refuse(ReasonBadSignature, err)
		return
	case errors.Is(err, federation.ErrNotNewer):
		w.refuse(ReasonNotNewer, err)
		return
	case err != nil:
		w.refuse(ReasonMalformed, err)
		return
	}
	if err := w.cfg.Apply(b, fed); err != nil {
		w.refuse(ReasonNotApplied, fmt.Errorf("version %d: %w", b.Version, err))
		return
	}
	w.version.Store(b.Version)
	w.gauge.Set(float64(b.Version))
	w.cfg.Log.Info("federation version in force", "version", b.Version, "digest", b.Digest(), "revision", e.Revision())
}

func (w *Watcher) refuse(reason string, err error) {
	w.refused.WithLabelValues(reason).Inc()
	w.cfg.Log.Error("federation version REFUSED; the running version stays", "reason", reason, "running", w.version.Load(), "err", err)
}

// Version is the version in force (0: none published was applied).
func (w *Watcher) Version() uint64 { return w.version.Load() }

// Watching reports whether the watch still runs.
func (w *Watcher) Watching() bool { return w.watching.Load() }

// Refused is how many versions were refused for reason.
func (w *Watcher) Refused(reason string) float64 {
	return counterValue(w.refused.WithLabelValues(reason))
}

// Stop ends the watch.
func (w *Watcher) Stop() {
	w.stop()
	w.wg.Wait()
}
