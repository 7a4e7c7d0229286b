package consent

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/jisr-bus/jisr/bus/federation"
)

// DetailType is the authorization_details type of a jisr consent.
const DetailType = "jisr_query"

// MaxTTL bounds a token's lifetime, and so how long a retired signing key
// must keep verifying.
const MaxTTL = 90 * 24 * time.Hour

// Detail is one RFC 9396 authorization_details entry.
type Detail struct {
	Type    string   `json:"type"`
	Service string   `json:"service"`
	Methods []string `json:"methods"`
	Fields  []string `json:"fields,omitempty"`
}

// Claims are a consent token's claims.
type Claims struct {
	Issuer               string   `json:"iss"`
	Subject              string   `json:"sub"` // the citizen's ckey
	Audience             string   `json:"aud"` // the consumer member's SPIFFE ID
	IssuedAt             int64    `json:"iat"`
	NotBefore            int64    `json:"nbf"`
	Expiry               int64    `json:"exp"`
	ID                   string   `json:"jti"`
	Purpose              string   `json:"purpose"`
	LegalBasis           string   `json:"legal_basis"`
	AuthorizationDetails []Detail `json:"authorization_details"`
	MaxUses              int      `json:"max_uses,omitempty"`
}

// Expires is exp as a time.
func (c *Claims) Expires() time.Time { return time.Unix(c.Expiry, 0) }

// Request is what a citizen agrees to.
type Request struct {
	CKey       string
	Audience   spiffeid.ID // the consumer member
	Service    string      // full protobuf service name
	Methods    []string
	Fields     []string // empty: whatever the access rule allows
	Purpose    string
	LegalBasis string // consent or explicit_request
	TTL        time.Duration
	NotBefore  time.Time // zero: now
	MaxUses    int       // 0: unlimited
}

// ErrBadRequest is returned for a grant request that cannot be a valid token.
var ErrBadRequest = errors.New("consent: invalid grant")

// Claims builds the claims of a new token for r.
func (r *Request) Claims(issuer spiffeid.ID, now time.Time) (*Claims, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, a...))
	}
	switch {
	case r.CKey == "":
		return nil, bad("no citizen")
	case r.Audience.IsZero():
		return nil, bad("no consumer")
	case federation.CheckServiceName(r.Service) != nil:
		return nil, bad("service %q is not a full protobuf service name", r.Service)
	case len(r.Methods) == 0:
		return nil, bad("at least one method")
	case federation.CheckPurpose(r.Purpose) != nil:
		return nil, bad("purpose %q: lower-case letters, digits, '-' and '_'", r.Purpose)
	case r.LegalBasis != federation.BasisConsent && r.LegalBasis != federation.BasisExplicitRequest:
		return nil, bad("legal basis %q: a token is for %s or %s", r.LegalBasis, federation.BasisConsent, federation.BasisExplicitRequest)
	case r.TTL <= 0 || r.TTL > MaxTTL:
		return nil, bad("ttl %s: between 1s and %s", r.TTL, MaxTTL)
	case r.MaxUses < 0:
		return nil, bad("max uses must not be negative")
	}
	for _, m := range r.Methods {
		if federation.CheckToken(m) != nil {
			return nil, bad("method %q", m)
		}
	}
	nbf := r.NotBefore
	if nbf.IsZero() {
		nbf = now
	}
	if nbf.Add(r.TTL).Sub(now) > MaxTTL {
		return nil, bad("the token would end more than %s after it is issued", MaxTTL)
	}
	return &Claims{
		Issuer: issuer.String(), Subject: r.CKey, Audience: r.Audience.String(),
		IssuedAt: now.Unix(), NotBefore: nbf.Unix(), Expiry: nbf.Add(r.TTL).Unix(),
		ID: NewID(), Purpose: r.Purpose, LegalBasis: r.LegalBasis, MaxUses: r.MaxUses,
		AuthorizationDetails: []Detail{{Type: DetailType, Service: r.Service, Methods: slices.Clone(r.Methods), Fields: slices.Clone(r.Fields)}},
	}, nil
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewID returns a random token ID, safe as a NATS KV key.
func NewID() string {
	b := make([]byte, 15)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return strings.ToLower(idEncoding.EncodeToString(b))
}

// ID grammar: a token ID (jti) is IDMinLen to IDMaxLen characters of
// A-Z a-z 0-9 '_' '-' — safe as a NATS KV key and a subject token, long
// enough to be unguessable when random. NewID makes 24 of them.
const (
	IDMinLen = 16
	IDMaxLen = 64
)

// CheckID reports whether s is a token ID of the one grammar every part of
// jisr uses (the verifier, revocation, the consent API and the CLI).
func CheckID(s string) bool {
	if len(s) < IDMinLen || len(s) > IDMaxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
