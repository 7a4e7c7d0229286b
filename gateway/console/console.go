package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/export"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/decision"
)

//go:embed page.html console.css
var files embed.FS

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"t":    func(l lang, key string) string { return l.T(key) },
	"ts":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000") },
	"safe": func(s string) template.HTML { return template.HTML(s) }, //nolint:gosec // SVG built here from escaped values
	"short": func(s string) string {
		if len(s) > 10 {
			return s[:10] + "…"
		}
		return s
	},
}).ParseFS(files, "page.html"))

// AuditLog is where the auditor's looks are recorded (the gateway's audit log).
type AuditLog interface {
	Append(ctx context.Context, d *decision.Decision) error
}

// Config is what the console reads.
type Config struct {
	Federation *federation.Federation
	Keyer      *ckey.Keyer
	Store      *Store
	// The audit streams (export, integrity) and the logs' public keys.
	Records, Checkpoints jetstream.Stream
	Keys                 *checkpoint.Keys
	// Traces is the gateway's in-memory span store (nil: no traces here).
	Traces *telemetry.Memory
	// TraceBackend, when set, is the tracing backend the console reads a
	// trace from first (Jaeger's query API; --traces-from); the in-memory
	// store is the fallback, and the page says which it shows and why.
	TraceBackend TraceBackend
	// Catalog is the gateway's method catalog: which methods are predicates
	// (the repeated-queries finding counts those only).
	Catalog func() *catalog.Catalog
	// Audit records every look of the auditor at records or spans.
	Audit AuditLog
	Auth  Auth
	Log   *slog.Logger
	// Rules are the anomaly rules (federation file, with defaults).
	Rules Rules
	// VerifyEvery is how often the logs are verified in the background
	// (default 10 minutes).
	VerifyEvery time.Duration
	// CheckpointEvery is the gateways' checkpoint interval (default 15 s, the audit log's):
	// a checkpoint older than twice it is a finding.
	CheckpointEvery time.Duration
	Now             func() time.Time
}

// Server is the console.
type Server struct {
	cfg Config

	mu       sync.Mutex
	verified *Verification // the last verification, nil before the first
	verifyMu sync.Mutex    // one verification at a time
	metrics  *metrics
}

// ErrConfig: a required Config field is missing.
var ErrConfig = errors.New("console: invalid configuration")

// New checks cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Federation == nil || cfg.Keyer == nil || cfg.Store == nil || cfg.Audit == nil || cfg.Auth.Bundle == nil || cfg.Records == nil || cfg.Checkpoints == nil || cfg.Keys == nil {
		return nil, fmt.Errorf("%w: Federation, Keyer, Store, Audit, Auth, Records, Checkpoints and Keys are required", ErrConfig)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.VerifyEvery <= 0 {
		cfg.VerifyEvery = 10 * time.Minute
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = 15 * time.Second
	}
	cfg.Rules = cfg.Rules.WithDefaults()
	return &Server{cfg: cfg}, nil
}

// pageCSP lets a console page load its stylesheet and nothing else: no
// script, no frame, forms post to the console only.
const pageCSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Routes are the console's routes, every one for the auditor only.
func (s *Server) Routes() map[string]http.Handler {
	req := s.cfg.Auth.Require
	return map[string]http.Handler{
		"GET /console/":             req(http.HandlerFunc(s.decisions)),
		"POST /console/citizen":     req(http.HandlerFunc(s.citizen)),
		"GET /console/export.jsonl": req(http.HandlerFunc(s.export)),
		"GET /console/trace/{id}":   req(http.HandlerFunc(s.trace)),
		"GET /console/stats":        req(http.HandlerFunc(s.stats)),
		"GET /console/findings":     req(http.HandlerFunc(s.findings)),
		"GET /console/integrity":    req(http.HandlerFunc(s.integrity)),
		"POST /console/integrity":   req(http.HandlerFunc(s.verifyNow)),
		"GET /console/console.css":  req(http.HandlerFunc(s.css)),
		"GET /v1/traces/{id}":       req(http.HandlerFunc(s.traceJSON)),
	}
}

// TracesHandler is GET /v1/traces/{id} for the gateway's main HTTP side:
// the auditor only, and audited.
//
// The console's OIDC session is not honoured there (the auditor's
// certificate only): cookies are not bound to a port, and that port also
// serves the citizens' pages.
func (s *Server) TracesHandler() http.Handler {
	a := s.cfg.Auth
	a.Sessions = nil
	return a.Require(http.HandlerFunc(s.traceJSON))
}

