package citizen

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/loopback"
)

// Paths of the sign-in, next to the citizen's access-log page.
const (
	PathLogin    = "/access-log/login"
	PathCallback = "/access-log/callback"
	PathLogout   = "/access-log/logout"
	PathSession  = "/access-log/session"
	AfterLogin   = "/access-log/"
)

// Defaults.
const (
	DefaultEIDClaim    = "cnie"
	DefaultACR         = "urn:jisr:acr:cnie-substantial"
	DefaultIdleTimeout = 15 * time.Minute
	DefaultMaxAge      = 8 * time.Hour
	loginTTL           = 10 * time.Minute
	maxSessions        = 100000
)

// Errors.
var (
	ErrUnauthenticated = errors.New("citizen: not signed in")
	ErrExpired         = fmt.Errorf("%w: the session has expired", ErrUnauthenticated)
	ErrCrossOrigin     = errors.New("citizen: cross-origin request refused")
	ErrBusy            = errors.New("citizen: too many sessions or sign-ins in progress")
	ErrConfig          = errors.New("citizen: invalid configuration")
	// ErrAgentAlone: a counter agent's own session serves nothing until a
	// citizen signs in on it (assisted access), and an assisted session
	// acts only through the HTTP side, which records the agent.
	ErrAgentAlone = fmt.Errorf("%w: a counter agent acts only with the citizen's own sign-in", ErrUnauthenticated)
)

// OIDC is the relying party's configuration.
type OIDC struct {
	Issuer       string       // the provider's issuer URL (https, or http on loopback)
	ClientID     string       // this gateway's client ID at the provider
	ClientSecret string       // from a file or the environment, never a flag value
	RedirectURL  string       // https://<gateway>/access-log/callback, registered at the provider
	EIDClaim     string       // the ID token claim that carries the eID (default DefaultEIDClaim)
	ACR          []string     // accepted acr values, requested as acr_values (default DefaultACR)
	Scopes       []string     // beyond openid
	HTTPClient   *http.Client // default NewHTTPClient(nil)
}

// Config configures sign-in.
type Config struct {
	Federation *federation.Federation
	Keyer      *ckey.Keyer
	OIDC       *OIDC // nil: no production sign-in
	// DemoLogin turns on POST /access-log/login with an eID alone. Only
	// `jisr dev` sets it, and only with a loopback listener (Check).
	DemoLogin bool
	// Secure: the HTTP server speaks TLS; cookies are Secure and __Host-.
	Secure bool
	// Agents are the eIDs of counter agents (assisted access): an agent's
	// own sign-in serves nothing; a citizen who then signs in in the same
	// browser gets a session that names the agent, and every action
	// recorded on it names the agent too.
	Agents      []string
	IdleTimeout time.Duration // default DefaultIdleTimeout
	MaxAge      time.Duration // default DefaultMaxAge
	Log         *slog.Logger
	Now         func() time.Time

	// Identify turns this sign-in into another population's (the auditor's
	// console): it decides from the verified ID token's claims who signs
	// in (the session holds what it returns) instead of the acr and eID
	// checks; acr is then checked only when OIDC.ACR is given, and
	// Federation, Keyer and the eID cookie are not used. DemoLogin is
	// refused with it.
	Identify func(claims map[string]any) (string, error)
	// Paths of the sign-in (default the citizen's, under /access-log/).
	Paths Paths
	// CookiePrefix names the cookies, <prefix>_session and <prefix>_login
	// (default "jisr"): a second sign-in on the same host keeps its own.
	CookiePrefix string
}

// Paths are where a sign-in's routes live.
type Paths struct {
	Login, Callback, Logout, Session string
	After                            string // where a completed sign-in lands
}

// CitizenPaths are the citizen's sign-in paths.
var CitizenPaths = Paths{Login: PathLogin, Callback: PathCallback, Logout: PathLogout, Session: PathSession, After: AfterLogin}

// Auth signs citizens in and authenticates their requests.
type Auth struct {
	cfg      Config
	sessions *store
	logins   *sealer
	cop      *http.CrossOriginProtection
	log      *slog.Logger
	agents   map[string]bool // counter agents' ckeys

	mu       sync.Mutex
	oauth    *oauth2.Config
	verifier *oidc.IDTokenVerifier
}

