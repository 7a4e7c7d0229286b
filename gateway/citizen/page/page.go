// Package page is the citizen's page (/citizen/): the consent requests
// waiting for the citizen, with what they would share in plain words; the
// citizen's consents with pause, resume and revoke; who looked at their
// data, each record's inclusion proof checked in the browser; and a live
// view (server-sent events) of new requests and accesses. In Arabic (right
// to left) and French, chosen by the browser's language with a switch on
// the page; member, field and purpose names come from the federation file.
//
// The page is static HTML, CSS and one small script served from here:
// nothing is fetched from another origin. Its data comes from the gateway's
// JSON APIs (the consent API and the access log), with the citizen's
// session cookie; it knows nothing of consent or audit itself.
package page

import (
	"context"
	_ "embed"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
)

// Path is where the page is served.
const Path = "/citizen/"

// Languages are the page's languages, the first the default.
var Languages = []string{"fr", "ar"}

// LangCookie remembers the language chosen with the switch.
const LangCookie = "jisr_lang"

// RequestAuthenticator authenticates a request with the citizen's session
// (package citizen's Auth).
type RequestAuthenticator interface {
	AuthenticateRequest(r *http.Request) (ckey string, err error)
}

// Config is what the page needs.
type Config struct {
	Federation *federation.Federation
	Auth       RequestAuthenticator
	// Live tells of new audit records about the signed-in citizen (an
	// access, a consent request, one of their own actions), pushed to the
	// page as events: one follower of the audit stream for every page
	// (gateway/audit/watch). Nil: no live view (the events route answers 503).
	Live Watcher
	Log  *slog.Logger
	// MaxWatchers bounds the live views open at once (default 1000).
	MaxWatchers int
}

// Watcher tells of new audit records about a citizen: the channel receives
// a value after each new stored message holding one about ckey (values not
// yet received merged into one), until stop.
type Watcher interface {
	Watch(ctx context.Context, ckey string) (changes <-chan struct{}, stop func(), err error)
}

// Page serves the citizen's page.
type Page struct {
	cfg      Config
	tmpl     *template.Template
	watchers atomic.Int64
	done     chan struct{}
	stopOnce sync.Once
}

// Shutdown ends every live view (an HTTP server's Shutdown waits for open
// requests, and a live view never ends by itself).
func (p *Page) Shutdown() { p.stopOnce.Do(func() { close(p.done) }) }

var (
	//go:embed page.html
	pageHTML string
	//go:embed citizen.js
	pageJS []byte
	//go:embed citizen.css
	pageCSS []byte
)

// New returns the page.
func New(cfg Config) *Page {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxWatchers <= 0 {
		cfg.MaxWatchers = 1000
	}
	return &Page{cfg: cfg, tmpl: template.Must(template.New("page").Parse(pageHTML)), done: make(chan struct{})}
}

// Routes returns the page's routes, keyed by mux pattern.
func (p *Page) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET " + Path + "{$}":                http.HandlerFunc(p.page),
		"GET " + Path + "static/citizen.js":  static("text/javascript; charset=utf-8", pageJS),
		"GET " + Path + "static/citizen.css": static("text/css; charset=utf-8", pageCSS),
		"GET " + Path + "events":             http.HandlerFunc(p.events),
	}
}

func static(ct string, b []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(b)
	})
}

// Lang picks the page's language: the switch (?lang=), then the cookie it
// set, then the browser's Accept-Language, then the default.
func Lang(r *http.Request) (lang string, chosen bool) {
	if l := r.URL.Query().Get("lang"); slices.Contains(Languages, l) {
		return l, true
	}
	if c, err := r.Cookie(LangCookie); err == nil && slices.Contains(Languages, c.Value) {
		return c.Value, false
	}
	return FromAcceptLanguage(r.Header.Get("Accept-Language")), false
}

// FromAcceptLanguage returns the page language the header prefers most
// (by q value, then order), or the default.
func FromAcceptLanguage(h string) string {
	best, bestQ := Languages[0], -1.0
	for _, part := range strings.Split(h, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		base, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
		if !slices.Contains(Languages, base) {
			continue
		}
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		if q > bestQ {
			best, bestQ = base, q
		}
	}
	return best
}

