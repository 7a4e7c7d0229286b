// Package devidp is a small OpenID Provider for the demo citizens of
// `jisr dev` and the tests: discovery, JWKS, the authorization-code flow with
// PKCE (S256 only), nonce and acr, and a login page that lists the demo
// citizens. It stands in for the national e-ID platform so that the gateway's
// real relying party (package citizen) runs end to end on one machine.
//
// It serves plaintext HTTP on a loopback address only and has no passwords:
// it is never a production identity provider.
package devidp

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/jisr-bus/jisr/bus/loopback"
)

// Defaults of the demo provider.
const (
	DefaultClientID = "jisr-gateway"
	DefaultEIDClaim = "cnie"
	requestTTL      = 10 * time.Minute
	codeTTL         = time.Minute
	idTokenTTL      = 5 * time.Minute
	maxPending      = 10000
)

// ErrNotLoopback: the provider serves plaintext, so only on loopback.
var ErrNotLoopback = errors.New("devidp: the demo identity provider listens on a loopback address only")

// Citizen is one demo citizen the login page offers.
type Citizen struct {
	EID         string
	Description string
}

// Config configures the provider.
type Config struct {
	Citizens     []Citizen
	ClientID     string // default DefaultClientID
	ClientSecret string // required
	RedirectURLs []string
	ACR          string // the acr of every ID token (the CNIE level the provider asserts)
	EIDClaim     string // the claim that carries the eID, default DefaultEIDClaim
	Log          *slog.Logger
}

// Provider is a running demo OpenID Provider.
type Provider struct {
	cfg    Config
	key    ed25519.PrivateKey
	kid    string
	issuer string
	srv    *http.Server

	mu        sync.Mutex
	redirects []string
	requests  map[string]*authRequest
	codes     map[string]*authCode
	tamper    func(claims map[string]any)
}

type authRequest struct {
	clientID, redirectURI, state, nonce, challenge string
	expires                                        time.Time
}

type authCode struct {
	authRequest
	eid      string
	authTime time.Time
}

// Start listens on addr (a loopback host:port; port 0 picks one) and serves
// the provider. Its issuer is http://<addr>.
func Start(addr string, cfg Config) (*Provider, error) {
	if !loopback.Is(addr) {
		return nil, fmt.Errorf("%w: %s", ErrNotLoopback, addr)
	}
	if cfg.ClientSecret == "" || cfg.ACR == "" {
		return nil, errors.New("devidp: ClientSecret and ACR are required")
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID
	}
	if cfg.EIDClaim == "" {
		cfg.EIDClaim = DefaultEIDClaim
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub)
	p := &Provider{
		cfg: cfg, key: key, kid: hex.EncodeToString(sum[:8]),
		redirects: slices.Clone(cfg.RedirectURLs),
		requests:  map[string]*authRequest{}, codes: map[string]*authCode{},
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	p.issuer = "http://" + lis.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /keys", p.keys)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /login", p.login)
	mux.HandleFunc("POST /token", p.token)
	p.srv = &http.Server{
		Handler: headers(mux), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 32 << 10,
	}
	go func() {
		if err := p.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Log.Error("demo identity provider stopped", "err", err)
		}
	}()
	return p, nil
}

// Issuer is the provider's issuer URL.
func (p *Provider) Issuer() string { return p.issuer }

// ClientID is the client the provider knows.
func (p *Provider) ClientID() string { return p.cfg.ClientID }

// AllowRedirect registers one more exact redirect URL of the client.
func (p *Provider) AllowRedirect(u string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redirects = append(p.redirects, u)
}

// SetTamper makes the provider misbehave (tests only): f changes the claims
// of every following ID token before it is signed. nil restores it.
func (p *Provider) SetTamper(f func(claims map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = f
}

// Close stops the provider.
func (p *Provider) Close(ctx context.Context) error { return p.srv.Shutdown(ctx) }

func headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.issuer,
		"authorization_endpoint":                p.issuer + "/authorize",
		"token_endpoint":                        p.issuer + "/token",
		"jwks_uri":                              p.issuer + "/keys",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{string(jose.EdDSA)},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"acr_values_supported":                  []string{p.cfg.ACR},
		"scopes_supported":                      []string{"openid"},
		"claims_supported":                      []string{"sub", "acr", "auth_time", "nonce", p.cfg.EIDClaim},
	})
}

func (p *Provider) keys(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: p.key.Public(), KeyID: p.kid, Algorithm: string(jose.EdDSA), Use: "sig",
	}}})
}

