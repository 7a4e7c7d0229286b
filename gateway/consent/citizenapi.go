package consent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// The citizen's actions on consent requests and consents, each written to
// the audit log before it is carried out (a citizen's action that cannot be
// made durable is not done). Their records name the consent service as
// provider, the ConsentRequests service, and one of these methods.
const (
	ActionApprove = "CitizenApprove"
	ActionReject  = "CitizenReject"
	ActionPause   = "CitizenPause"
	ActionResume  = "CitizenResume"
	ActionRevoke  = "CitizenRevoke"
	ActionPreview = "CitizenPreview"
	// ActionGrant is a consent the citizen gave directly (not answering a
	// request): audited once minted, before the token is released.
	ActionGrant = "CitizenGrant"
)

// errAuditUnavailable: the record of a citizen's action is not durable, so
// the action is not carried out (or its token not released).
var errAuditUnavailable = errors.New("consent: the audit log is unavailable; nothing was changed")

// grantAudited is Grant for the gateway's face: the token is released only
// once its record is durable. The record names the token's ID, which exists
// only once it is minted; when the record cannot be written, the token is
// revoked at once and never leaves.
func (s *Service) grantAudited(ctx context.Context, ckey string, g GrantRequest) (*GrantResponse, error) {
	if s.Audit == nil {
		return s.Grant(ctx, ckey, g)
	}
	resp, err := s.Grant(ctx, ckey, g)
	if err != nil {
		return nil, err
	}
	basis := g.LegalBasis
	if basis == "" {
		basis = "consent"
	}
	rec := &Grant{ID: resp.ID, Fields: g.Fields, Purpose: g.Purpose, LegalBasis: basis}
	if err := s.audit(ctx, ckey, ActionGrant, g.To, rec, nil); err != nil {
		s.Log.Error("audit of a citizen's grant failed: the token is revoked and not released", "err", err)
		if _, rerr := s.RevokeFor(context.WithoutCancel(ctx), ckey, resp.ID); rerr != nil {
			s.Log.Error("a grant whose audit failed could not be revoked", "jti", resp.ID, "err", rerr)
		}
		return nil, errAuditUnavailable
	}
	return resp, nil
}

// Reason of the audit records of a citizen's action on their consents.
const ReasonCitizenAction = "CITIZEN_ACTION"

// AuditFunc makes a decision record durable (the gateway's audit log).
type AuditFunc func(ctx context.Context, d *decision.Decision) error

func (s *Service) audit(ctx context.Context, ckey, action, consumer string, g *Grant, r *ConsentRequest) error {
	if s.Audit == nil {
		return nil
	}
	now := time.Now().UTC()
	d := &decision.Decision{
		Time: now, VisibleAt: now, Consumer: consumer, Provider: subject.ConsentProvider,
		Service: consentv1.ConsentRequests_ServiceDesc.ServiceName, Method: action, CKey: ckey,
		Allowed: true, Reason: ReasonCitizenAction, Code: codes.OK,
	}
	if a, ok := ctx.Value(actorKey{}).(assistedActor); ok {
		d.ActorCKey, d.AssistedBy = a.ckey, a.how
	}
	if g != nil {
		d.Purpose, d.LegalBasis, d.TokenID, d.Fields = g.Purpose, g.LegalBasis, g.ID, g.Fields
	}
	if r != nil {
		d.Purpose, d.LegalBasis, d.TokenID, d.Fields = r.Purpose, r.LegalBasis, r.JTI, r.Fields
	}
	return s.Audit(context.WithoutCancel(ctx), d)
}

// requestRoutes are the citizen's consent-request routes.
func (s *Service) requestRoutes(auth Authenticator) map[string]http.Handler {
	return map[string]http.Handler{
		"GET /v1/consent-requests":               s.authed(auth, s.httpRequests),
		"POST /v1/consent-requests/{id}/approve": s.authed(auth, s.httpDecide(true)),
		"POST /v1/consent-requests/{id}/reject":  s.authed(auth, s.httpDecide(false)),
		"POST /v1/consents/{jti}/pause":          s.authed(auth, s.httpPause(true)),
		"POST /v1/consents/{jti}/resume":         s.authed(auth, s.httpPause(false)),
	}
}

