package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/jisr-bus/jisr/bus/catalog"
)

// Rules are the thresholds of the anomaly findings (the federation file's
// `anomalies:` section; zero fields take the defaults).
type Rules struct {
	// Window is how far back a finding looks (default 10m).
	Window time.Duration `yaml:"window"`
	// ProbingRefusals: refusals of one reason for one consumer in Window
	// that make a probing burst (default 20).
	ProbingRefusals int `yaml:"probing_refusals"`
	// DistinctCitizens: distinct citizens one consumer asks about in Window
	// above which it is a finding, when also DistinctFactor times its usual
	// number per Window over Baseline (defaults 50, 5, 7 days).
	DistinctCitizens int           `yaml:"distinct_citizens"`
	DistinctFactor   float64       `yaml:"distinct_factor"`
	Baseline         time.Duration `yaml:"baseline"`
	// RepeatedQueries: queries by one consumer about one citizen on one
	// predicate method in Window (threshold scanning; default 5). Methods
	// that are not predicates do not count.
	RepeatedQueries int `yaml:"repeated_queries"`
	// Hours are the usual hours, UTC, [from, to) (default 7–20): queries
	// outside them are a finding.
	HoursFrom int `yaml:"hours_from"`
	HoursTo   int `yaml:"hours_to"`
	// LogStall: a gateway log whose last record is older than this while
	// another log grew is a finding (default 10m).
	LogStall time.Duration `yaml:"log_stall"`
}

// WithDefaults fills the zero fields.
func (r Rules) WithDefaults() Rules {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&r.ProbingRefusals, 20)
	def(&r.DistinctCitizens, 50)
	def(&r.RepeatedQueries, 5)
	if r.Window <= 0 {
		r.Window = 10 * time.Minute
	}
	if r.DistinctFactor <= 0 {
		r.DistinctFactor = 5
	}
	if r.Baseline <= 0 {
		r.Baseline = 7 * 24 * time.Hour
	}
	if r.LogStall <= 0 {
		r.LogStall = 10 * time.Minute
	}
	if r.HoursFrom == 0 && r.HoursTo == 0 {
		r.HoursFrom, r.HoursTo = 7, 20
	}
	return r
}

// Finding kinds (the `kind` label of jisr_console_findings).
const (
	KindProbing          = "probing"
	KindDistinctCitizens = "distinct_citizens"
	KindRepeated         = "repeated_queries"
	KindOffHours         = "off_hours"
	KindLogStalled       = "log_stalled"
	KindStaleCheckpoint  = "stale_checkpoint"
)

// Finding is one anomaly with its evidence and the decisions behind it.
type Finding struct {
	Kind     string
	Subject  string // the member or log it is about
	Evidence string
	Count    int
	Link     string // the decisions behind it, as a console query
}

func link(f Filter) string { return "/console/?" + f.Query().Encode() }

