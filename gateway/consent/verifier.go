package consent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// Refusal reasons (google.rpc.ErrorInfo reason), in the order they are checked.
const (
	ReasonMalformed        = "CONSENT_MALFORMED"
	ReasonBadEncoding      = "CONSENT_BAD_ENCODING"
	ReasonBadHeader        = "CONSENT_BAD_HEADER"
	ReasonDuplicateKey     = "CONSENT_DUPLICATE_KEY"
	ReasonHeaderForbidden  = "CONSENT_HEADER_FORBIDDEN"
	ReasonHeaderUnknown    = "CONSENT_HEADER_UNKNOWN"
	ReasonBadAlgorithm     = "CONSENT_ALGORITHM_REFUSED"
	ReasonWrongType        = "CONSENT_WRONG_TYPE"
	ReasonUnknownKey       = "CONSENT_UNKNOWN_KEY"
	ReasonBadSignature     = "CONSENT_BAD_SIGNATURE"
	ReasonUnknownClaim     = "CONSENT_UNKNOWN_CLAIM"
	ReasonBadClaim         = "CONSENT_BAD_CLAIM"
	ReasonBadID            = "CONSENT_BAD_ID"
	ReasonBadPeriod        = "CONSENT_NBF_AFTER_EXP"
	ReasonLifetimeTooLong  = "CONSENT_LIFETIME_TOO_LONG"
	ReasonIssuedInFuture   = "CONSENT_ISSUED_IN_FUTURE"
	ReasonWrongIssuer      = "CONSENT_WRONG_ISSUER"
	ReasonExpired          = "CONSENT_EXPIRED"
	ReasonNotYetValid      = "CONSENT_NOT_YET_VALID"
	ReasonWrongAudience    = "CONSENT_WRONG_AUDIENCE"
	ReasonWrongCitizen     = "CONSENT_WRONG_CITIZEN"
	ReasonNotCovered       = "CONSENT_SCOPE_NOT_COVERED"
	ReasonPurposeMismatch  = "CONSENT_PURPOSE_MISMATCH"
	ReasonBasisMismatch    = "CONSENT_LEGAL_BASIS_MISMATCH"
	ReasonRevoked          = "CONSENT_REVOKED"
	ReasonPaused           = "CONSENT_PAUSED"
	ReasonUsedUp           = "CONSENT_USED_UP"
	ReasonUsageUnavailable = "CONSENT_USAGE_UNAVAILABLE"
)

var refusals = map[string]struct {
	code codes.Code
	msg  string
}{
	decision.ReasonConsentRequired: {codes.Unauthenticated, "this query needs the citizen's consent: send a consent token in jisr-consent metadata"},
	ReasonMalformed:                {codes.Unauthenticated, "the consent token is not a compact JWS of three parts (at most 8 KiB) with a JSON object of claims"},
	ReasonBadEncoding:              {codes.Unauthenticated, "a part of the consent token is not canonical unpadded base64url"},
	ReasonBadHeader:                {codes.Unauthenticated, "the consent token's header is not a JSON object of string members"},
	ReasonDuplicateKey:             {codes.Unauthenticated, "the consent token repeats a JSON key"},
	ReasonHeaderForbidden:          {codes.Unauthenticated, "the consent token's header has a member jisr refuses (b64, crit, jwk, jku, x5u, x5c, ...)"},
	ReasonHeaderUnknown:            {codes.Unauthenticated, "the consent token's header has a member other than alg, kid and typ"},
	ReasonBadAlgorithm:             {codes.Unauthenticated, "the consent token's alg is not EdDSA"},
	ReasonWrongType:                {codes.Unauthenticated, "the consent token's typ is not JWT"},
	ReasonUnknownKey:               {codes.Unauthenticated, "the consent token is signed with a key this federation does not know (or no longer accepts)"},
	ReasonBadSignature:             {codes.Unauthenticated, "the consent token's signature is invalid"},
	ReasonUnknownClaim:             {codes.Unauthenticated, "the consent token has a claim jisr does not define (names are case-sensitive)"},
	ReasonBadClaim:                 {codes.Unauthenticated, "a claim of the consent token is missing, null or of the wrong type"},
	ReasonBadID:                    {codes.Unauthenticated, "the consent token's jti is not 16 to 64 characters of A-Z a-z 0-9 _ -"},
	ReasonBadPeriod:                {codes.Unauthenticated, "the consent token's nbf is after its exp"},
	ReasonLifetimeTooLong:          {codes.Unauthenticated, "the consent token is valid for longer than the maximum lifetime (90 days)"},
	ReasonIssuedInFuture:           {codes.Unauthenticated, "the consent token's iat is in the future"},
	ReasonWrongIssuer:              {codes.Unauthenticated, "the consent token was not issued by this federation's consent service"},
	ReasonExpired:                  {codes.Unauthenticated, "the consent token has expired"},
	ReasonNotYetValid:              {codes.Unauthenticated, "the consent token is not valid yet"},
	ReasonWrongAudience:            {codes.PermissionDenied, "the consent token was granted to another member"},
	ReasonWrongCitizen:             {codes.PermissionDenied, "the consent token is for another citizen"},
	ReasonNotCovered:               {codes.PermissionDenied, "the consent token does not cover this service and method"},
	ReasonPurposeMismatch:          {codes.PermissionDenied, "the consent token was granted for another purpose"},
	ReasonBasisMismatch:            {codes.PermissionDenied, "the consent token's legal basis is not the one the access rule requires"},
	ReasonRevoked:                  {codes.PermissionDenied, "the citizen has revoked this consent"},
	ReasonPaused:                   {codes.PermissionDenied, "the citizen has paused this consent; it is refused until they resume it"},
	ReasonUsedUp:                   {codes.PermissionDenied, "the consent token has been used as many times as it allows"},
	ReasonUsageUnavailable:         {codes.Unavailable, "the consent usage counter is unavailable; retry later"},
	decision.ReasonConsentStateUnavailable: {codes.Unavailable,
		"the gateway cannot confirm that its view of revocations and use counters is current, so no consent token is accepted; retry later"},
}

