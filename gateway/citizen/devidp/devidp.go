package devidp

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/jisr-bus/jisr/bus/loopback"
)

// Defaults of the demo provider.
const (
	DefaultClientID  = "jisr-gateway"
	DefaultEIDClaim  = "cnie"
	DefaultRoleClaim = "roles"
	requestTTL       = 10 * time.Minute
	idTokenTTL       = 5 * time.Minute
	maxPending       = 10000
	loginPath        = "/login"
)

// Errors.
var (
	ErrNotLoopback = errors.New("devidp: the demo identity provider listens on a loopback address only")
	ErrConfig      = errors.New("devidp: ClientSecret and ACR are required")
	errRefused     = errors.New("devidp: refused")
)

// Citizen is one demo citizen the login page offers.
type Citizen struct {
	EID         string
	Description string
	// Roles go in the RoleClaim of the user's ID token (a JSON array),
	// e.g. the demo auditor's ["auditor"] for the console's sign-in.
	Roles []string
}

// Config configures the provider.
type Config struct {
	Citizens     []Citizen
	ClientID     string // default DefaultClientID
	ClientSecret string // required
	RedirectURLs []string
	ACR          string // the acr of every ID token (the CNIE level the provider asserts)
	EIDClaim     string // the claim that carries the eID, default DefaultEIDClaim
	RoleClaim    string // the claim that carries a user's Roles, default DefaultRoleClaim
	Log          *slog.Logger
}

// Provider is a running demo OpenID Provider.
type Provider struct {
	store  *storage
	op     *op.Provider
	issuer string
	srv    *http.Server
}

// Start listens on addr (a loopback host:port; port 0 picks one) and serves
// the provider. Its issuer is http://<addr>.
func Start(addr string, cfg Config) (*Provider, error) {
	if !loopback.Is(addr) {
		return nil, fmt.Errorf("%w: %s", ErrNotLoopback, addr)
	}
	if cfg.ClientSecret == "" || cfg.ACR == "" {
		return nil, ErrConfig
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID
	}
	if cfg.EIDClaim == "" {
		cfg.EIDClaim = DefaultEIDClaim
	}
	if cfg.RoleClaim == "" {
		cfg.RoleClaim = DefaultRoleClaim
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub)
	st := &storage{
		cfg: cfg, key: key, kid: hex.EncodeToString(sum[:8]),
		redirects: slices.Clone(cfg.RedirectURLs), requests: map[string]*authRequest{}, codes: map[string]string{},
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	p := &Provider{store: st, issuer: "http://" + lis.Addr().String()}
	opc := &op.Config{CodeMethodS256: true, AuthMethodPost: true, SupportedScopes: []string{oidc.ScopeOpenID},
		SupportedClaims: []string{"sub", "acr", "auth_time", "nonce", cfg.EIDClaim, cfg.RoleClaim}}
	if _, err := rand.Read(opc.CryptoKey[:]); err != nil {
		lis.Close()
		return nil, err
	}
	p.op, err = op.NewProvider(opc, st, op.StaticIssuer(p.issuer), op.WithAllowInsecure(), op.WithLogger(cfg.Log))
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("devidp: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+loginPath, p.loginPage)
	mux.HandleFunc("POST "+loginPath, p.login)
	mux.Handle("POST /oauth/token", st.tamperTokens(p.op))
	mux.Handle("/", p.op)
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
func (p *Provider) ClientID() string { return p.store.cfg.ClientID }

// AllowRedirect registers one more exact redirect URL of the client.
func (p *Provider) AllowRedirect(u string) {
	p.store.mu.Lock()
	defer p.store.mu.Unlock()
	p.store.redirects = append(p.store.redirects, u)
}

// SetTamper makes the provider misbehave (tests only): f changes the claims
// of every following ID token, which is then signed again with the
// provider's key. nil restores it.
func (p *Provider) SetTamper(f func(claims map[string]any)) {
	p.store.mu.Lock()
	defer p.store.mu.Unlock()
	p.store.tamper = f
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

var loginTemplate = template.Must(template.New("login").Parse(`<!doctype html>
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

// loginPage is where the provider sends the browser (Client.LoginURL).
func (p *Provider) loginPage(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("authRequestID")
	req, err := p.store.request(id)
	if err != nil {
		http.Error(w, "this sign-in request is unknown or has expired: start again", http.StatusBadRequest)
		return
	}
	// The form's answer redirects to the client: browsers apply
	// form-action to that redirect too.
	ru, _ := url.Parse(req.RedirectURI)
	w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action 'self' "+ru.Scheme+"://"+ru.Host+"; base-uri 'none'; frame-ancestors 'none'")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = loginTemplate.Execute(w, map[string]any{"Request": id, "Citizens": p.store.cfg.Citizens})
}

// login signs a demo citizen in and hands the request back to the provider,
// which sends the browser to the client with a code.
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
	if !slices.ContainsFunc(p.store.cfg.Citizens, func(c Citizen) bool { return strings.EqualFold(c.EID, eid) }) {
		http.Error(w, "not a demo citizen", http.StatusForbidden)
		return
	}
	id := r.PostForm.Get("request")
	if err := p.store.authenticate(id, eid); err != nil {
		http.Error(w, "this sign-in request is unknown or has expired: start again", http.StatusBadRequest)
		return
	}
	http.Redirect(w, r, op.AuthCallbackURL(p.op)(op.ContextWithIssuer(r.Context(), p.issuer), id), http.StatusSeeOther)
}

// authRequest is one authorization request, as op.AuthRequest.
type authRequest struct {
	oidc.AuthRequest
	id       string
	acr      string
	eid      string // set at login
	authTime time.Time
	expires  time.Time
}

func (a *authRequest) GetID() string                      { return a.id }
func (a *authRequest) GetACR() string                     { return a.acr }
func (a *authRequest) GetAMR() []string                   { return []string{"pwd"} }
func (a *authRequest) GetAudience() []string              { return []string{a.ClientID} }
func (a *authRequest) GetAuthTime() time.Time             { return a.authTime }
func (a *authRequest) GetClientID() string                { return a.ClientID }
func (a *authRequest) GetNonce() string                   { return a.Nonce }
func (a *authRequest) GetRedirectURI() string             { return a.RedirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType { return a.ResponseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return a.ResponseMode }
func (a *authRequest) GetScopes() []string                { return a.Scopes }
func (a *authRequest) GetState() string                   { return a.State }
func (a *authRequest) Done() bool                         { return a.eid != "" }
func (a *authRequest) GetSubject() string {
	sum := sha256.Sum256([]byte(a.ClientID + "\x00" + strings.ToUpper(a.eid)))
	return hex.EncodeToString(sum[:16]) // pairwise: the eID travels only in its own claim
}
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	return &oidc.CodeChallenge{Challenge: a.CodeChallenge, Method: a.CodeChallengeMethod}
}

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
