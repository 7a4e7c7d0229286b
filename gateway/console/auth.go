package console

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Sentinel errors of Authenticate.
var (
	// ErrNoCertificate: the request came without a client certificate.
	ErrNoCertificate = errors.New("console: the auditor's client certificate is required")
	// ErrNotAuditor: the client certificate is valid but is not the auditor's.
	ErrNotAuditor = errors.New("console: only the auditor may read the audit")
	// ErrNotSignedIn: neither the auditor's certificate nor an auditor's
	// session (OIDC sign-in with the role).
	ErrNotSignedIn = errors.New("console: sign in as an auditor (the auditor's client certificate, or " + PathLogin + ")")
	// ErrCrossOrigin: a session cookie arrived on a request another site made.
	ErrCrossOrigin = errors.New("console: cross-origin request refused")
	// ErrRole: the ID token does not carry the auditor's role.
	ErrRole = errors.New("console: the ID token does not carry the auditor's role in the configured claim")
)

// The console's OIDC sign-in paths (served by the Sessions' routes).
const (
	PathLogin    = "/console/login"
	PathCallback = "/console/callback"
	PathLogout   = "/console/logout"
	PathSession  = "/console/session"
	// OIDCPrefix marks an auditor identified by OIDC: oidc:<issuer>#<subject>.
	OIDCPrefix = "oidc:"
)

// Sessions authenticates a browser's request by a session that an OIDC
// sign-in with the auditor's role started (gateway/citizen's sign-in,
// configured with IdentifyByRole), returning who signed in.
type Sessions interface {
	AuthenticateRequest(r *http.Request) (string, error)
}

// Auth admits the auditor identity only: a client certificate chain that
// verifies against the trust bundle (checked here again, whatever the TLS
// configuration did) and whose SPIFFE ID is the auditor's; or, when
// Sessions is set, a session of a human who signed in by OIDC with the
// auditor's role.
type Auth struct {
	Auditor spiffeid.ID
	Bundle  x509bundle.Source
	// Sessions: the OIDC sign-in's sessions (nil: the certificate only).
	Sessions Sessions
}

// Authenticate returns the auditor's ID, or why the request is refused.
func (a Auth) Authenticate(r *http.Request) (spiffeid.ID, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return spiffeid.ID{}, ErrNoCertificate
	}
	id, _, err := x509svid.Verify(r.TLS.PeerCertificates, a.Bundle)
	if err != nil {
		return spiffeid.ID{}, ErrNoCertificate
	}
	if id != a.Auditor {
		return spiffeid.ID{}, ErrNotAuditor
	}
	return id, nil
}

// Who returns the auditor behind a request: the SPIFFE ID of the auditor's
// certificate, or oidc:<issuer>#<subject> of a signed-in auditor. A
// presented certificate decides (a member's certificate is refused even
// with a session). A session is honoured only from the console's own
// origin: a request another site (or another port of this host) made is
// refused, whatever its method.
func (a Auth) Who(r *http.Request) (string, error) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 || a.Sessions == nil {
		id, err := a.Authenticate(r)
		if err != nil {
			return "", err
		}
		return id.String(), nil
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return "", ErrCrossOrigin
	}
	if o := r.Header.Get("Origin"); o != "" && o != "https://"+r.Host {
		return "", ErrCrossOrigin
	}
	who, err := a.Sessions.AuthenticateRequest(r)
	if err != nil {
		if strings.Contains(err.Error(), "cross-origin") {
			return "", ErrCrossOrigin
		}
		return "", ErrNotSignedIn
	}
	if !strings.HasPrefix(who, OIDCPrefix) {
		return "", ErrNotAuditor
	}
	return who, nil
}

type whoKey struct{}

// whoOf is the auditor Require admitted.
func whoOf(ctx context.Context) string {
	s, _ := ctx.Value(whoKey{}).(string)
	return s
}

// Require serves h to the auditor only: 401 without a verified client
// certificate or session, 403 for any other identity or a cross-origin
// use of the session.
func (a Auth) Require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch who, err := a.Who(r); {
		case errors.Is(err, ErrNotAuditor), errors.Is(err, ErrCrossOrigin):
			http.Error(w, err.Error(), http.StatusForbidden)
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
		default:
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, who)))
		}
	})
}

// IdentifyByRole is the console's OIDC sign-in rule: the verified ID
// token's top-level claim `claim` must be a JSON array of strings that
// holds `role` (a string, an object, a nested claim or the role in the
// userinfo only are refused), and `sub` must be set. The auditor is then
// oidc:<iss>#<sub>, the human every look is recorded under.
func IdentifyByRole(claim, role string) func(claims map[string]any) (string, error) {
	return func(c map[string]any) (string, error) {
		list, ok := c[claim].([]any)
		if !ok {
			return "", fmt.Errorf("%w: %q is not a list", ErrRole, claim)
		}
		if !slices.ContainsFunc(list, func(v any) bool { s, ok := v.(string); return ok && s == role }) {
			return "", fmt.Errorf("%w: %q does not hold %q", ErrRole, claim, role)
		}
		sub, _ := c["sub"].(string)
		iss, _ := c["iss"].(string)
		if sub == "" || iss == "" {
			return "", fmt.Errorf("%w: no subject", ErrRole)
		}
		return OIDCPrefix + iss + "#" + sub, nil
	}
}

// OptionalClientCert turns an mTLS server configuration (go-spiffe's,
// which requires a certificate) into one that asks for a certificate but
// lets a browser without one finish the handshake, for the OIDC sign-in.
// A certificate that is given is still verified (by c's own check), and
// the console verifies it again per request (Auth.Authenticate).
func OptionalClientCert(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.ClientAuth = tls.RequestClientCert
	verify := c.VerifyPeerCertificate
	c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if len(raw) == 0 || verify == nil {
			return nil
		}
		return verify(raw, chains)
	}
	return c
}
