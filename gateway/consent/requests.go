package consent

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/events"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// A consent request's lifecycle: PENDING → ACTIVE | REJECTED, then
// ACTIVE → PAUSED | REVOKED | EXPIRED | USED_UP (PAUSED → ACTIVE again).
// PENDING, ACTIVE and REJECTED are written in the request bucket; PAUSED and
// REVOKED live in the revocation bucket that every gateway watches (so a
// gateway enforces them, failing closed); the last use is taken in the use
// counters and the token's expiry is in the token, and the consent service's
// Sweeper then writes USED_UP or EXPIRED in the request bucket too, audited.
// State reads them all (so a consumer sees EXPIRED at the expiry even
// before the sweeper has stored it).
const (
	StatePending  = "PENDING"
	StateActive   = "ACTIVE"
	StateRejected = "REJECTED"
	StatePaused   = "PAUSED"
	StateRevoked  = "REVOKED"
	StateExpired  = "EXPIRED"
	StateUsedUp   = "USED_UP"
)

// DefaultRequestTTL is a request's consent duration when none is asked.
const DefaultRequestTTL = 30 * 24 * time.Hour

// AskRequest is what a consumer asks a citizen to consent to.
type AskRequest struct {
	Service    string   `json:"service"`
	Methods    []string `json:"methods"`
	Fields     []string `json:"fields,omitempty"`
	Purpose    string   `json:"purpose"`
	LegalBasis string   `json:"legal_basis,omitempty"`
	TTL        string   `json:"ttl,omitempty"`
	MaxUses    int      `json:"max_uses,omitempty"`
}

