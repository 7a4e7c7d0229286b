package accesslog

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jisr-bus/jisr/bus/subject"
)

// Authenticator turns a citizen's credential into their citizen key.
//
// In development the credential is a session token issued by the demo login
// (Sessions). In production it is a token of the national e-ID platform: an
// implementation verifies it as an OpenID Connect ID token (signature against
// the platform's JWKS, issuer, audience, expiry, nonce), reads the CNIE
// number from its claims, normalises it with the federation's eID format and
// derives the ckey with the federation's citizen key — see docs/audit.md.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (ckey string, err error)
}

// ErrUnauthenticated: no credential, or one that does not hold.
var ErrUnauthenticated = errors.New("accesslog: not authenticated")

// Sessions issues and checks the demo login's session tokens: an HMAC-SHA-256
// over the ckey and an expiry, with a key that lives only in this process
// (sessions end when the gateway restarts).
type Sessions struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// NewSessions returns a session issuer with a fresh random key.
func NewSessions(ttl time.Duration) (*Sessions, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("accesslog: %w", err)
	}
	if ttl <= 0 {
		ttl = 30 * time.Minute
	}
	return &Sessions{key: key, ttl: ttl, now: time.Now}, nil
}

// Issue returns a session token for a citizen key and its expiry.
func (s *Sessions) Issue(ckey string) (string, time.Time) {
	exp := s.now().Add(s.ttl).Truncate(time.Second)
	payload := "v1." + ckey + "." + strconv.FormatInt(exp.Unix(), 10)
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload)), exp
}

// Authenticate checks a session token and returns its citizen key.
func (s *Sessions) Authenticate(_ context.Context, token string) (string, error) {
	p, m, ok := strings.Cut(token, ".")
	if !ok {
		return "", ErrUnauthenticated
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	mac, err2 := base64.RawURLEncoding.DecodeString(m)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.mac(string(payload))) {
		return "", ErrUnauthenticated
	}
	parts := strings.Split(string(payload), ".")
	if len(parts) != 3 || parts[0] != "v1" || subject.CheckToken(parts[1]) != nil {
		return "", ErrUnauthenticated
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || !s.now().Before(time.Unix(exp, 0)) {
		return "", fmt.Errorf("%w: the session has expired", ErrUnauthenticated)
	}
	return parts[1], nil
}

func (s *Sessions) mac(payload string) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte(payload))
	return h.Sum(nil)
}
