package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// The operator's actions on consents (`jisr consent grant`, `jisr consent
// revoke JTI`) are asked of the running consent service over NATS, on
// subjects only the operator identity may publish to
// (subject.ConsentOperatorAPI.>). The replica holding the lease of the
// consent service's audit log (its one writer) alone answers them, and
// writes each action's record to that log before it is carried out (a
// revocation) or released (a grant): an action whose record is not durable
// is not done.

// Subjects of the consent service's operator API.
var (
	SubjectOperatorGrant  = subject.ConsentOperatorAPI + ".grant"
	SubjectOperatorRevoke = subject.ConsentOperatorAPI + ".revoke"
)

// Methods of the audit records of the operator's actions (consent log).
const (
	ActionOperatorGrant  = "OperatorGrant"
	ActionOperatorRevoke = "OperatorRevoke"
)

// ReasonOperatorAction is the reason of the audit record of an operator's
// action on a consent (`jisr consent grant|revoke`).
const ReasonOperatorAction = "OPERATOR_ACTION"

// ErrNoConsentService: no consent service answered the operator API.
var ErrNoConsentService = errors.New("consent: no consent service answers (none is running, or none holds the lease of the consent audit log yet; start one with `jisr consent serve`): nothing was changed")

// noServiceWait is how long OperatorClient asks again while no consent
// service answers.
const noServiceWait = 5 * time.Second

type operatorRequest struct {
	CKey  string        `json:"ckey,omitempty"`
	Grant *GrantRequest `json:"grant,omitempty"`
	JTI   string        `json:"jti,omitempty"`
}

// ServeOperator answers the operator API on nc (the consent identity's
// connection) with svc, each action recorded by audit (the consent
// service's audit log) first. Only the holder of the log's lease serves it:
// unsubscribe when the lease is lost, before closing the log.
func ServeOperator(nc *nats.Conn, svc *Service, audit AuditFunc) (*bus.Responder, error) {
	log := svc.Log
	if log == nil {
		log = slog.Default()
	}
	r, err := bus.QueueSubscribe(nc, subject.ConsentOperatorAPI+".>", "jisr-consent-operator", func(m *nats.Msg) {
		// Only the operator may publish here; it asks from its own inbox.
		if subject.CheckReply(m.Reply, subject.Operator) != nil {
			log.Warn("consent operator API request with a reply subject outside the operator's inbox dropped", "subject", m.Subject)
			return
		}
		done := bus.Serving(nc)
		defer done()
		b, _ := json.Marshal(svc.answerOperator(m, audit))
		if err := m.Respond(b); err != nil {
			log.Warn("consent operator API reply failed", "subject", m.Subject, "err", err)
		}
	}, 256, 8<<20)
	if err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		_ = r.Unsubscribe()
		return nil, err
	}
	return r, nil
}

func (s *Service) answerOperator(m *nats.Msg, audit AuditFunc) apiReply {
	var req operatorRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		return apiReply{Error: "bad_request", Message: "not a consent operator API request"}
	}
	if s.Store == nil || audit == nil {
		return apiReply{Error: "unavailable", Message: "the consent store or audit log is unavailable; nothing was changed"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var result any
	var err error
	switch m.Subject {
	case SubjectOperatorRevoke:
		result, err = s.operatorRevoke(ctx, req.JTI, audit)
	case SubjectOperatorGrant:
		if req.Grant == nil || req.CKey == "" {
			return apiReply{Error: "bad_request", Message: "no grant or no ckey"}
		}
		result, err = s.operatorGrant(ctx, req.CKey, *req.Grant, audit)
	default:
		return apiReply{Error: "bad_request", Message: "unknown consent operator API subject"}
	}
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrBadID):
		return apiReply{Error: "bad_request", Message: err.Error()}
	case errors.Is(err, errAuditUnavailable):
		return apiReply{Error: "unavailable", Message: err.Error()}
	case err != nil:
		s.Log.Error("consent operator API", "subject", m.Subject, "err", err)
		return apiReply{Error: "unavailable", Message: "the consent store is unavailable"}
	}
	b, err := json.Marshal(result)
	if err != nil {
		return apiReply{Error: "unavailable", Message: "the reply could not be encoded"}
	}
	return apiReply{Result: b}
}