// basisName is a token's legal basis for a message: one of the federation's
// bases, else "another basis" (the claim's text is not echoed).
func basisName(b string) string {
	switch b {
	case federation.BasisConsent, federation.BasisExplicitRequest, federation.BasisMandate:
		return b
	}
	return "another basis"
}

func refuse(reason string) *decision.Refusal {
	r := refusals[reason]
	return decision.Refuse(r.code, reason, "%s", r.msg)
}

// Revocations says whether a token ID is revoked. Implemented by the
// JetStream watcher (Store.WatchRevocations) and by tests.
type Revocations interface {
	Revoked(jti string) bool
}

// Pauses says whether a token ID is paused; the Revocations of a verifier
// that implement it (Store does) are asked on every query.
type Pauses interface {
	Paused(jti string) bool
}

// Usage counts the uses of tokens that carry max_uses, exactly across
// gateway replicas; Use returns ErrUsedUp once the limit is reached.
type Usage interface {
	Use(ctx context.Context, jti string, max int) error
}

// ErrUsedUp is returned by Usage.Use past a token's max_uses.
var ErrUsedUp = errors.New("consent: token used up")

// Verifier checks consent tokens for the gateway.
type Verifier struct {
	keys    *KeySet
	issuer  string
	revoked Revocations
	usage   Usage
	now     func() time.Time
	log     *slog.Logger

	mu    sync.RWMutex
	gen   uint64 // the key set's generation the cache was filled under
	cache map[[32]byte]*Claims
	max   int
	hits  atomic.Int64
	calls atomic.Int64
}

// VerifierConfig holds what NewVerifier requires.
type VerifierConfig struct {
	// Keys are the consent service's public keys.
	Keys *KeySet
	// Issuer is the consent service's SPIFFE ID, the tokens' issuer.
	Issuer spiffeid.ID
}

type verifierOptions struct {
	revoked Revocations
	usage   Usage
	max     int
	now     func() time.Time
}

// VerifierOption configures NewVerifier with an optional setting.
type VerifierOption func(*verifierOptions)

// WithRevocations refuses the tokens r reports revoked (default: none is).
func WithRevocations(r Revocations) VerifierOption {
	return func(o *verifierOptions) { o.revoked = r }
}

// WithUsage counts the uses of tokens that carry max_uses (default: such
// tokens are refused, since their uses cannot be counted).
func WithUsage(u Usage) VerifierOption { return func(o *verifierOptions) { o.usage = u } }

// WithCacheSize bounds the verified-token cache (default 100,000 entries).
func WithCacheSize(n int) VerifierOption { return func(o *verifierOptions) { o.max = n } }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) VerifierOption { return func(o *verifierOptions) { o.now = now } }

// ErrConfig reports a missing Config field; the message names it.
var ErrConfig = errors.New("consent: invalid configuration")