func (s *Server) css(w http.ResponseWriter, _ *http.Request) {
	b, _ := files.ReadFile("console.css")
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	_, _ = w.Write(b)
}

// look records the auditor's look in the audit log before anything is
// shown: no record, no view (fail closed).
func (s *Server) look(r *http.Request, view, ckey, detail string) error {
	d := &decision.Decision{
		Time: s.cfg.Now(), Consumer: "auditor", Service: "jisr.console", Method: view, CKey: ckey,
		Purpose: "audit-review", LegalBasis: "oversight", Rule: detail, Allowed: true, Reason: decision.ReasonAllowed,
		// Which auditor looked: the certificate's SPIFFE ID, or the human
		// who signed in by OIDC (oidc:<issuer>#<subject>).
		TokenID: whoOf(r.Context()),
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := s.cfg.Audit.Append(ctx, d); err != nil {
		return fmt.Errorf("the auditor's look could not be audited: %w", err)
	}
	return nil
}

// view is what page.html renders.
type view struct {
	L        lang
	Page     string
	Q        template.URL // the filter as a query string (without lang)
	Filter   Filter
	FromS    string
	ToS      string
	Rows     []Row
	Next     template.URL
	Members  []string
	Reasons  []string
	Bases    []string
	Trace    *traceView
	Stats    *statsView
	Findings []Finding
	Logs     []LogState
	Verified *Verification
	Error    string
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, v *view) {
	v.L = langOf(r)
	s.mu.Lock()
	v.Verified = s.verified
	s.mu.Unlock()
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("Cache-Control", "no-store")
	var b bytes.Buffer
	if err := page.Execute(&b, v); err != nil {
		s.fail(w, http.StatusInternalServerError, fmt.Errorf("console page: %w", err))
		return
	}
	_, _ = w.Write(b.Bytes())
}

func (s *Server) fail(w http.ResponseWriter, code int, err error) {
	s.cfg.Log.Warn("console", "err", err)
	http.Error(w, err.Error(), code)
}

// parseFilter reads a filter from a query; errors name the field.
func parseFilter(q url.Values) (Filter, error) {
	f := Filter{
		Consumer: q.Get("consumer"), Provider: q.Get("provider"), Service: q.Get("service"), Method: q.Get("method"),
		LegalBasis: q.Get("basis"), Reason: q.Get("reason"), CKey: q.Get("ckey"), Decision: q.Get("decision"),
		TraceID: q.Get("trace"),
	}
	for _, v := range []string{f.Consumer, f.Provider, f.Service, f.Method, f.LegalBasis, f.Reason, f.CKey, f.TraceID} {
		if len(v) > 200 {
			return f, fmt.Errorf("%w: a value is too long", ErrFilter)
		}
	}
	var err error
	parse := func(name string) time.Time {
		v := q.Get(name)
		if v == "" || err != nil {
			return time.Time{}
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
			if t, e := time.Parse(layout, v); e == nil {
				return t
			}
		}
		err = fmt.Errorf("%w: %s %q is not a time (2006-01-02T15:04 UTC)", ErrFilter, name, v)
		return time.Time{}
	}
	f.From, f.To = parse("from"), parse("to")
	if err == nil {
		_, _, err = f.where()
	}
	return f, err
}

// Query is the filter as a URL query (what links and the export carry).
func (f Filter) Query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("consumer", f.Consumer)
	set("provider", f.Provider)
	set("service", f.Service)
	set("method", f.Method)
	set("basis", f.LegalBasis)
	set("reason", f.Reason)
	set("ckey", f.CKey)
	set("decision", f.Decision)
	set("trace", f.TraceID)
	if !f.From.IsZero() {
		q.Set("from", f.From.UTC().Format(time.RFC3339Nano))
	}
	if !f.To.IsZero() {
		q.Set("to", f.To.UTC().Format(time.RFC3339Nano))
	}
	return q
}

// String describes the filter for the audit record of a look and an export's header.
func (f Filter) String() string { return f.Query().Encode() }

const pageSize = 50

