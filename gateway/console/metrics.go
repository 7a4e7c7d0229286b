package console

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	findingsG *prometheus.GaugeVec
	ok        prometheus.Gauge
	last      prometheus.Gauge
}

// Register exports the findings and the last verification as metrics
// (deploy/observability alerts on them):
//
//	jisr_console_findings{kind, subject}   findings now (0 once gone)
//	jisr_audit_verification_ok             1 when the last verification passed
//	jisr_audit_verification_timestamp_seconds
func (s *Server) Register(reg prometheus.Registerer) error {
	m := &metrics{
		findingsG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "jisr", Subsystem: "console", Name: "findings",
			Help: "Anomaly findings of the auditor's console now, by kind and member or log."}, []string{"kind", "subject"}),
		ok: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "jisr", Subsystem: "audit", Name: "verification_ok",
			Help: "1 when the console's last verification of every audit log passed, 0 when it failed."}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "jisr", Subsystem: "audit", Name: "verification_timestamp_seconds",
			Help: "When the console last verified the audit logs."}),
	}
	for _, c := range []prometheus.Collector{m.findingsG, m.ok, m.last} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	m.findings(nil)
	s.metrics = m
	return nil
}

var kinds = []string{KindProbing, KindDistinctCitizens, KindRepeated, KindOffHours, KindLogStalled, KindStaleCheckpoint}

// findings sets the gauge: each finding's count, and 0 for each kind
// without one (so that every kind is always exported).
func (m *metrics) findings(fs []Finding) {
	m.findingsG.Reset()
	for _, k := range kinds {
		m.findingsG.WithLabelValues(k, "")
	}
	for _, f := range fs {
		m.findingsG.WithLabelValues(f.Kind, f.Subject).Add(float64(max(f.Count, 1)))
	}
}

func (m *metrics) verified(v *Verification) {
	if v.OK {
		m.ok.Set(1)
	} else {
		m.ok.Set(0)
	}
	m.last.Set(float64(v.At.Unix()))
}
