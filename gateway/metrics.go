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
	badReplies    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "queries_total",
			Help: "Queries decided by the gateway, by consumer, provider, method, legal basis and decision.",
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
		badReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "jisr", Subsystem: "gateway", Name: "bad_reply_subjects_total",
			Help: "Queries dropped unanswered because their reply subject was not the asker's inbox (BAD_REPLY_SUBJECT).",
		}, []string{"consumer"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queries, m.latency, m.auditLatency, m.auditFailures, m.badReplies} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(d *decision.Decision) {
	dec := "refused"
	if d.Allowed {
		dec = "allowed"
	}
	method := d.Method
	if method == "" {
		method = "unknown"
	}
	m.queries.WithLabelValues(d.Consumer, d.Provider, method, d.LegalBasis, dec, d.Code.String()).Inc()
	m.latency.WithLabelValues(d.Provider, method, dec).Observe(d.Latency.Seconds())
}