// ConsentRequest is a consent request as the consent service records it
// (key <ckey>.<id> of the request bucket): never the eID. Token is set from
// ACTIVE on, for the consumer who asked.
type ConsentRequest struct {
	ID         string    `json:"id"`
	CKey       string    `json:"ckey"`
	Consumer   string    `json:"consumer"` // member name
	Provider   string    `json:"provider"`
	Service    string    `json:"service"`
	Methods    []string  `json:"methods"`
	Asked      []string  `json:"asked,omitempty"`  // fields asked for (empty: what the rule allows)
	Fields     []string  `json:"fields,omitempty"` // fields approved
	Purpose    string    `json:"purpose"`
	LegalBasis string    `json:"legal_basis"`
	TTL        Duration  `json:"ttl"`
	MaxUses    int       `json:"max_uses,omitempty"`
	State      string    `json:"state"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	Token      string    `json:"token,omitempty"`
	JTI        string    `json:"jti,omitempty"`
	Expires    time.Time `json:"expires,omitzero"`
	// By names who acted for the citizen when it was not the citizen alone
	// (a counter agent's ID); empty otherwise.
	By string `json:"by,omitempty"`
	// Unaudited marks a transition the consent service stored by itself
	// (EXPIRED, USED_UP) whose audit record is not yet durable (Sweeper).
	Unaudited bool `json:"unaudited,omitempty"`
}

// Duration is a time.Duration written as Go's duration text in JSON.
type Duration time.Duration

// MarshalJSON writes d as "720h0m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads Go's duration text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Decision is the citizen's answer to a pending request: approve (with an
// optional shorter duration and fewer fields) or reject.
type Decision struct {
	Approve bool     `json:"approve"`
	Fields  []string `json:"fields,omitempty"` // a subset of the asked fields; empty = all asked
	TTL     string   `json:"ttl,omitempty"`    // at most the asked duration; empty = the asked one
}

// RequestBackend is the consent service's side of consent requests; *Client
// implements it over NATS (the gateway's), *Service with the store.
type RequestBackend interface {
	Ask(ctx context.Context, consumer, ckey string, a AskRequest) (*ConsentRequest, error)
	Get(ctx context.Context, consumer, ckey, id, waitWhile string, wait time.Duration) (*ConsentRequest, error)
	Requests(ctx context.Context, ckey string) ([]ConsentRequest, error)
	Decide(ctx context.Context, ckey, id string, d Decision) (*ConsentRequest, error)
	SetPaused(ctx context.Context, ckey, jti string, paused bool) (*Grant, error)
}

// ErrNotPending is returned when a request is decided twice.
var ErrNotPending = errors.New("consent: the request is no longer pending")

// OpenRequests binds the request bucket (the consent service's only; a
// missing bucket is natsstate.ErrMissing).
func (s *Store) OpenRequests(ctx context.Context) error {
	b, err := natsstate.OpenBucket(ctx, s.js, subject.RequestBucket)
	if err != nil {
		return fmt.Errorf("consent: %w", err)
	}
	s.requests = b
	return nil
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Ask records a consumer's PENDING request to ckey, checked against the
// federation: a rule must let consumer call every method of the service
// for the purpose on a basis that needs consent, and the fields must be
// ones that rule releases.
func (s *Service) Ask(ctx context.Context, consumer, ckey string, a AskRequest) (*ConsentRequest, error) {
	if rb, ok := s.Backend.(RequestBackend); ok {
		return rb.Ask(ctx, consumer, ckey, a)
	}
	if s.Store == nil || s.Store.requests == nil {
		return nil, ErrUnavailable
	}
	bad := func(msg string, args ...any) error { return errors.Join(ErrBadRequest, fmt.Errorf(msg, args...)) }
	fed := s.FederationNow() // one version decides the request
	if _, err := fed.Member(consumer); err != nil {
		return nil, bad("the consumer is not a member")
	}
	if a.LegalBasis == "" {
		a.LegalBasis = federation.BasisConsent
	}
	if a.LegalBasis != federation.BasisConsent && a.LegalBasis != federation.BasisExplicitRequest {
		return nil, bad("legal_basis is consent or explicit_request")
	}
	if federation.CheckPurpose(a.Purpose) != nil {
		return nil, bad("a purpose is required")
	}
	if len(a.Methods) == 0 || len(a.Methods) > 32 || len(a.Fields) > 64 || a.MaxUses < 0 {
		return nil, bad("name 1 to 32 methods, at most 64 fields, and max_uses ≥ 0")
	}
	ttl := DefaultRequestTTL
	if a.TTL != "" {
		d, err := time.ParseDuration(a.TTL)
		if err != nil || d <= 0 || d > MaxLifetime {
			return nil, bad("the duration is between 1s and 90 days")
		}
		ttl = d
	}
	rule := ruleFor(fed, consumer, a.Service, a.Methods, a.Purpose, a.LegalBasis)
	if rule == nil {
		return nil, bad("no access rule lets %s call these methods of %s for this purpose on the basis %s", consumer, a.Service, a.LegalBasis)
	}
	if len(rule.Fields) > 0 {
		for _, f := range a.Fields {
			if !slices.Contains(rule.Fields, f) {
				return nil, bad("the access rule does not release field %q", f)
			}
		}
	}
	now := time.Now().UTC()
	r := &ConsentRequest{
		ID: newRequestID(), CKey: ckey, Consumer: consumer, Provider: rule.Provider, Service: a.Service,
		Methods: a.Methods, Asked: a.Fields, Purpose: a.Purpose, LegalBasis: a.LegalBasis, TTL: Duration(ttl),
		MaxUses: a.MaxUses, State: StatePending, Created: now, Updated: now,
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.Store.requests.Create(ctx, ckey+"."+r.ID, b); err != nil {
		return nil, err
	}
	return r, nil
}

// MaxLifetime is the longest a token may be valid (the verifier refuses
// longer).
const MaxLifetime = 90 * 24 * time.Hour

// ruleFor returns the one rule of fed that lets consumer call all methods
// of service for purpose on basis, or nil.
func ruleFor(fed *federation.Federation, consumer, service string, methods []string, purpose, basis string) *federation.Rule {
	for _, r := range fed.Rules {
		if r.Consumer != consumer || r.Service != service || r.LegalBasis != basis || !slices.Contains(r.Purposes, purpose) {
			continue
		}
		all := true
		for _, m := range methods {
			all = all && slices.Contains(r.Methods, m)
		}
		if all {
			return r
		}
	}
	if service == events.Service && basis == federation.BasisConsent {
		// A consent to receive life events (docs/events.md): the event rule
		// on consent that delivers every type asked for, read as a rule.
		for _, r := range fed.EventRules {
			if r.Consumer == consumer && r.LegalBasis == basis && r.Purpose == purpose &&
				!slices.ContainsFunc(methods, func(m string) bool { return !slices.Contains(r.Events, m) }) {
				return &federation.Rule{Name: r.Name, Consumer: r.Consumer, Provider: r.Publisher, Service: service,
					Methods: r.Events, Fields: r.Fields, Purposes: []string{r.Purpose}, LegalBasis: r.LegalBasis}
			}
		}
	}
	return nil
}

// RuleFields returns the fields the rule behind r releases (empty: all).
func (s *Service) RuleFields(r *ConsentRequest) []string {
	if rule := ruleFor(s.FederationNow(), r.Consumer, r.Service, r.Methods, r.Purpose, r.LegalBasis); rule != nil {
		return rule.Fields
	}
	return nil
}

func (st *Store) getRequest(ctx context.Context, ckey, id string) (*ConsentRequest, uint64, error) {
	if !CheckID(id) || subject.CheckToken(ckey) != nil {
		return nil, 0, ErrUnknownRequest
	}
	e, err := st.requests.Get(ctx, ckey+"."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrUnknownRequest
	}
	if err != nil {
		return nil, 0, err
	}
	var r ConsentRequest
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, err
	}
	return &r, e.Revision(), nil
}

// ErrUnknownRequest is returned for a request ID that is not the asker's.
var ErrUnknownRequest = errors.New("consent: no such consent request")

// state derives the request's state now from the buckets that hold it.
func (st *Store) state(ctx context.Context, r *ConsentRequest) string {
	if r.State != StateActive {
		return r.State
	}
	if _, err := st.revocations.Get(ctx, r.JTI); err == nil {
		return StateRevoked
	}
	if time.Now().After(r.Expires) {
		return StateExpired
	}
	if r.MaxUses > 0 {
		if e, err := st.usage.Get(ctx, r.JTI); err == nil {
			if n, err := strconv.Atoi(string(e.Value())); err != nil || n >= r.MaxUses {
				return StateUsedUp
			}
		}
	}
	if e, err := st.revocations.Get(ctx, PauseKey(r.JTI)); err == nil && string(e.Value()) == pausedValue {
		return StatePaused
	}
	return StateActive
}

// PauseKey is the revocation bucket's key of jti's pause state: "pause." and
// the jti (a jti has no dot, so it never names a revocation).
func PauseKey(jti string) string { return pausePrefix + jti }

const (
	pausePrefix = "pause."
	pausedValue = "paused"
	activeValue = "active"
)

// Get returns the consumer's request id to ckey with its state now; with
// waitWhile set it waits (up to wait) while the state is that one.
func (s *Service) Get(ctx context.Context, consumer, ckey, id, waitWhile string, wait time.Duration) (*ConsentRequest, error) {
	if rb, ok := s.Backend.(RequestBackend); ok {
		return rb.Get(ctx, consumer, ckey, id, waitWhile, wait)
	}
	if s.Store == nil || s.Store.requests == nil {
		return nil, ErrUnavailable
	}
	deadline := time.Now().Add(min(wait, 25*time.Second))
	for {
		r, _, err := s.Store.getRequest(ctx, ckey, id)
		if err != nil {
			return nil, err
		}
		if r.Consumer != consumer {
			return nil, ErrUnknownRequest
		}
		r.State = s.Store.state(ctx, r)
		if waitWhile == "" || r.State != waitWhile || !time.Now().Before(deadline) {
			if r.State == StatePending || r.State == StateRejected {
				r.Token = ""
			}
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Requests lists ckey's consent requests with their states now, newest
// first, without tokens.
func (s *Service) Requests(ctx context.Context, ckey string) ([]ConsentRequest, error) {
	if rb, ok := s.Backend.(RequestBackend); ok {
		return rb.Requests(ctx, ckey)
	}
	if s.Store == nil || s.Store.requests == nil {
		return nil, ErrUnavailable
	}
	lister, err := s.Store.requests.ListKeysFiltered(ctx, ckey+".*")
	if err != nil {
		return nil, err
	}
	var out []ConsentRequest
	for k := range lister.Keys() {
		_, id, _ := strings.Cut(k, ".")
		r, _, err := s.Store.getRequest(ctx, ckey, id)
		if err != nil {
			continue
		}
		r.State = s.Store.state(ctx, r)
		r.Token = ""
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b ConsentRequest) int { return b.Created.Compare(a.Created) })
	return out, nil
}

// Decide records the citizen's answer to their pending request id. An
// approval mints the token (with the fields and duration the citizen chose,
// never more than asked) and records the grant.
func (s *Service) Decide(ctx context.Context, ckey, id string, d Decision) (*ConsentRequest, error) {
	if rb, ok := s.Backend.(RequestBackend); ok {
		return rb.Decide(ctx, ckey, id, d)
	}
	if s.Store == nil || s.Store.requests == nil || s.Issuer == nil {
		return nil, ErrUnavailable
	}
	r, rev, err := s.Store.getRequest(ctx, ckey, id)
	if err != nil {
		return nil, err
	}
	if r.State != StatePending {
		return nil, ErrNotPending
	}
	now := time.Now().UTC()
	r.Updated = now
	if !d.Approve {
		r.State = StateRejected
	} else {
		// The version in force decides the approval, not the one that
		// admitted the request: a rule a later version removed (or a
		// member it removed) lets no token be minted.
		fed := s.FederationNow()
		rule := ruleFor(fed, r.Consumer, r.Service, r.Methods, r.Purpose, r.LegalBasis)
		if rule == nil {
			return nil, errors.Join(ErrBadRequest, fmt.Errorf("no access rule of the federation in force lets %s call these methods of %s for this purpose on the basis %s any longer", r.Consumer, r.Service, r.LegalBasis))
		}
		allowed := r.Asked
		if len(allowed) == 0 {
			allowed = rule.Fields
		}
		fields := d.Fields
		if len(fields) == 0 {
			fields = r.Asked
		}
		for _, f := range fields {
			if len(allowed) > 0 && !slices.Contains(allowed, f) {
				return nil, errors.Join(ErrBadRequest, fmt.Errorf("field %q was not asked for", f))
			}
			if len(rule.Fields) > 0 && !slices.Contains(rule.Fields, f) {
				return nil, errors.Join(ErrBadRequest, fmt.Errorf("the access rule in force does not release field %q", f))
			}
		}
		ttl := time.Duration(r.TTL)
		if d.TTL != "" {
			v, err := time.ParseDuration(d.TTL)
			if err != nil || v <= 0 || v > ttl {
				return nil, errors.Join(ErrBadRequest, errors.New("the duration is at most the one asked"))
			}
			ttl = v
		}
		m, err := fed.Member(r.Consumer)
		if err != nil {
			return nil, errors.Join(ErrBadRequest, errors.New("the consumer is no longer a member"))
		}
		tok, c, err := s.Issuer.Issue(&Request{
			CKey: ckey, Audience: m.ID, Service: r.Service, Methods: r.Methods, Fields: fields,
			Purpose: r.Purpose, LegalBasis: r.LegalBasis, TTL: ttl, MaxUses: r.MaxUses,
		})
		if err != nil {
			return nil, err
		}
		if err := s.Store.Record(ctx, c); err != nil {
			return nil, err
		}
		r.State, r.Token, r.JTI, r.Expires, r.Fields, r.TTL = StateActive, tok, c.ID, c.Expires(), fields, Duration(ttl)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	// Compare-and-set: two answers racing, only one is taken.
	if _, err := s.Store.requests.Update(ctx, ckey+"."+id, b, rev); err != nil {
		if isConflict(err) {
			return nil, ErrNotPending
		}
		return nil, err
	}
	r.Token = ""
	return r, nil
}

// SetPaused pauses (or resumes) one of ckey's active consents: every gateway
// refuses its token while paused (CONSENT_PAUSED).
func (s *Service) SetPaused(ctx context.Context, ckey, jti string, paused bool) (*Grant, error) {
	if rb, ok := s.Backend.(RequestBackend); ok {
		return rb.SetPaused(ctx, ckey, jti, paused)
	}
	if s.Store == nil {
		return nil, ErrUnavailable
	}
	if !CheckID(jti) {
		return nil, ErrUnknownToken
	}
	gs, err := s.Store.List(ctx, ckey)
	if err != nil {
		return nil, err
	}
	for _, g := range gs {
		if g.ID != jti {
			continue
		}
		if g.Revoked {
			return nil, errors.Join(ErrBadRequest, errors.New("a revoked consent cannot be paused or resumed"))
		}
		v := activeValue
		if paused {
			v = pausedValue
		}
		if _, err := s.Store.revocations.Put(ctx, PauseKey(jti), []byte(v)); err != nil {
			return nil, err
		}
		g.Paused = paused
		return &g, nil
	}
	return nil, ErrUnknownToken
}