// authorize checks the client's request and shows the login page.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := &authRequest{
		clientID: q.Get("client_id"), redirectURI: q.Get("redirect_uri"), state: q.Get("state"),
		nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), expires: time.Now().Add(requestTTL),
	}
	switch {
	case req.clientID != p.cfg.ClientID:
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	case !p.redirectAllowed(req.redirectURI):
		http.Error(w, "redirect_uri is not registered for this client", http.StatusBadRequest)
		return
	case q.Get("response_type") != "code":
		http.Error(w, "response_type must be code", http.StatusBadRequest)
		return
	case !slices.Contains(strings.Fields(q.Get("scope")), "openid"):
		http.Error(w, "scope must include openid", http.StatusBadRequest)
		return
	case req.state == "" || req.nonce == "":
		http.Error(w, "state and nonce are required", http.StatusBadRequest)
		return
	case q.Get("code_challenge_method") != "S256" || len(req.challenge) != 43:
		http.Error(w, "PKCE with code_challenge_method=S256 is required", http.StatusBadRequest)
		return
	}
	if acr := q.Get("acr_values"); acr != "" && !slices.Contains(strings.Fields(acr), p.cfg.ACR) {
		http.Error(w, "the requested acr_values cannot be satisfied", http.StatusBadRequest)
		return
	}
	id := random()
	p.mu.Lock()
	p.prune(time.Now())
	full := len(p.requests) >= maxPending
	if !full {
		p.requests[id] = req
	}
	p.mu.Unlock()
	if full {
		http.Error(w, "too many sign-ins in progress; retry later", http.StatusServiceUnavailable)
		return
	}
	// The form's answer redirects to the client: browsers apply
	// form-action to that redirect too.
	ru, _ := url.Parse(req.redirectURI)
	w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action 'self' "+ru.Scheme+"://"+ru.Host+"; base-uri 'none'; frame-ancestors 'none'")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = loginPage.Execute(w, map[string]any{"Request": id, "Citizens": p.cfg.Citizens})
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo e-ID sign-in — jisr dev</title></head>
<body>
<h1>Demo e-ID sign-in</h1>
<p>This is <code>jisr dev</code>'s stand-in for the national e-ID platform. Pick a demo citizen.</p>
<form method="post" action="login">
<input type="hidden" name="request" value="{{.Request}}">
<ul>
{{range .Citizens}}<li><button type="submit" name="eid" value="{{.EID}}">{{.EID}}</button> {{.Description}}</li>
{{end}}</ul>
</form>
</body></html>
`))

// login signs a demo citizen in and sends the browser back with a code.
func (p *Provider) login(w http.ResponseWriter, r *http.Request) {
	if err := http.NewCrossOriginProtection().Check(r); err != nil {
		http.Error(w, "cross-origin sign-in refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	eid := strings.TrimSpace(r.PostForm.Get("eid"))
	if !slices.ContainsFunc(p.cfg.Citizens, func(c Citizen) bool { return strings.EqualFold(c.EID, eid) }) {
		http.Error(w, "not a demo citizen", http.StatusForbidden)
		return
	}
	now := time.Now()
	p.mu.Lock()
	req, ok := p.requests[r.PostForm.Get("request")]
	delete(p.requests, r.PostForm.Get("request"))
	var code string
	if ok && now.Before(req.expires) {
		code = random()
		p.codes[code] = &authCode{authRequest: *req, eid: eid, authTime: now}
		p.codes[code].expires = now.Add(codeTTL)
	}
	p.mu.Unlock()
	if code == "" {
		http.Error(w, "this sign-in request is unknown or has expired: start again", http.StatusBadRequest)
		return
	}
	u, _ := url.Parse(req.redirectURI)
	v := u.Query()
	v.Set("code", code)
	v.Set("state", req.state)
	v.Set("iss", p.issuer)
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// token exchanges a code for an ID token (client authentication, PKCE).
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8192)
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != p.cfg.ClientID || subtle.ConstantTimeCompare([]byte(secret), []byte(p.cfg.ClientSecret)) != 1 {
		tokenError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	if r.PostForm.Get("grant_type") != "authorization_code" {
		tokenError(w, http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	now := time.Now()
	p.mu.Lock()
	c, ok := p.codes[r.PostForm.Get("code")]
	delete(p.codes, r.PostForm.Get("code")) // single use
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case !ok || !now.Before(c.expires) || c.clientID != id || c.redirectURI != r.PostForm.Get("redirect_uri"):
		tokenError(w, http.StatusBadRequest, "invalid_grant")
		return
	case subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(c.challenge)) != 1:
		tokenError(w, http.StatusBadRequest, "invalid_grant")
		return
	}
	sub := sha256.Sum256([]byte(id + "\x00" + strings.ToUpper(c.eid)))
	claims := map[string]any{
		"iss": p.issuer, "sub": hex.EncodeToString(sub[:16]), "aud": id,
		"iat": now.Unix(), "exp": now.Add(idTokenTTL).Unix(), "auth_time": c.authTime.Unix(),
		"nonce": c.nonce, "acr": p.cfg.ACR, p.cfg.EIDClaim: c.eid,
	}
	p.mu.Lock()
	tamper := p.tamper
	p.mu.Unlock()
	if tamper != nil {
		tamper(claims)
	}
	idToken, err := p.sign(claims)
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "server_error")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": random(), "token_type": "Bearer", "expires_in": int(idTokenTTL.Seconds()), "id_token": idToken,
	})
}

func (p *Provider) sign(claims map[string]any) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: p.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", p.kid))
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(b)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

func (p *Provider) redirectAllowed(u string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return u != "" && slices.Contains(p.redirects, u)
}

func (p *Provider) prune(now time.Time) {
	for k, r := range p.requests {
		if !now.Before(r.expires) {
			delete(p.requests, k)
		}
	}
	for k, c := range p.codes {
		if !now.Before(c.expires) {
			delete(p.codes, k)
		}
	}
}

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func tokenError(w http.ResponseWriter, code int, e string) {
	writeJSON(w, code, map[string]string{"error": e})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