func (s *Server) decisions(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/console/" {
		http.NotFound(w, r)
		return
	}
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		s.fail(w, http.StatusBadRequest, err)
		return
	}
	cur, err := ParseCursor(r.URL.Query().Get("before"))
	if err != nil {
		s.fail(w, http.StatusBadRequest, err)
		return
	}
	rows, err := s.cfg.Store.Page(r.Context(), f, cur, pageSize)
	if err != nil {
		s.fail(w, http.StatusInternalServerError, err)
		return
	}
	if err := s.look(r, "decisions", f.CKey, f.String()); err != nil {
		s.fail(w, http.StatusServiceUnavailable, err)
		return
	}
	v := &view{Page: "decisions", Filter: f, Q: template.URL(f.Query().Encode()), Rows: rows, Members: s.members(),
		Reasons: reasons, Bases: []string{"consent", "explicit_request", "mandate", "oversight"}}
	if !f.From.IsZero() {
		v.FromS = f.From.UTC().Format("2006-01-02T15:04")
	}
	if !f.To.IsZero() {
		v.ToS = f.To.UTC().Format("2006-01-02T15:04")
	}
	if len(rows) == pageSize {
		q := f.Query()
		q.Set("before", Next(rows).String())
		v.Next = template.URL(q.Encode()) //nolint:gosec // url.Values.Encode escapes every value
	}
	s.render(w, r, v)
}

func (s *Server) members() []string {
	var out []string
	for _, m := range s.cfg.Federation.Members {
		out = append(out, m.Name)
	}
	return out
}

// citizen turns the eID posted into its ckey and shows the decisions about
// that citizen. The eID is read from the form body only (never a URL),
// normalised, hashed and dropped: it is not logged, stored or echoed.
func (s *Server) citizen(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		s.fail(w, http.StatusBadRequest, errors.New("console: a bad form"))
		return
	}
	eid, err := s.cfg.Federation.NormaliseEID(r.PostForm.Get("eid"))
	if err != nil {
		http.Error(w, "console: not an eID of this federation", http.StatusBadRequest)
		return
	}
	f, err := parseFilter(r.PostForm)
	if err != nil {
		s.fail(w, http.StatusBadRequest, err)
		return
	}
	f.CKey = s.cfg.Keyer.CKey(eid)
	q := f.Query()
	if l := r.PostForm.Get("lang"); l != "" {
		q.Set("lang", string(langFrom(l)))
	}
	http.Redirect(w, r, "/console/?"+q.Encode(), http.StatusSeeOther)
}

// export writes the decisions the filter selects as an export file (the
// format of `jisr audit export`): a header marked partial with the
// selection, every checkpoint, then the selected records, oldest first.
func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		s.fail(w, http.StatusBadRequest, err)
		return
	}
	if err := s.look(r, "export", f.CKey, f.String()); err != nil {
		s.fail(w, http.StatusServiceUnavailable, err)
		return
	}
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("Content-Disposition", `attachment; filename="jisr-audit-export.jsonl"`)
	enc := export.NewEncoder(w)
	if err := enc.Header(export.Header{
		TrustDomain: s.cfg.Federation.TrustDomain.Name(), ExportedAt: s.cfg.Now().UTC(),
		Partial: true, Selection: "console: " + f.String(), Keys: s.cfg.Keys.VerifierKeys(),
	}); err != nil {
		return
	}
	if err := stream.Scan(r.Context(), s.cfg.Checkpoints, stream.ScanOptions{}, func(m stream.Msg) error {
		return enc.Checkpoint(m.Seq, m.Subject, m.Data)
	}); err != nil {
		s.cfg.Log.Warn("console export", "err", err)
		return
	}
	err = s.cfg.Store.Each(r.Context(), f, func(row Row) error {
		rec, err := recordOf(row.Data)
		if err != nil {
			return nil
		}
		return enc.Record(row.Seq, row.Subject, row.Data, rec)
	})
	if err != nil {
		s.cfg.Log.Warn("console export", "err", err)
	}
	_ = enc.Flush()
}

func (s *Server) traceJSON(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Traces == nil {
		http.Error(w, "no spans are kept here", http.StatusNotFound)
		return
	}
	id, err := trace.TraceIDFromHex(r.PathValue("id"))
	if err != nil {
		http.Error(w, "a trace id is 32 hexadecimal digits", http.StatusBadRequest)
		return
	}
	if err := s.look(r, "trace", "", id.String()); err != nil {
		s.fail(w, http.StatusServiceUnavailable, err)
		return
	}
	s.cfg.Traces.Handler().ServeHTTP(w, r)
}

func (s *Server) trace(w http.ResponseWriter, r *http.Request) {
	id, err := trace.TraceIDFromHex(r.PathValue("id"))
	if err != nil {
		http.Error(w, "a trace id is 32 hexadecimal digits", http.StatusBadRequest)
		return
	}
	rows, err := s.cfg.Store.Page(r.Context(), Filter{TraceID: id.String()}, Cursor{}, 10)
	if err != nil {
		s.fail(w, http.StatusInternalServerError, err)
		return
	}
	ckey := ""
	if len(rows) > 0 {
		ckey = rows[0].CKey
	}
	if err := s.look(r, "trace", ckey, id.String()); err != nil {
		s.fail(w, http.StatusServiceUnavailable, err)
		return
	}
	spans, src := s.traceSpans(r.Context(), id)
	v := waterfall(id.String(), spans)
	v.Source = src
	s.render(w, r, &view{Page: "trace", Rows: rows, Trace: v})
}

