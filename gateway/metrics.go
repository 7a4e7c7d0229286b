package gateway

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/gateway/decision"
)

// metrics are labelled by member, method, legal basis and decision only:
// never by citizen (ckey) or anything derived from a payload.
type metrics struct {
	queries       *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	auditLatency  prometheus.Histogram
	auditFailures prometheus.Counter
	// unknownFields counts protobuf fields no descriptor knows, dropped from
	// requests (sent by the consumer) and replies (sent by the provider). A
	// provider that sends them is a finding for its operators.
	unknownFields *prometheus.CounterVec
	unaudited     prometheus.Counter
	shed          *prometheus.CounterVec
	badReplies    *prometheus.CounterVec

	// children are the queries' and latency's labelled children by label
	// set, so that a query does not hash and look up its labels in the
	// vectors (a lock shared by every query, and most of observe's time):
	// read without a lock, replaced whole when a label set is added, at
	// most maxChildren of them (past that, observe looks them up).
	children   atomic.Pointer[map[observeKey]observers]
	childrenMu sync.Mutex // serialises additions
}

// observeKey is the label set of one query's counter (the latency
// histogram's labels are among them).
type observeKey struct {
	consumer, provider, method, legalBasis, decision string
	code                                             codes.Code
}

// observers are the children of one label set.
type observers struct {
	queries prometheus.Counter
	latency prometheus.Observer
}

// maxChildren bounds the cache of children: label sets are members,
// methods, legal bases, decisions and codes, a few hundred in a
// federation.
const maxChildren = 4096

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "queries_total",
			Help: "Queries decided by the gateway, by consumer, provider, method, legal basis, decision (allowed, refused by policy, or provider_failed: the provider was unavailable, timed out, had no record or failed) and code.",
		}, []string{"consumer", "provider", "method", "legal_basis", "decision", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "query_duration_seconds",
			Help:    "Time from receiving a query to answering it, including the provider.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"provider", "method", "decision"}),
		auditLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "audit_append_duration_seconds",
			Help:    "Time to make one audit record durable.",
			Buckets: []float64{.0001, .0005, .001, .002, .005, .01, .05, .1, .5, 1},
		}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "audit_failures_total",
			Help: "Audit appends that failed; each withheld a reply.",
		}),
		unknownFields: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "unknown_fields_dropped_total",
			Help: "Protobuf fields unknown to the gateway's descriptors, dropped before forwarding (direction=request, sent by the consumer) or releasing (direction=reply, sent by the provider).",
		}, []string{"consumer", "provider", "direction"}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "shed_total",
			Help: "Queries refused at dispatch for fair share, by member and reason (REQUEST_TOO_LARGE, TOO_MANY_IN_FLIGHT, RATE_LIMITED, GATEWAY_OVERLOADED).",
		}, []string{"consumer", "reason"}),
		unaudited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "refusals_unaudited_total",
			Help: "Queries refused at dispatch (fair share) whose record found the refusal audit queue full.",
		}),
		badReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "bad_reply_subjects_total",
			Help: "Queries dropped unanswered because their reply subject was not the asker's inbox (BAD_REPLY_SUBJECT).",
		}, []string{"consumer"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queries, m.latency, m.auditLatency, m.auditFailures, m.unknownFields, m.unaudited, m.shed, m.badReplies} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(d *decision.Decision) {
	dec := "refused"
	switch {
	case d.Allowed:
		dec = "allowed"
	case decision.ProviderOutcome(d.Reason):
		dec = "provider_failed" // not a policy refusal: see decision.ProviderOutcome
	}
	method := d.Method
	if method == "" {
		method = "unknown"
	}
	k := observeKey{consumer: d.Consumer, provider: d.Provider, method: method, legalBasis: d.LegalBasis, decision: dec, code: d.Code}
	o, ok := observers{}, false
	if c := m.children.Load(); c != nil {
		o, ok = (*c)[k]
	}
	if !ok {
		o = m.addChildren(k)
	}
	o.queries.Inc()
	o.latency.Observe(d.Latency.Seconds())
}

// addChildren looks up the children of k in the vectors and keeps them,
// unless maxChildren are kept already.
func (m *metrics) addChildren(k observeKey) observers {
	o := observers{
		queries: m.queries.WithLabelValues(k.consumer, k.provider, k.method, k.legalBasis, k.decision, k.code.String()),
		latency: m.latency.WithLabelValues(k.provider, k.method, k.decision),
	}
	m.childrenMu.Lock()
	defer m.childrenMu.Unlock()
	var old map[observeKey]observers
	if c := m.children.Load(); c != nil {
		old = *c
	}
	if _, ok := old[k]; ok || len(old) >= maxChildren {
		return o
	}
	c := make(map[observeKey]observers, len(old)+1)
	maps.Copy(c, old)
	c[k] = o
	m.children.Store(&c)
	return o
}

// watch exports the query subscription's backlog: what waits for dispatch,
// its high-water mark, and what the NATS client dropped over the pending
// limits (nothing, as long as dispatch keeps up).
// subStats is what watch reads of the query subscription (a
// *nats.Subscription or a *bus.Responder).
type subStats interface {
	Pending() (int, int, error)
	MaxPending() (int, int, error)
	Dropped() (int, error)
}

func (m *metrics) watch(reg prometheus.Registerer, sub subStats) error {
	if reg == nil {
		return nil
	}
	get := func(f func() (int, int, error)) func() float64 {
		return func() float64 {
			_, bytes, err := f()
			if err != nil {
				return 0
			}
			return float64(bytes)
		}
	}
	dropped := func() float64 {
		n, err := sub.Dropped()
		if err != nil {
			return 0
		}
		return float64(n)
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "pending_bytes",
			Help: "Bytes of queries received and not yet dispatched.",
		}, get(sub.Pending)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "pending_bytes_max",
			Help: "High-water mark of jisr_gateway_pending_bytes since the gateway started.",
		}, get(sub.MaxPending)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "dropped_total",
			Help: "Queries the NATS client dropped because the pending limits were reached.",
		}, dropped),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