// Findings evaluates the rules at now.
func (s *Server) Findings(ctx context.Context) ([]Finding, error) {
	r, now := s.cfg.Rules, s.cfg.Now()
	from := now.Add(-r.Window)
	db := s.cfg.Store.db
	var out []Finding
	// A burst of refusals of one kind by one member: probing.
	rows, err := db.QueryContext(ctx, `SELECT consumer, reason, COUNT(*) FROM decisions
		WHERE time_ns >= ? AND allowed = 0 AND consumer != '' AND consumer != 'auditor'
		GROUP BY consumer, reason HAVING COUNT(*) >= ? ORDER BY 3 DESC`, from.UnixNano(), r.ProbingRefusals)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var c, reason string
		var n int
		if err := rows.Scan(&c, &reason, &n); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, Finding{Kind: KindProbing, Subject: c, Count: n,
			Evidence: fmt.Sprintf("%d refusals %s by %s in %s (rule: %d)", n, reason, c, r.Window, r.ProbingRefusals),
			Link:     link(Filter{Consumer: c, Reason: reason, Decision: "refused", From: from})})
	}
	rows.Close()
	// Many distinct citizens, far above the member's usual rate.
	rows, err = db.QueryContext(ctx, `SELECT consumer, COUNT(DISTINCT ckey) FROM decisions
		WHERE time_ns >= ? AND consumer != '' AND consumer != 'auditor' AND ckey != ''
		GROUP BY consumer HAVING COUNT(DISTINCT ckey) >= ?`, from.UnixNano(), r.DistinctCitizens)
	if err != nil {
		return nil, err
	}
	type cnt struct {
		c string
		n int
	}
	var many []cnt
	for rows.Next() {
		var x cnt
		if err := rows.Scan(&x.c, &x.n); err != nil {
			rows.Close()
			return nil, err
		}
		many = append(many, x)
	}
	rows.Close()
	for _, x := range many {
		var base int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(DISTINCT ckey) FROM decisions WHERE consumer = ? AND time_ns >= ? AND time_ns < ?`,
			x.c, now.Add(-r.Baseline).UnixNano(), from.UnixNano()).Scan(&base); err != nil {
			return nil, err
		}
		usual := float64(base) * float64(r.Window) / float64(r.Baseline-r.Window)
		if float64(x.n) < r.DistinctFactor*usual {
			continue
		}
		out = append(out, Finding{Kind: KindDistinctCitizens, Subject: x.c, Count: x.n,
			Evidence: fmt.Sprintf("%s asked about %d distinct citizens in %s; usual %.1f (rule: ≥ %d and ≥ %.0f× usual)", x.c, x.n, r.Window, usual, r.DistinctCitizens, r.DistinctFactor),
			Link:     link(Filter{Consumer: x.c, From: from})})
	}
	// Repeated predicate queries about one citizen on one method:
	// threshold scanning (asking "over 60?", "over 61?", … reveals the age).
	// Only the methods the catalog marks (jisr.v1.predicate) count: a
	// member reading one citizen's record again is not scanning.
	preds, err := s.predicates()
	if err != nil {
		return nil, err
	}
	if len(preds) > 0 {
		rows, err = db.QueryContext(ctx, `SELECT consumer, ckey, service, method, COUNT(*) FROM decisions
		WHERE time_ns >= ? AND consumer != '' AND consumer != 'auditor' AND ckey != ''
		AND service || '/' || method IN (SELECT value FROM json_each(?))
		GROUP BY consumer, ckey, service, method HAVING COUNT(*) >= ? ORDER BY 5 DESC LIMIT 50`, from.UnixNano(), preds, r.RepeatedQueries)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var c, k, svc, m string
			var n int
			if err := rows.Scan(&c, &k, &svc, &m, &n); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, Finding{Kind: KindRepeated, Subject: c, Count: n,
				Evidence: fmt.Sprintf("%d predicate queries %s by %s about one citizen in %s (rule: %d)", n, m, c, r.Window, r.RepeatedQueries),
				Link:     link(Filter{Consumer: c, CKey: k, Service: svc, Method: m, From: from})})
		}
		rows.Close()
	}
	// Queries outside the usual hours (UTC), per member.
	rows, err = db.QueryContext(ctx, `SELECT consumer, COUNT(*) FROM decisions
		WHERE time_ns >= ? AND consumer != '' AND consumer != 'auditor'
		AND (CAST(strftime('%H', time_ns / 1000000000, 'unixepoch') AS INTEGER) < ? OR CAST(strftime('%H', time_ns / 1000000000, 'unixepoch') AS INTEGER) >= ?)
		GROUP BY consumer`, from.UnixNano(), r.HoursFrom, r.HoursTo)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var c string
		var n int
		if err := rows.Scan(&c, &n); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, Finding{Kind: KindOffHours, Subject: c, Count: n,
			Evidence: fmt.Sprintf("%d queries by %s in %s outside %02d:00–%02d:00 UTC", n, c, r.Window, r.HoursFrom, r.HoursTo),
			Link:     link(Filter{Consumer: c, From: from})})
	}
	rows.Close()
	// Logs: a replica that stopped writing, a stale checkpoint.
	logs, err := s.Logs(ctx)
	if err != nil {
		return nil, err
	}
	var newest time.Time
	for _, l := range logs {
		if l.LastRecord.After(newest) {
			newest = l.LastRecord
		}
	}
	for _, l := range logs {
		if newest.Sub(l.LastRecord) > r.LogStall {
			out = append(out, Finding{Kind: KindLogStalled, Subject: l.ID, Count: int(l.Records),
				Evidence: fmt.Sprintf("log %s: last record %s, %s before the newest record of another log", l.ID, l.LastRecord.UTC().Format(time.RFC3339), newest.Sub(l.LastRecord).Round(time.Second)),
				Link:     "/console/integrity?log=" + url.QueryEscape(l.ID)})
		}
		if l.Records > l.CheckpointSize && (l.CheckpointAt.IsZero() || now.Sub(l.CheckpointAt) > 2*s.cfg.CheckpointEvery) && now.Sub(l.LastRecord) > 2*s.cfg.CheckpointEvery {
			age := "none"
			if !l.CheckpointAt.IsZero() {
				age = now.Sub(l.CheckpointAt).Round(time.Second).String()
			}
			out = append(out, Finding{Kind: KindStaleCheckpoint, Subject: l.ID, Count: int(l.Records - l.CheckpointSize),
				Evidence: fmt.Sprintf("log %s: %d records after its latest checkpoint (size %d, age %s; interval %s)", l.ID, l.Records-l.CheckpointSize, l.CheckpointSize, age, s.cfg.CheckpointEvery),
				Link:     "/console/integrity?log=" + url.QueryEscape(l.ID)})
		}
	}
	return out, nil
}

func (s *Server) findings(w http.ResponseWriter, r *http.Request) {
	fs, err := s.Findings(r.Context())
	if err != nil {
		s.fail(w, http.StatusInternalServerError, err)
		return
	}
	if err := s.look(r, "findings", "", ""); err != nil {
		s.fail(w, http.StatusServiceUnavailable, err)
		return
	}
	s.render(w, r, &view{Page: "findings", Findings: fs})
}

// ErrNoCatalog: the console does not know the gateway's methods yet, so it
// cannot tell which are predicates.
var ErrNoCatalog = errors.New("console: the gateway's method catalog is not known (which methods are predicates)")

// predicates are the predicate methods of the catalog as a JSON array of
// "<service>/<method>" (what the decisions' index holds).
func (s *Server) predicates() (string, error) {
	var cat *catalog.Catalog
	if s.cfg.Catalog != nil {
		cat = s.cfg.Catalog()
	}
	if cat == nil {
		return "", ErrNoCatalog
	}
	var names []string
	for _, m := range cat.Methods() {
		if m.Predicate {
			names = append(names, m.Service+"/"+m.Name)
		}
	}
	if len(names) == 0 {
		return "", nil
	}
	b, err := json.Marshal(names)
	return string(b), err
}