func (s *Service) httpRequests(w http.ResponseWriter, r *http.Request, ckey string) {
	rs, err := s.Requests(r.Context(), ckey)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, "the consent store is unavailable")
		return
	}
	type view struct {
		ConsentRequest
		RuleFields []string `json:"rule_fields,omitempty"`
	}
	out := []view{}
	for i := range rs {
		out = append(out, view{ConsentRequest: rs[i], RuleFields: s.RuleFields(&rs[i])})
	}
	writeJSON(w, http.StatusOK, map[string]any{"requests": out})
}

// findRequest returns ckey's request id (for the record of an action).
func (s *Service) findRequest(ctx context.Context, ckey, id string) (*ConsentRequest, error) {
	rs, err := s.Requests(ctx, ckey)
	if err != nil {
		return nil, err
	}
	for i := range rs {
		if rs[i].ID == id {
			return &rs[i], nil
		}
	}
	return nil, ErrUnknownRequest
}

func (s *Service) findGrant(ctx context.Context, ckey, jti string) (*Grant, error) {
	gs, err := s.List(ctx, ckey)
	if err != nil {
		return nil, err
	}
	for i := range gs {
		if gs[i].ID == jti {
			return &gs[i], nil
		}
	}
	return nil, ErrUnknownToken
}

func (s *Service) httpDecide(approve bool) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, ckey string) {
		d := Decision{Approve: approve}
		if approve && r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&d); err != nil {
				httpError(w, http.StatusBadRequest, "the body is not a JSON decision")
				return
			}
			d.Approve = true
		}
		req, err := s.findRequest(r.Context(), ckey, r.PathValue("id"))
		if s.httpFail(w, err) {
			return
		}
		if req.State != StatePending {
			httpError(w, http.StatusConflict, "the request is no longer pending")
			return
		}
		action := ActionReject
		if approve {
			action = ActionApprove
			rec := *req
			if len(d.Fields) > 0 {
				rec.Fields = d.Fields
			} else {
				rec.Fields = req.Asked
			}
			req = &rec
		}
		if err := s.audit(r.Context(), ckey, action, req.Consumer, nil, req); err != nil {
			s.Log.Error("audit of a citizen's decision failed: not carried out", "err", err)
			httpError(w, http.StatusServiceUnavailable, "the audit log is unavailable; nothing was changed")
			return
		}
		out, err := s.Decide(r.Context(), ckey, req.ID, d)
		if s.httpFail(w, err) {
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func (s *Service) httpPause(pause bool) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, ckey string) {
		g, err := s.findGrant(r.Context(), ckey, r.PathValue("jti"))
		if s.httpFail(w, err) {
			return
		}
		action := ActionResume
		if pause {
			action = ActionPause
		}
		if err := s.audit(r.Context(), ckey, action, ConsumerName(s.FederationNow(), g.Consumer), g, nil); err != nil {
			s.Log.Error("audit of a citizen's pause failed: not carried out", "err", err)
			httpError(w, http.StatusServiceUnavailable, "the audit log is unavailable; nothing was changed")
			return
		}
		out, err := s.SetPaused(r.Context(), ckey, g.ID, pause)
		if s.httpFail(w, err) {
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// httpFail writes err's answer and reports whether there was one.
func (s *Service) httpFail(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrBadRequest):
		httpError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrUnknownRequest), errors.Is(err, ErrUnknownToken):
		httpError(w, http.StatusNotFound, "no request or consent of yours has this ID")
	case errors.Is(err, ErrNotPending):
		httpError(w, http.StatusConflict, "the request is no longer pending")
	default:
		if s.Log != nil {
			s.Log.Error("consent API", "err", err)
		}
		httpError(w, http.StatusServiceUnavailable, "the consent store is unavailable")
	}
	return true
}