// NewVerifier validates cfg and returns a verifier of tokens issued by
// cfg.Issuer (the consent service's SPIFFE ID) with cfg.Keys.
func NewVerifier(cfg VerifierConfig, opts ...VerifierOption) (*Verifier, error) {
	switch {
	case cfg.Keys == nil:
		return nil, fmt.Errorf("%w: Keys is required", ErrConfig)
	case cfg.Issuer.IsZero():
		return nil, fmt.Errorf("%w: Issuer is required", ErrConfig)
	}
	o := verifierOptions{max: 100_000, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	return &Verifier{
		keys: cfg.Keys, issuer: cfg.Issuer.String(), revoked: o.revoked, usage: o.usage,
		now: o.now, cache: map[[32]byte]*Claims{}, max: o.max,
	}, nil
}

// claims returns a token's verified claims, from the cache when the same
// token was verified before. A signature costs ~50 µs; a hit, a map look-up.
func (v *Verifier) claims(token string, now time.Time) (*Claims, error) {
	// Hashed in place: []byte(token) would copy the token (~700 bytes) on
	// every query; Sum256 only reads it.
	key := sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
	gen := v.keys.gen.Load()
	v.mu.RLock()
	stale := v.gen != gen
	c, ok := v.cache[key]
	v.mu.RUnlock()
	v.calls.Add(1)
	if stale {
		// The keys changed (a rotation, or a key withdrawn): what was
		// verified with the old set is verified again.
		v.mu.Lock()
		if v.gen != gen {
			clear(v.cache)
			v.gen = gen
		}
		v.mu.Unlock()
		ok = false
	}
	if ok && now.Unix() <= c.Expiry+30 {
		v.hits.Add(1)
		return c, nil
	}
	c, err := parse(v.keys, token, now)
	if err != nil {
		return nil, err
	}
	if c.Issuer != v.issuer {
		return nil, refuse(ReasonWrongIssuer)
	}
	v.mu.Lock()
	if v.gen == gen { // not verified with keys that have since been replaced
		if len(v.cache) >= v.max {
			for k, old := range v.cache { // evict expired entries, else an arbitrary one
				delete(v.cache, k)
				if now.Unix() <= old.Expiry {
					break
				}
			}
		}
		v.cache[key] = c
	}
	v.mu.Unlock()
	return c, nil
}

// CacheStats reports the verified-token cache's look-ups and hits.
func (v *Verifier) CacheStats() (calls, hits int64) {
	return v.calls.Load(), v.hits.Load()
}

// Ready reports whether the revocations and use counters the verifier reads
// are known to be current: nil, or why not. While they are not, Verify
// refuses every query that needs a token (Unavailable,
// CONSENT_STATE_UNAVAILABLE). The gateway's readiness includes it.
func (v *Verifier) Ready() error {
	for _, c := range []any{v.revoked, v.usage} {
		if r, ok := c.(interface{ Ready() error }); ok {
			if err := r.Ready(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Verify checks the query's token. When the token is authentic but does not
// allow the query, the grant is returned with the error so the refusal is
// audited with the token's jti.
func (v *Verifier) Verify(ctx context.Context, r *decision.Request) (*decision.Grant, error) {
	if v.Ready() != nil { // fail closed: a revocation may have been missed
		return nil, refuse(decision.ReasonConsentStateUnavailable)
	}
	if r.Token == "" {
		return nil, refuse(decision.ReasonConsentRequired)
	}
	now := r.Now
	if now.IsZero() {
		now = v.now()
	}
	c, err := v.claims(r.Token, now)
	if err != nil {
		return nil, err
	}
	grant := &decision.Grant{TokenID: c.ID, LegalBasis: c.LegalBasis, Expires: c.Expires()}
	if err := checkTimes(c, now); err != nil {
		return grant, err
	}
	if c.Audience != r.ConsumerID.String() {
		return grant, refuse(ReasonWrongAudience)
	}
	if c.Subject != r.CKey {
		return grant, refuse(ReasonWrongCitizen)
	}
	detail := covering(c, r.Service, r.Method)
	if detail == nil {
		return grant, refuse(ReasonNotCovered)
	}
	grant.Fields = detail.Fields
	if c.Purpose != r.Purpose {
		return grant, refuse(ReasonPurposeMismatch)
	}
	if r.Rule != nil && c.LegalBasis != r.Rule.LegalBasis {
		return grant, decision.Refuse(codes.PermissionDenied, ReasonBasisMismatch,
			"rule %s requires legal basis %s; the consent token was issued for %s (grant it with --basis %s)",
			r.Rule.Name, r.Rule.LegalBasis, basisName(c.LegalBasis), r.Rule.LegalBasis)
	}
	if v.revoked != nil && v.revoked.Revoked(c.ID) {
		return grant, refuse(ReasonRevoked)
	}
	if p, ok := v.revoked.(Pauses); ok && p.Paused(c.ID) {
		return grant, refuse(ReasonPaused)
	}
	if c.MaxUses > 0 {
		if v.usage == nil {
			return grant, refuse(ReasonUsageUnavailable)
		}
		switch err := v.usage.Use(ctx, c.ID, c.MaxUses); {
		case errors.Is(err, ErrUsedUp):
			return grant, refuse(ReasonUsedUp)
		case err != nil:
			return grant, refuse(ReasonUsageUnavailable)
		}
	}
	return grant, nil
}

// covering returns the authorization detail covering service/method.
func covering(c *Claims, service, method string) *Detail {
	for i := range c.AuthorizationDetails {
		d := &c.AuthorizationDetails[i]
		if d.Type == DetailType && d.Service == service && slices.Contains(d.Methods, method) {
			return d
		}
	}
	return nil
}
