package gateway

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// backendWindow is how long a provider's backend counts as answering after
// its last answer.
const backendWindow = 5 * time.Minute

// backendWatch notices when one member's provider adapters, sharing its
// queue group, call different backends (a second `jisr adapter --member
// cnss --backend mine` takes half of cnss's traffic): each answer names its
// backend's fingerprint (Jisr-Backend). The gateway then warns, exports
// jisr_gateway_provider_backends, and lists the fingerprints in its
// requests to that provider (Jisr-Backends) so that every adapter of the
// member warns too.
type backendWatch struct {
	log   *slog.Logger
	gauge *prometheus.GaugeVec

	mu   sync.Mutex
	seen map[string]map[string]time.Time // provider → fingerprint → last answer
}

func newBackendWatch(log *slog.Logger, reg prometheus.Registerer) (*backendWatch, error) {
	w := &backendWatch{log: log, seen: map[string]map[string]time.Time{},
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "provider_backends",
			Help: "Different backends (by fingerprint) that answered for a provider in the last 5 minutes; more than 1 means adapters of one member call different backends.",
		}, []string{"provider"})}
	if reg != nil {
		if err := reg.Register(w.gauge); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// fresh returns provider's fingerprints seen within the window, sorted,
// forgetting older ones. w.mu is held.
func (w *backendWatch) fresh(provider string, now time.Time) []string {
	var out []string
	for fp, t := range w.seen[provider] {
		if now.Sub(t) > backendWindow {
			delete(w.seen[provider], fp)
			continue
		}
		out = append(out, fp)
	}
	slices.Sort(out)
	return out
}

// header is the Jisr-Backends value for a request to provider: "" unless
// several backends answer for it.
func (w *backendWatch) header(provider string, now time.Time) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.seen[provider]) < 2 {
		return ""
	}
	if fps := w.fresh(provider, now); len(fps) > 1 {
		return strings.Join(fps, ",")
	}
	return ""
}

// saw records that fingerprint answered for provider.
func (w *backendWatch) saw(provider, fingerprint string, now time.Time) {
	if fingerprint == "" || len(fingerprint) > 64 || strings.ContainsAny(fingerprint, ", ") {
		return
	}
	w.mu.Lock()
	m := w.seen[provider]
	if m == nil {
		m = map[string]time.Time{}
		w.seen[provider] = m
	}
	_, known := m[fingerprint]
	m[fingerprint] = now
	var fps []string
	if !known {
		fps = w.fresh(provider, now)
	}
	w.mu.Unlock()
	if known {
		return
	}
	w.gauge.WithLabelValues(provider).Set(float64(len(fps)))
	if len(fps) > 1 {
		w.log.Warn("adapters of one provider call different backends: its queries are split between them (a second adapter joined the member's queue group with another --backend?)",
			"provider", provider, "backends", strings.Join(fps, ","))
	}
}