// New validates cfg and returns the sign-in.
func New(cfg Config) (*Auth, error) {
	if cfg.Paths == (Paths{}) {
		cfg.Paths = CitizenPaths
	}
	if cfg.CookiePrefix == "" {
		cfg.CookiePrefix = "jisr"
	}
	switch {
	case cfg.Identify != nil && (cfg.DemoLogin || cfg.OIDC == nil):
		return nil, fmt.Errorf("%w: a sign-in with Identify needs OIDC and no demo login", ErrConfig)
	case cfg.Identify == nil && (cfg.Federation == nil || cfg.Keyer == nil):
		return nil, fmt.Errorf("%w: Federation and Keyer are required", ErrConfig)
	}
	if o := cfg.OIDC; o != nil {
		iss, err := url.Parse(o.Issuer)
		switch {
		case err != nil || iss.Host == "" || !loopback.SecureURL(iss):
			return nil, fmt.Errorf("%w: the OIDC issuer must be an https URL (http only on loopback)", ErrConfig)
		case o.ClientID == "" || o.ClientSecret == "":
			return nil, fmt.Errorf("%w: the OIDC client ID and secret are required", ErrConfig)
		}
		ru, err := url.Parse(o.RedirectURL)
		if err != nil || ru.Host == "" || ru.Path != cfg.Paths.Callback || !loopback.SecureURL(ru) {
			return nil, fmt.Errorf("%w: the redirect URL must be https://<gateway>%s (http only on loopback)", ErrConfig, cfg.Paths.Callback)
		}
		if o.EIDClaim == "" {
			o.EIDClaim = DefaultEIDClaim
		}
		if len(o.ACR) == 0 && cfg.Identify == nil {
			o.ACR = []string{DefaultACR}
		}
		if o.HTTPClient == nil {
			o.HTTPClient = NewHTTPClient(nil)
		}
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	logins, err := newSealer()
	if err != nil {
		return nil, err
	}
	agents := map[string]bool{}
	for _, raw := range cfg.Agents {
		eid, err := cfg.Federation.NormaliseEID(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: a counter agent's eID does not match the federation's eID format", ErrConfig)
		}
		agents[cfg.Keyer.CKey(eid)] = true
	}
	return &Auth{agents: agents,
		cfg: cfg, sessions: newStore(cfg.IdleTimeout, cfg.MaxAge, maxSessions, cfg.Now), logins: logins,
		cop: http.NewCrossOriginProtection(), log: cfg.Log.With("component", "citizen-sign-in"),
	}, nil
}

// NewHTTPClient is the client the relying party talks to the provider with
// (discovery, keys, the code exchange): TLS 1.3 at least, like every client
// jisr controls, trusting roots (nil: the system's).
func NewHTTPClient(roots *x509.CertPool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots}
	return &http.Client{Timeout: 15 * time.Second, Transport: t}
}

// IssueSession starts a session for a citizen key without a sign-in, for
// in-process callers that authenticated the citizen themselves (tests).
func (a *Auth) IssueSession(ckey string) (string, error) { return a.sessions.create(ckey) }

// CookieName is the session cookie's name: __Host- prefixed when Secure.
func (a *Auth) CookieName() string {
	if a.cfg.Secure {
		return "__Host-" + a.cfg.CookiePrefix + "_session"
	}
	return a.cfg.CookiePrefix + "_session"
}

func (a *Auth) loginCookieName() string {
	if a.cfg.Secure {
		return "__Host-" + a.cfg.CookiePrefix + "_login"
	}
	return a.cfg.CookiePrefix + "_login"
}

// Authenticate checks a bearer session ID (gRPC metadata, API clients) and
// returns the citizen key.
// A session a citizen opened on a counter agent's is refused here: it acts
// only through AuthenticateAgent, which names the agent.
func (a *Auth) Authenticate(_ context.Context, credential string) (string, error) {
	ck, agent, err := a.sessions.lookupAgent(credential)
	if err == nil && agent != "" {
		return "", ErrAgentAlone
	}
	return ck, err
}

// AuthenticateRequest authenticates an HTTP request by its bearer session
// or its session cookie. A state-changing request is refused cross-origin;
// authenticated by the cookie, it must also prove its origin (Origin, or
// Sec-Fetch-Site: same-origin), which browsers always send.
func (a *Auth) AuthenticateRequest(r *http.Request) (string, error) {
	ck, _, err := a.AuthenticateAgent(r)
	return ck, err
}

