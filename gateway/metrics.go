package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

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
}

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
	m.queries.WithLabelValues(d.Consumer, d.Provider, method, d.LegalBasis, dec, d.Code.String()).Inc()
	m.latency.WithLabelValues(d.Provider, method, dec).Observe(d.Latency.Seconds())
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