type view struct {
	Lang, Dir, Title, Skip string
	T                      map[string]string
	Other                  []link
	Data                   string
}

type link struct{ Lang, Name, Label string }

func (p *Page) page(w http.ResponseWriter, r *http.Request) {
	lang, chosen := Lang(r)
	if chosen {
		http.SetCookie(w, &http.Cookie{Name: LangCookie, Value: lang, Path: Path, MaxAge: 365 * 24 * 3600,
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	}
	t := strings1[lang]
	data, err := json.Marshal(p.dictionary(lang))
	if err != nil {
		http.Error(w, "page", http.StatusInternalServerError)
		return
	}
	v := view{Lang: lang, Dir: "ltr", Title: t["title"], Skip: t["skip"], T: t, Data: string(data)}
	if lang == "ar" {
		v.Dir = "rtl"
	}
	for _, l := range Languages {
		if l != lang {
			v.Other = append(v.Other, link{Lang: l, Name: strings1[l]["lang_name"], Label: t["lang_switch"]})
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Language", lang)
	h.Set("Vary", "Accept-Language, Cookie")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	if err := p.tmpl.Execute(w, v); err != nil {
		p.cfg.Log.Warn("citizen page", "err", err)
	}
}

// dictionary is what the script needs in lang: the page's strings, and
// the federation's members, fields and purposes in plain words.
func (p *Page) dictionary(lang string) map[string]any {
	members := map[string]string{}
	for _, m := range p.cfg.Federation.Members {
		members[m.Name] = m.TitleIn(lang)
	}
	members[subject.ConsentProvider] = strings1[lang]["consent_service"]
	fields, purposes := map[string]string{}, map[string]string{}
	for k := range p.cfg.Federation.Labels.Fields {
		if v := p.cfg.Federation.Labels.Field(k, lang); v != "" {
			fields[k] = v
		}
	}
	for k := range p.cfg.Federation.Labels.Purposes {
		if v := p.cfg.Federation.Labels.Purpose(k, lang); v != "" {
			purposes[k] = v
		}
	}
	values := map[string]string{}
	for k, byLang := range p.cfg.Federation.Labels.Values {
		if v := byLang[lang]; v != "" {
			values[k] = v
		}
	}
	locale := map[string]string{"fr": "fr-MA", "ar": "ar-MA"}[lang]
	return map[string]any{"lang": lang, "locale": locale, "t": strings1[lang], "members": members, "fields": fields, "purposes": purposes, "values": values}
}

// events streams "change" events to the signed-in citizen's page: one for
// each new audit record about them. The record itself is not sent (the
// page reads the APIs again), so nothing leaves that the APIs would not
// show; a mandate's delayed access shows only once the access log does.
func (p *Page) events(w http.ResponseWriter, r *http.Request) {
	ckey, err := p.cfg.Auth.AuthenticateRequest(r)
	if err != nil {
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	if p.cfg.Live == nil {
		http.Error(w, "no live view on this gateway", http.StatusServiceUnavailable)
		return
	}
	if p.watchers.Add(1) > int64(p.cfg.MaxWatchers) {
		p.watchers.Add(-1)
		http.Error(w, "too many live views; retry later", http.StatusServiceUnavailable)
		return
	}
	defer p.watchers.Add(-1)
	if subject.CheckToken(ckey) != nil || ckey == subject.NoCKey {
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	ctx := r.Context()
	changes, stop, err := p.cfg.Live.Watch(ctx, ckey)
	if err != nil {
		p.cfg.Log.Warn("citizen live view: the audit stream cannot be followed", "err", err)
		http.Error(w, "the live view is unavailable", http.StatusServiceUnavailable)
		return
	}
	defer stop()
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte("retry: 3000\nevent: ready\ndata: {}\n\n")); err != nil {
		return
	}
	_ = rc.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		var msg string
		select {
		case <-ctx.Done():
			return
		case <-p.done:
			return
		case <-changes:
			msg = "event: change\ndata: {}\n\n"
		case <-ping.C:
			msg = ": ping\n\n"
		}
		if _, err := w.Write([]byte(msg)); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}