// AuthenticateAgent is AuthenticateRequest, with the ckey of the counter
// agent on whose session the citizen signed in ("" if none). A counter
// agent's own session, before the citizen signs in, is ErrAgentAlone.
func (a *Auth) AuthenticateAgent(r *http.Request) (ck, agent string, err error) {
	if err := a.CheckOrigin(r); err != nil {
		return "", "", err
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return a.sessions.lookupAgent(strings.TrimSpace(t))
	}
	c, err := r.Cookie(a.CookieName())
	if err != nil {
		return "", "", ErrUnauthenticated
	}
	if unsafeMethod(r.Method) && r.Header.Get("Origin") == "" && r.Header.Get("Sec-Fetch-Site") != "same-origin" {
		return "", "", fmt.Errorf("%w: a cookie-authenticated change needs Origin", ErrCrossOrigin)
	}
	return a.sessions.lookupAgent(c.Value)
}

// CheckOrigin refuses a cross-origin state-changing request.
func (a *Auth) CheckOrigin(r *http.Request) error {
	if err := a.cop.Check(r); err != nil {
		return fmt.Errorf("%w: %v", ErrCrossOrigin, err)
	}
	return nil
}

func unsafeMethod(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}

// Routes returns the sign-in routes, keyed by mux pattern.
func (a *Auth) Routes() map[string]http.Handler {
	p := a.cfg.Paths
	routes := map[string]http.Handler{
		"GET " + p.Login:    http.HandlerFunc(a.startLogin),
		"GET " + p.Callback: http.HandlerFunc(a.callback),
		"POST " + p.Logout:  http.HandlerFunc(a.logout),
		"GET " + p.Session:  http.HandlerFunc(a.sessionInfo),
	}
	if a.cfg.Identify == nil {
		routes["POST "+p.Login] = http.HandlerFunc(a.demoLogin)
	}
	return routes
}

// sessionInfo tells the page how the citizen can sign in and whether they are.
func (a *Auth) sessionInfo(w http.ResponseWriter, r *http.Request) {
	_, agent, err := a.AuthenticateAgent(r)
	writeJSON(w, http.StatusOK, map[string]any{
		"signed_in": err == nil, "oidc": a.cfg.OIDC != nil, "demo_login": a.cfg.DemoLogin,
		"agent_waiting": errors.Is(err, ErrAgentAlone), "assisted": err == nil && agent != "",
	})
}

// startLogin sends the browser to the provider with a fresh state, nonce
// and PKCE verifier; the state is bound to this browser by a cookie.
func (a *Auth) startLogin(w http.ResponseWriter, r *http.Request) {
	if a.cfg.OIDC == nil {
		writeError(w, http.StatusNotFound, "sign-in through the national e-ID platform is not configured")
		return
	}
	oc, _, err := a.relyingParty(r.Context())
	if err != nil {
		a.log.Warn("the identity provider cannot be reached", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the national e-ID platform cannot be reached; retry later")
		return
	}
	state, err1 := randomID()
	nonce, err2 := randomID()
	if err1 != nil || err2 != nil {
		writeError(w, http.StatusInternalServerError, "no randomness")
		return
	}
	verifier := oauth2.GenerateVerifier()
	next := r.URL.Query().Get("next")
	if _, ok := AfterLoginPages[next]; !ok || a.cfg.Identify != nil {
		next = ""
	}
	sealed, err := a.logins.seal(&pendingLogin{State: state, Nonce: nonce, Verifier: verifier, Expires: a.cfg.Now().Add(loginTTL).Unix(), Next: next})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "the sign-in cannot start")
		return
	}
	// Lax: the provider sends the browser back with a cross-site navigation.
	http.SetCookie(w, &http.Cookie{
		Name: a.loginCookieName(), Value: sealed, Path: "/", MaxAge: int(loginTTL.Seconds()),
		HttpOnly: true, Secure: a.cfg.Secure, SameSite: http.SameSiteLaxMode,
	})
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)}
	if len(a.cfg.OIDC.ACR) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("acr_values", strings.Join(a.cfg.OIDC.ACR, " ")))
	}
	u := oc.AuthCodeURL(state, opts...)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u, http.StatusFound)
}

// relyingParty discovers the provider once (retried until it answers).
func (a *Auth) relyingParty(ctx context.Context) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.oauth != nil {
		return a.oauth, a.verifier, nil
	}
	o := a.cfg.OIDC
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, o.HTTPClient), 15*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, o.Issuer)
	if err != nil {
		return nil, nil, err
	}
	a.oauth = &oauth2.Config{
		ClientID: o.ClientID, ClientSecret: o.ClientSecret, RedirectURL: o.RedirectURL,
		Endpoint: p.Endpoint(), Scopes: append([]string{oidc.ScopeOpenID}, o.Scopes...),
	}
	a.verifier = p.VerifierContext(oidc.ClientContext(context.WithoutCancel(ctx), o.HTTPClient),
		&oidc.Config{ClientID: o.ClientID, Now: a.cfg.Now})
	return a.oauth, a.verifier, nil
}

