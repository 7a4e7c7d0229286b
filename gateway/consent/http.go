package consent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/citizen"
)

// Authenticator turns a citizen's bearer credential (a session of package
// citizen's sign-in) into their ckey.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (ckey string, err error)
}

// RequestAuthenticator authenticates an HTTP request: the session cookie or
// bearer, with the cross-origin checks of state changes (citizen.Auth).
type RequestAuthenticator interface {
	AuthenticateRequest(r *http.Request) (ckey string, err error)
}

// ActorAuthenticator authenticates an HTTP request that may act for
// another person (assisted access, gateway/node): it returns the ckey the
// request acts for, and the actor's ckey and how they assist (empty when
// the citizen acts alone). It refuses with citizen.ErrNotGuardian or
// citizen.ErrGuardianshipUnavailable when the relation does not hold or
// cannot be checked.
type ActorAuthenticator interface {
	AuthenticateActor(r *http.Request) (subject, actor, assistedBy string, err error)
}

type actorKey struct{}

type assistedActor struct{ ckey, how string }

// Service is the consent service: it grants, lists and revokes a citizen's
// consents. It holds the signing keys; it never sees more of the citizen
// than their ckey. On a gateway, Service is only the citizen-facing API:
// Backend is set (a Client of the consent service), Keys holds public keys,
// and Issuer and Store are nil.
type Service struct {
	Issuer *Issuer
	Store  *Store
	Keys   *KeySet
	// Federation is the version the service starts with; SetFederation
	// puts a newer one in force (FederationNow).
	Federation *federation.Federation
	Log        *slog.Logger
	Backend    Backend // when set, grants, lists and revocations go to it
	// Audit, when set (the gateway's face), records each of the citizen's
	// actions (approve, reject, pause, resume, revoke) before it is done.
	Audit AuditFunc
	// fed is the version SetFederation put in force (nil: Federation).
	fed atomic.Pointer[federation.Federation]
}

// SetFederation puts a new federation version in force for the decisions
// that start from now on (a member it adds may be granted consent, a rule
// it removes lets no consent request be approved); a decision already
// under way finishes under the version it read. The version is swapped
// whole, never changed in place.
func (s *Service) SetFederation(fed *federation.Federation) { s.fed.Store(fed) }

// FederationNow is the version in force: the last SetFederation's, or
// Federation. A decision reads it once and decides under that version only.
func (s *Service) FederationNow() *federation.Federation {
	if f := s.fed.Load(); f != nil {
		return f
	}
	return s.Federation
}

// GrantRequest is the HTTP/JSON body of a grant.
type GrantRequest struct {
	To         string   `json:"to"` // consumer member name
	Service    string   `json:"service"`
	Methods    []string `json:"methods"`
	Fields     []string `json:"fields,omitempty"`
	Purpose    string   `json:"purpose"`
	TTL        string   `json:"ttl"` // Go duration, e.g. "24h"
	MaxUses    int      `json:"max_uses,omitempty"`
	LegalBasis string   `json:"legal_basis,omitempty"` // default consent
}

// GrantResponse is a granted token.
type GrantResponse struct {
	Token   string    `json:"token"`
	ID      string    `json:"jti"`
	Expires time.Time `json:"expires"`
}

// Grant mints, records and returns a token of ckey's consent.
func (s *Service) Grant(ctx context.Context, ckey string, g GrantRequest) (*GrantResponse, error) {
	if s.Backend != nil {
		return s.Backend.Grant(ctx, ckey, g)
	}
	if s.Issuer == nil {
		return nil, ErrUnavailable
	}
	m, err := s.FederationNow().Member(g.To)
	if err != nil {
		return nil, errors.Join(ErrBadRequest, errors.New("the consumer is not a member of the federation"))
	}
	ttl, err := time.ParseDuration(g.TTL)
	if g.TTL == "" {
		ttl, err = 24*time.Hour, nil
	}
	if err != nil {
		return nil, errors.Join(ErrBadRequest, errors.New("ttl is a duration such as 24h"))
	}
	if g.LegalBasis == "" {
		g.LegalBasis = federation.BasisConsent
	}
	tok, c, err := s.Issuer.Issue(&Request{
		CKey: ckey, Audience: m.ID, Service: g.Service, Methods: g.Methods, Fields: g.Fields,
		Purpose: g.Purpose, LegalBasis: g.LegalBasis, TTL: ttl, MaxUses: g.MaxUses,
	})
	if err != nil {
		return nil, err
	}
	if s.Store != nil {
		if err := s.Store.Record(ctx, c); err != nil {
			return nil, err
		}
	}
	return &GrantResponse{Token: tok, ID: c.ID, Expires: c.Expires()}, nil
}

// Routes returns the HTTP routes to mount on the gateway's port.
func (s *Service) Routes(auth Authenticator) map[string]http.Handler {
	rs := s.requestRoutes(auth)
	for p, h := range map[string]http.Handler{
		"GET /.well-known/jwks.json": http.HandlerFunc(s.jwks),
		"POST /v1/consents":          s.authed(auth, s.httpGrant),
		"GET /v1/consents":           s.authed(auth, s.httpList),
		"DELETE /v1/consents/{jti}":  s.authed(auth, s.httpRevoke),
	} {
		rs[p] = h
	}
	return rs
}