// traceSource says where a waterfall's spans come from: the tracing
// backend, or this gateway's memory — and, when the backend was asked and
// could not answer, why (shown on the page, never hidden).
type traceSource struct {
	Backend  string // the backend read, "" for the in-memory store
	Fallback string // the backend that was asked first and failed, "" if none
	Err      string // why it failed
	NotFound bool   // it answered, with no span of the trace
}

// traceSpans reads the trace (and the traces its spans link) from the
// tracing backend when one is configured, else — or when the backend
// cannot answer — from the gateway's in-memory store.
func (s *Server) traceSpans(ctx context.Context, id trace.TraceID) ([]telemetry.Span, traceSource) {
	b := s.cfg.TraceBackend
	if b == nil {
		return s.spans(ctx, id, s.memoryTrace), traceSource{}
	}
	var berr error
	spans := s.spans(ctx, id, func(ctx context.Context, id trace.TraceID) ([]telemetry.Span, error) {
		sp, err := b.Trace(ctx, id)
		if err != nil && berr == nil {
			berr = err
		}
		return sp, err
	})
	if berr == nil || (len(spans) > 0 && errors.Is(berr, ErrTraceNotFound)) {
		// Found (a linked trace the backend lacks is only not drawn).
		return spans, traceSource{Backend: b.String()}
	}
	src := traceSource{Fallback: b.String(), Err: berr.Error(), NotFound: errors.Is(berr, ErrTraceNotFound)}
	if !src.NotFound {
		s.cfg.Log.Warn("console: the tracing backend could not be read; showing the gateway's in-memory spans", "backend", b.String(), "trace_id", id.String(), "err", berr)
	}
	return s.spans(ctx, id, s.memoryTrace), src
}

func (s *Server) memoryTrace(_ context.Context, id trace.TraceID) ([]telemetry.Span, error) {
	if s.cfg.Traces == nil {
		return nil, nil
	}
	return s.cfg.Traces.Trace(id), nil
}

// spans are the spans of a trace and of the traces its spans link (the
// caller's: the consumer adapter's side of the query), by start, as get
// finds them. The first error of get is the caller's to see (get records
// it); the spans found are returned.
func (s *Server) spans(ctx context.Context, id trace.TraceID, get func(context.Context, trace.TraceID) ([]telemetry.Span, error)) []telemetry.Span {
	spans, err := get(ctx, id)
	if err != nil {
		return nil
	}
	seen := map[string]bool{id.String(): true}
	var linked []telemetry.Span
	for _, sp := range spans {
		for _, l := range sp.Links {
			if seen[l.TraceID] {
				continue
			}
			seen[l.TraceID] = true
			if lid, err := trace.TraceIDFromHex(l.TraceID); err == nil {
				more, _ := get(ctx, lid)
				linked = append(linked, more...)
			}
		}
	}
	if len(linked) == 0 {
		return spans
	}
	all := append(linked, spans...)
	slices.SortStableFunc(all, func(a, b telemetry.Span) int { return a.Start.Compare(b.Start) })
	return all
}

func init() {
	// Every reason the gateway writes, for the filter's list.
	reasons = []string{
		decision.ReasonAllowed, decision.ReasonBadSubject, decision.ReasonBadReplySubject, decision.ReasonUnknownMethod,
		decision.ReasonUnknownMember, decision.ReasonMalformedPayload, decision.ReasonBadEID, decision.ReasonCKeyMismatch,
		decision.ReasonPurposeMissing, decision.ReasonNoRule, decision.ReasonPurposeNotAllowed, decision.ReasonConsentRequired,
		decision.ReasonProviderUnavailable, decision.ReasonProviderError, decision.ReasonDeadline, decision.ReasonAuditUnavailable,
		decision.ReasonOverloaded, decision.ReasonRequestTooLarge, decision.ReasonTooManyInFlight, decision.ReasonRateLimited,
		decision.ReasonMinimisation, decision.ReasonPredicateParameter, decision.ReasonPredicateLimit, decision.ReasonConsentStateUnavailable,
	}
}

var reasons []string

// join is for the template.
func join(v []string) string { return strings.Join(v, ", ") }