// Reasons a callback is refused (logged; the citizen sees a generic message).
var (
	errState = errors.New("state does not match this browser's sign-in")
	errNonce = errors.New("the ID token's nonce does not match")
	errACR   = errors.New("the ID token's acr is not an accepted level of assurance")
	errEID   = errors.New("the ID token carries no valid eID in the configured claim")
)

// callback finishes the sign-in: state, code exchange with the PKCE
// verifier, ID token verification (signature, issuer, audience, expiry),
// nonce, acr, the eID claim; then a fresh session (rotation).
func (a *Auth) callback(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if a.cfg.OIDC == nil {
		writeError(w, http.StatusNotFound, "sign-in through the national e-ID platform is not configured")
		return
	}
	q := r.URL.Query()
	c, cerr := r.Cookie(a.loginCookieName())
	http.SetCookie(w, &http.Cookie{Name: a.loginCookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: a.cfg.Secure, SameSite: http.SameSiteLaxMode})
	state := q.Get("state")
	if cerr != nil || state == "" {
		a.refuse(w, http.StatusBadRequest, errState)
		return
	}
	pl, err := a.logins.open(c.Value, a.cfg.Now())
	if err != nil || subtle.ConstantTimeCompare([]byte(pl.State), []byte(state)) != 1 {
		a.refuse(w, http.StatusBadRequest, errState)
		return
	}
	if e := q.Get("error"); e != "" {
		a.refuse(w, http.StatusUnauthorized, fmt.Errorf("the provider refused the sign-in: %.64q", e))
		return
	}
	oc, verifier, err := a.relyingParty(r.Context())
	if err != nil {
		a.refuse(w, http.StatusServiceUnavailable, err)
		return
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(r.Context(), a.cfg.OIDC.HTTPClient), 15*time.Second)
	defer cancel()
	tok, err := oc.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(pl.Verifier))
	if err != nil {
		a.refuse(w, http.StatusUnauthorized, fmt.Errorf("code exchange: %w", err))
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := verifier.Verify(ctx, raw)
	if err != nil {
		a.refuse(w, http.StatusUnauthorized, fmt.Errorf("ID token: %w", err))
		return
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(pl.Nonce)) != 1 {
		a.refuse(w, http.StatusUnauthorized, errNonce)
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		a.refuse(w, http.StatusUnauthorized, err)
		return
	}
	if acr, _ := claims["acr"].(string); (a.cfg.Identify == nil || len(a.cfg.OIDC.ACR) > 0) && !slices.Contains(a.cfg.OIDC.ACR, acr) {
		a.refuse(w, http.StatusForbidden, errACR)
		return
	}
	if a.cfg.Identify != nil {
		who, err := a.cfg.Identify(claims)
		if err != nil {
			a.refuse(w, http.StatusForbidden, err)
			return
		}
		if _, err := a.startSession(w, r, who); err != nil {
			writeError(w, http.StatusServiceUnavailable, "too many sessions; retry later")
			return
		}
		landing(w, a.cfg.Paths.After)
		return
	}
	raweid, _ := claims[a.cfg.OIDC.EIDClaim].(string)
	eid, err := a.cfg.Federation.NormaliseEID(raweid)
	if err != nil {
		a.refuse(w, http.StatusUnauthorized, errEID)
		return
	}
	if _, err := a.startSession(w, r, a.cfg.Keyer.CKey(eid)); err != nil {
		writeError(w, http.StatusServiceUnavailable, "too many sessions; retry later")
		return
	}
	a.setEIDCookie(w, eid, a.cfg.Keyer.CKey(eid))
	to := AfterLogin
	if p, ok := AfterLoginPages[pl.Next]; ok {
		to = p
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// AfterLoginPages are the pages a sign-in may return to, by the name given
// in GET PathLogin?next=<name> (a fixed list: never a URL from the request).
var AfterLoginPages = map[string]string{"citizen": "/citizen/"}

func (a *Auth) refuse(w http.ResponseWriter, code int, reason error) {
	a.log.Warn("sign-in refused", "reason", reason)
	writeError(w, code, "sign-in failed: start again from "+a.cfg.Paths.Login)
}

// startSession rotates: the browser's previous session, if any, ends, and a
// new ID is issued. A counter agent's sign-in opens an agent's session,
// which serves nothing; a citizen who signs in on a live agent's session
// (the citizen present at the counter, their own sign-in) gets a session
// that names the agent.
func (a *Auth) startSession(w http.ResponseWriter, r *http.Request, ck string) (string, error) {
	agent, agentOnly := "", false
	if old, err := r.Cookie(a.CookieName()); err == nil {
		if ss, err := a.sessions.get(old.Value); err == nil && ss.agentOnly && ss.agent != ck {
			agent = ss.agent
		}
		a.sessions.destroy(old.Value)
	}
	if a.agents[ck] {
		agent, agentOnly = ck, true
	}
	id, err := a.sessions.createWith(ck, agent, agentOnly)
	if err != nil {
		return "", err
	}
	http.SetCookie(w, &http.Cookie{
		Name: a.CookieName(), Value: id, Path: "/", HttpOnly: true, Secure: a.cfg.Secure, SameSite: http.SameSiteStrictMode,
	})
	return id, nil
}

// demoLogin signs a citizen in by eID alone (jisr dev only). It answers
// the session ID too, for curl and gRPC clients.
func (a *Auth) demoLogin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !a.cfg.DemoLogin {
		writeError(w, http.StatusNotFound, "sign in through the national e-ID platform: GET "+PathLogin)
		return
	}
	if err := a.CheckOrigin(r); err != nil {
		writeError(w, http.StatusForbidden, "cross-origin sign-in refused")
		return
	}
	raw, err := eidFrom(w, r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "send the eID as JSON {\"eid\": ...} or as the form field eid")
		return
	}
	eid, err := a.cfg.Federation.NormaliseEID(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, "the eID does not match the federation's eID format")
		return
	}
	id, err := a.startSession(w, r, a.cfg.Keyer.CKey(eid))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "too many sessions; retry later")
		return
	}
	a.setEIDCookie(w, eid, a.cfg.Keyer.CKey(eid))
	writeJSON(w, http.StatusOK, map[string]string{"token": id})
}

