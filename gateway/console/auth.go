package console

import (
	"errors"
	"net/http"

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
)

// Auth admits the auditor identity only: a client certificate chain that
// verifies against the trust bundle (checked here again, whatever the TLS
// configuration did) and whose SPIFFE ID is the auditor's.
type Auth struct {
	Auditor spiffeid.ID
	Bundle  x509bundle.Source
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

// Require serves h to the auditor only: 401 without a verified client
// certificate, 403 for any other identity.
func (a Auth) Require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch _, err := a.Authenticate(r); {
		case errors.Is(err, ErrNotAuditor):
			http.Error(w, err.Error(), http.StatusForbidden)
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
		default:
			h.ServeHTTP(w, r)
		}
	})
}
