package process

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway/citizen"
)

// SignInOptions is how citizens sign in to the gateway's HTTP side, and how
// that side is served.
type SignInOptions struct {
	HTTPCert, HTTPKey string // a certificate for citizens' browsers; else the SVID off loopback

	OIDCIssuer       string
	OIDCClientID     string
	OIDCSecretFile   string
	OIDCRedirectURL  string
	OIDCEIDClaim     string
	OIDCACR          []string
	SessionIdle      time.Duration
	SessionMaxAge    time.Duration
	OIDCClientSecret string // set by jisr dev for its embedded provider; never a flag

	// demoLogin: sign-in by eID alone. Only `jisr dev --demo-login` sets
	// it, and StartGateway refuses it off loopback.
	DemoLogin bool
	// Agents are the eIDs of counter agents (assisted access, --counter-agent).
	Agents []string
	// readTimeout of the HTTP server (default 30s; tests shorten it).
	ReadTimeout time.Duration
}

// Errors of the HTTP side's configuration.
var (
	ErrHTTPPlaintext  = errors.New("gateway HTTP: plaintext is allowed only on a loopback address; give --http-cert/--http-key or an SVID")
	ErrDemoOffLocal   = errors.New("gateway HTTP: the demo login (sign-in by eID alone) is allowed only on a loopback address")
	ErrSecretFileOpen = errors.New("readable by group or others: chmod 600")
)

// HTTPTLS is the HTTP side's TLS: the configured certificate, else the
// gateway's SVID (mTLS, for members' tools), and plaintext only on loopback
// without either asked for. TLS 1.3 at least.
func HTTPTLS(addr string, o SignInOptions, src svid.Source, authz tlsconfig.Authorizer) (*tls.Config, error) {
	if (o.HTTPCert == "") != (o.HTTPKey == "") {
		return nil, UsageError{errors.New("--http-cert and --http-key go together")}
	}
	if o.HTTPCert != "" {
		cert, err := tls.LoadX509KeyPair(o.HTTPCert, o.HTTPKey)
		if err != nil {
			return nil, fmt.Errorf("gateway HTTP: %w", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}}, nil
	}
	if loopback.Is(addr) {
		return nil, nil
	}
	if src == nil {
		return nil, ErrHTTPPlaintext
	}
	c := svid.ServerTLS(src, authz)
	c.MinVersion = tls.VersionTLS13
	return c, nil
}

// clientSecret is the OIDC client secret: set by jisr dev, else from
// --oidc-client-secret-file (closed to group and others), else from
// $JISR_OIDC_CLIENT_SECRET (never a flag value, which ps would show).
func (o SignInOptions) clientSecret() (string, error) {
	switch {
	case o.OIDCClientSecret != "":
		return o.OIDCClientSecret, nil
	case o.OIDCSecretFile != "":
		fi, err := os.Stat(o.OIDCSecretFile)
		if err != nil {
			return "", fmt.Errorf("--oidc-client-secret-file: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return "", UsageError{fmt.Errorf("--oidc-client-secret-file %s: %w", o.OIDCSecretFile, ErrSecretFileOpen)}
		}
		b, err := os.ReadFile(o.OIDCSecretFile)
		if err != nil {
			return "", fmt.Errorf("--oidc-client-secret-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return os.Getenv("JISR_OIDC_CLIENT_SECRET"), nil
}

// NewCitizenAuth builds the sign-in from the options, for an HTTP side
// listening on addr (with TLS or not).
func NewCitizenAuth(g *Env, addr string, secure bool, o SignInOptions) (*citizen.Auth, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	keyer, err := g.Keyer()
	if err != nil {
		return nil, err
	}
	if o.DemoLogin {
		if !loopback.Is(addr) {
			return nil, UsageError{ErrDemoOffLocal}
		}
		g.Log.Warn("citizen sign-in: DEMO LOGIN by eID alone is on (jisr dev --demo-login; loopback only)")
	}
	cfg := citizen.Config{
		Federation: fed, Keyer: keyer, DemoLogin: o.DemoLogin, Secure: secure,
		IdleTimeout: o.SessionIdle, MaxAge: o.SessionMaxAge, Log: g.Log, Agents: o.Agents,
	}
	if o.OIDCIssuer != "" {
		secret, err := o.clientSecret()
		if err != nil {
			return nil, err
		}
		redirect := o.OIDCRedirectURL
		if redirect == "" {
			if !loopback.Is(addr) {
				return nil, UsageError{errors.New("--oidc-redirect-url is required off loopback")}
			}
			redirect = RedirectURLFor(addr, secure)
		}
		if strings.HasPrefix(redirect, "https://") {
			// Browsers reach this gateway over HTTPS (perhaps through a
			// TLS-terminating proxy on loopback): Secure cookies.
			cfg.Secure = true
		}
		cfg.OIDC = &citizen.OIDC{
			Issuer: o.OIDCIssuer, ClientID: o.OIDCClientID, ClientSecret: secret, RedirectURL: redirect,
			EIDClaim: o.OIDCEIDClaim, ACR: o.OIDCACR,
		}
	}
	a, err := citizen.New(cfg)
	if err != nil {
		return nil, UsageError{err}
	}
	if cfg.OIDC != nil {
		g.Log.Info("citizen sign-in through OpenID Connect", "issuer", cfg.OIDC.Issuer, "redirect", cfg.OIDC.RedirectURL, "acr", cfg.OIDC.ACR)
	} else if !o.DemoLogin {
		g.Log.Info("citizen sign-in is off (no --oidc-issuer): the access log and consent APIs refuse every citizen")
	}
	return a, nil
}

// RedirectURLFor is where the provider sends citizens back to a gateway
// whose HTTP side listens on addr.
func RedirectURLFor(addr string, secure bool) string {
	if secure {
		return "https://" + addr + citizen.PathCallback
	}
	return "http://" + addr + citizen.PathCallback
}