func (s *Service) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "max-age=60")
	writeJSON(w, http.StatusOK, s.Keys.JWKS(time.Now()))
}

func (s *Service) authed(auth Authenticator, h func(http.ResponseWriter, *http.Request, string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if auth == nil {
			httpError(w, http.StatusServiceUnavailable, "citizen login is not configured")
			return
		}
		var ckey string
		var err error
		if aa, ok := auth.(ActorAuthenticator); ok {
			// Assisted access: the request may act for a ward (checked by
			// aa); the records name the actor too.
			var actor, how string
			ckey, actor, how, err = aa.AuthenticateActor(r)
			if err == nil && actor != "" {
				r = r.WithContext(context.WithValue(r.Context(), actorKey{}, assistedActor{ckey: actor, how: how}))
			}
		} else if ra, ok := auth.(RequestAuthenticator); ok {
			// The session cookie or bearer, and the cross-origin checks.
			ckey, err = ra.AuthenticateRequest(r)
		} else if cred, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			ckey, err = auth.Authenticate(r.Context(), cred)
		} else {
			httpError(w, http.StatusUnauthorized, "sign in first: send the session cookie or Authorization: Bearer <session>")
			return
		}
		if errors.Is(err, citizen.ErrCrossOrigin) {
			httpError(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		if errors.Is(err, citizen.ErrNotGuardian) {
			httpError(w, http.StatusForbidden, "the civil registry does not show you as this person's parent or guardian")
			return
		}
		if errors.Is(err, citizen.ErrGuardianshipUnavailable) {
			httpError(w, http.StatusServiceUnavailable, "guardianship cannot be checked now; retry later")
			return
		}
		if err != nil {
			httpError(w, http.StatusUnauthorized, "the session is not valid: log in again")
			return
		}
		h(w, r, ckey)
	})
}

func (s *Service) httpGrant(w http.ResponseWriter, r *http.Request, ckey string) {
	var g GrantRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&g); err != nil {
		httpError(w, http.StatusBadRequest, "the body is not a JSON grant request")
		return
	}
	resp, err := s.grantAudited(r.Context(), ckey, g)
	switch {
	case errors.Is(err, ErrBadRequest):
		httpError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, errAuditUnavailable):
		httpError(w, http.StatusServiceUnavailable, err.Error())
	case err != nil:
		s.Log.Error("consent grant failed", "err", err)
		httpError(w, http.StatusServiceUnavailable, "the consent store is unavailable")
	default:
		writeJSON(w, http.StatusCreated, resp)
	}
}

func (s *Service) httpList(w http.ResponseWriter, r *http.Request, ckey string) {
	gs, err := s.List(r.Context(), ckey)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, "the consent store is unavailable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"consents": gs})
}

func (s *Service) httpRevoke(w http.ResponseWriter, r *http.Request, ckey string) {
	if s.Audit != nil {
		g, err := s.findGrant(r.Context(), ckey, r.PathValue("jti"))
		if s.httpFail(w, err) {
			return
		}
		if err := s.audit(r.Context(), ckey, ActionRevoke, ConsumerName(s.FederationNow(), g.Consumer), g, nil); err != nil {
			s.Log.Error("audit of a citizen's revocation failed: not carried out", "err", err)
			httpError(w, http.StatusServiceUnavailable, "the audit log is unavailable; nothing was changed")
			return
		}
	}
	g, err := s.RevokeFor(r.Context(), ckey, r.PathValue("jti"))
	switch {
	case errors.Is(err, ErrUnknownToken):
		httpError(w, http.StatusNotFound, "no consent of yours has this ID")
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, "the consent store is unavailable")
	default:
		writeJSON(w, http.StatusOK, g)
	}
}

// RevokeFor revokes jti if it is one of ckey's consents; a citizen can only
// revoke their own.
func (s *Service) RevokeFor(ctx context.Context, ckey, jti string) (*Grant, error) {
	if s.Backend != nil {
		return s.Backend.RevokeFor(ctx, ckey, jti)
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
		if g.ID == jti {
			return s.Store.Revoke(ctx, jti)
		}
	}
	return nil, ErrUnknownToken
}

// List returns ckey's grants.
func (s *Service) List(ctx context.Context, ckey string) ([]Grant, error) {
	if s.Backend != nil {
		return s.Backend.List(ctx, ckey)
	}
	if s.Store == nil {
		return nil, ErrUnavailable
	}
	return s.Store.List(ctx, ckey)
}

// ConsumerName returns the member a token's audience names ("" if none).
func ConsumerName(fed *federation.Federation, aud string) string {
	id, err := spiffeid.FromString(aud)
	if err != nil {
		return ""
	}
	m, err := fed.MemberByID(id)
	if err != nil {
		return ""
	}
	return m.Name
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
