package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway/citizen"
)

// signinOptions is how citizens sign in to the gateway's HTTP side, and how
// that side is served.
type signinOptions struct {
	httpCert, httpKey string // a certificate for citizens' browsers; else the SVID off loopback

	oidcIssuer       string
	oidcClientID     string
	oidcSecretFile   string
	oidcRedirectURL  string
	oidcEIDClaim     string
	oidcACR          []string
	sessionIdle      time.Duration
	sessionMaxAge    time.Duration
	oidcClientSecret string // set by jisr dev for its embedded provider; never a flag

	// demoLogin: sign-in by eID alone. Only `jisr dev --demo-login` sets
	// it, and startGateway refuses it off loopback.
	demoLogin bool
	// readTimeout of the HTTP server (default 30s; tests shorten it).
	readTimeout time.Duration
}

// Errors of the HTTP side's configuration.
var (
	errHTTPPlaintext  = errors.New("gateway HTTP: plaintext is allowed only on a loopback address; give --http-cert/--http-key or an SVID")
	errDemoOffLocal   = errors.New("gateway HTTP: the demo login (sign-in by eID alone) is allowed only on a loopback address")
	errSecretFileOpen = errors.New("readable by group or others: chmod 600")
)

func (o *signinOptions) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.httpCert, "http-cert", "", "PEM certificate chain for HTTPS to citizens' browsers (off loopback; without it the gateway's SVID, mTLS)")
	f.StringVar(&o.httpKey, "http-key", "", "PEM private key of --http-cert")
	f.StringVar(&o.oidcIssuer, "oidc-issuer", "", "OpenID Connect issuer of the national e-ID platform (citizen sign-in); empty: no sign-in")
	f.StringVar(&o.oidcClientID, "oidc-client-id", "", "this gateway's client ID at the e-ID platform")
	f.StringVar(&o.oidcSecretFile, "oidc-client-secret-file", "", "file holding the client secret (else $JISR_OIDC_CLIENT_SECRET)")
	f.StringVar(&o.oidcRedirectURL, "oidc-redirect-url", "", "redirect URL registered at the platform, https://<gateway>"+citizen.PathCallback+" (default: from --http on loopback)")
	f.StringVar(&o.oidcEIDClaim, "oidc-eid-claim", citizen.DefaultEIDClaim, "ID token claim that carries the citizen's eID (CNIE number)")
	f.StringSliceVar(&o.oidcACR, "oidc-acr", []string{citizen.DefaultACR}, "accepted acr values (CNIE level of assurance), requested as acr_values")
	f.DurationVar(&o.sessionIdle, "session-idle", citizen.DefaultIdleTimeout, "a citizen's session ends after this long without a request")
	f.DurationVar(&o.sessionMaxAge, "session-max-age", citizen.DefaultMaxAge, "a citizen's session ends this long after sign-in")
}

// httpTLS is the HTTP side's TLS: the configured certificate, else the
// gateway's SVID (mTLS, for members' tools), and plaintext only on loopback
// without either asked for. TLS 1.3 at least.
func httpTLS(addr string, o signinOptions, src svid.Source, authz tlsconfig.Authorizer) (*tls.Config, error) {
	if (o.httpCert == "") != (o.httpKey == "") {
		return nil, usageError{errors.New("--http-cert and --http-key go together")}
	}
	if o.httpCert != "" {
		cert, err := tls.LoadX509KeyPair(o.httpCert, o.httpKey)
		if err != nil {
			return nil, fmt.Errorf("gateway HTTP: %w", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}}, nil
	}
	if loopback.Is(addr) {
		return nil, nil
	}
	if src == nil {
		return nil, errHTTPPlaintext
	}
	c := svid.ServerTLS(src, authz)
	c.MinVersion = tls.VersionTLS13
	return c, nil
}

// clientSecret is the OIDC client secret: set by jisr dev, else from
// --oidc-client-secret-file (closed to group and others), else from
// $JISR_OIDC_CLIENT_SECRET (never a flag value, which ps would show).
func (o signinOptions) clientSecret() (string, error) {
	switch {
	case o.oidcClientSecret != "":
		return o.oidcClientSecret, nil
	case o.oidcSecretFile != "":
		fi, err := os.Stat(o.oidcSecretFile)
		if err != nil {
			return "", fmt.Errorf("--oidc-client-secret-file: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return "", usageError{fmt.Errorf("--oidc-client-secret-file %s: %w", o.oidcSecretFile, errSecretFileOpen)}
		}
		b, err := os.ReadFile(o.oidcSecretFile)
		if err != nil {
			return "", fmt.Errorf("--oidc-client-secret-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return os.Getenv("JISR_OIDC_CLIENT_SECRET"), nil
}

// newCitizenAuth builds the sign-in from the options, for an HTTP side
// listening on addr (with TLS or not).
func newCitizenAuth(g *globals, addr string, secure bool, o signinOptions) (*citizen.Auth, error) {
	fed, err := g.federation()
	if err != nil {
		return nil, err
	}
	keyer, err := g.keyer()
	if err != nil {
		return nil, err
	}
	if o.demoLogin {
		if !loopback.Is(addr) {
			return nil, usageError{errDemoOffLocal}
		}
		g.log.Warn("citizen sign-in: DEMO LOGIN by eID alone is on (jisr dev --demo-login; loopback only)")
	}
	cfg := citizen.Config{
		Federation: fed, Keyer: keyer, DemoLogin: o.demoLogin, Secure: secure,
		IdleTimeout: o.sessionIdle, MaxAge: o.sessionMaxAge, Log: g.log,
	}
	if o.oidcIssuer != "" {
		secret, err := o.clientSecret()
		if err != nil {
			return nil, err
		}
		redirect := o.oidcRedirectURL
		if redirect == "" {
			if !loopback.Is(addr) {
				return nil, usageError{errors.New("--oidc-redirect-url is required off loopback")}
			}
			redirect = redirectURLFor(addr, secure)
		}
		if strings.HasPrefix(redirect, "https://") {
			// Browsers reach this gateway over HTTPS (perhaps through a
			// TLS-terminating proxy on loopback): Secure cookies.
			cfg.Secure = true
		}
		cfg.OIDC = &citizen.OIDC{
			Issuer: o.oidcIssuer, ClientID: o.oidcClientID, ClientSecret: secret, RedirectURL: redirect,
			EIDClaim: o.oidcEIDClaim, ACR: o.oidcACR,
		}
	}
	a, err := citizen.New(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	if cfg.OIDC != nil {
		g.log.Info("citizen sign-in through OpenID Connect", "issuer", cfg.OIDC.Issuer, "redirect", cfg.OIDC.RedirectURL, "acr", cfg.OIDC.ACR)
	} else if !o.demoLogin {
		g.log.Info("citizen sign-in is off (no --oidc-issuer): the access log and consent APIs refuse every citizen")
	}
	return a, nil
}

// redirectURLFor is where the provider sends citizens back to a gateway
// whose HTTP side listens on addr.
func redirectURLFor(addr string, secure bool) string {
	if secure {
		return "https://" + addr + citizen.PathCallback
	}
	return "http://" + addr + citizen.PathCallback
}

// Unwrap lets errors.Is see the cause of a usage error.
func (e usageError) Unwrap() error { return e.error }