func eidFrom(w http.ResponseWriter, r *http.Request) (string, error) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		var body struct {
			EID string `json:"eid"`
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return "", err
		}
		if err := json.Unmarshal(b, &body); err != nil || body.EID == "" {
			return "", errors.New("no eid")
		}
		return body.EID, nil
	}
	if err := r.ParseForm(); err != nil {
		return "", err
	}
	if v := r.PostForm.Get("eid"); v != "" {
		return v, nil
	}
	return "", errors.New("no eid")
}

// logout destroys the session and clears the cookie.
func (a *Auth) logout(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if err := a.CheckOrigin(r); err != nil {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		a.sessions.destroy(strings.TrimSpace(t))
	}
	if c, err := r.Cookie(a.CookieName()); err == nil {
		a.sessions.destroy(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: a.CookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: a.cfg.Secure, SameSite: http.SameSiteStrictMode})
	if a.cfg.Identify == nil {
		a.clearEIDCookie(w)
	}
	w.WriteHeader(http.StatusNoContent)
}

// landing ends a sign-in with a same-origin page that moves on to `to`:
// the browser arrives at the callback by a cross-site redirect, on which it
// would not send the SameSite=Strict session cookie (nor Sec-Fetch-Site:
// same-origin) to a redirect's target; from this page it does.
func landing(w http.ResponseWriter, to string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	q := template.HTMLEscapeString(to)
	_, _ = io.WriteString(w, `<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=`+q+`"><title>Signed in</title></head><body><p><a href="`+q+`">Continue</a></p></body></html>`)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// Assisted access: a signed-in citizen acting for another person (a minor
// they are the parent or guardian of) names that person's ckey in the query
// parameter ParamFor of each request. The sign-in only carries the name:
// whoever serves the request checks the relation at that moment, against
// the civil registry (gateway/node), and answers ErrNotGuardian or
// ErrGuardianshipUnavailable when it does not hold or cannot be checked.
const ParamFor = "for"

// Errors of acting for another person.
var (
	ErrNotGuardian             = errors.New("citizen: the civil registry does not show you as this person's parent or guardian")
	ErrGuardianshipUnavailable = errors.New("citizen: guardianship cannot be checked now; retry later")
)