func operatorRecord(method, ckey, consumer, jti string, g *Grant) *decision.Decision {
	now := time.Now().UTC()
	d := &decision.Decision{
		Time: now, VisibleAt: now, Consumer: consumer, Provider: subject.ConsentProvider,
		Service: consentv1.ConsentRequests_ServiceDesc.ServiceName, Method: method, CKey: ckey,
		TokenID: jti, Allowed: true, Reason: ReasonOperatorAction, Code: codes.OK,
	}
	if g != nil {
		d.Purpose, d.LegalBasis, d.Fields = g.Purpose, g.LegalBasis, g.Fields
	}
	return d
}

// operatorRevoke writes the revocation's record, then revokes jti (whoever
// minted it: with no grant recorded, the record names the jti alone).
func (s *Service) operatorRevoke(ctx context.Context, jti string, audit AuditFunc) (*Grant, error) {
	g, err := s.Store.GrantByID(ctx, jti)
	if err != nil {
		return nil, err
	}
	var ckey, consumer string
	if g != nil {
		ckey, consumer = g.CKey, ConsumerName(s.Federation, g.Consumer)
	}
	if err := audit(ctx, operatorRecord(ActionOperatorRevoke, ckey, consumer, jti, g)); err != nil {
		s.Log.Error("audit of an operator's revocation failed: not carried out", "jti", jti, "err", err)
		return nil, errAuditUnavailable
	}
	return s.Store.Revoke(ctx, jti)
}

// operatorGrant mints and records the grant, writes its record, and only
// then releases the token; a token whose record is not durable is revoked
// at once and never leaves.
func (s *Service) operatorGrant(ctx context.Context, ckey string, gr GrantRequest, audit AuditFunc) (*GrantResponse, error) {
	resp, err := s.Grant(ctx, ckey, gr)
	if err != nil {
		return nil, err
	}
	basis := gr.LegalBasis
	if basis == "" {
		basis = federation.BasisConsent
	}
	rec := &Grant{Fields: gr.Fields, Purpose: gr.Purpose, LegalBasis: basis}
	if err := audit(ctx, operatorRecord(ActionOperatorGrant, ckey, gr.To, resp.ID, rec)); err != nil {
		s.Log.Error("audit of an operator's grant failed: the token is revoked and not released", "err", err)
		if _, rerr := s.Store.Revoke(context.WithoutCancel(ctx), resp.ID); rerr != nil {
			s.Log.Error("a grant whose audit failed could not be revoked", "jti", resp.ID, "err", rerr)
		}
		return nil, errAuditUnavailable
	}
	return resp, nil
}

// OperatorClient is the operator's side of the operator API (`jisr
// consent grant|revoke`), on the operator identity's connection.
type OperatorClient struct {
	nc      *nats.Conn
	timeout time.Duration
}

// NewOperatorClient returns a client of the operator API on nc.
func NewOperatorClient(nc *nats.Conn) *OperatorClient {
	return &OperatorClient{nc: nc, timeout: 15 * time.Second}
}

func (c *OperatorClient) call(ctx context.Context, subj string, req operatorRequest, out any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// No responder: none running, or between two holders of the lease
	// (a replica taking it over, one just started): asked again for a
	// few seconds, then refused. Nothing was sent to anyone meanwhile.
	var m *nats.Msg
	for deadline := time.Now().Add(noServiceWait); ; {
		m, err = c.nc.RequestWithContext(ctx, subj, b)
		if !errors.Is(err, nats.ErrNoResponders) {
			break
		}
		if time.Now().After(deadline) {
			return ErrNoConsentService
		}
		select {
		case <-ctx.Done():
			return ErrNoConsentService
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %v (whether the action was done is unknown: check with `jisr consent list` or `jisr consent inspect`)", ErrUnavailable, err)
	}
	return decodeReply(m.Data, out, func(rep *apiReply) error {
		if rep.Error == "bad_request" && strings.HasPrefix(rep.Message, ErrBadID.Error()) {
			return ErrBadID
		}
		return nil
	})
}

// Grant asks the consent service to mint, record and audit a token of
// ckey's consent.
func (c *OperatorClient) Grant(ctx context.Context, ckey string, g GrantRequest) (*GrantResponse, error) {
	var out GrantResponse
	if err := c.call(ctx, SubjectOperatorGrant, operatorRequest{CKey: ckey, Grant: &g}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Revoke asks the consent service to audit and revoke jti; the grant is
// returned when one is recorded, else nil.
func (c *OperatorClient) Revoke(ctx context.Context, jti string) (*Grant, error) {
	if !CheckID(jti) {
		return nil, ErrBadID
	}
	var out *Grant
	if err := c.call(ctx, SubjectOperatorRevoke, operatorRequest{JTI: jti}, &out); err != nil {
		return nil, err
	}
	return out, nil
}
