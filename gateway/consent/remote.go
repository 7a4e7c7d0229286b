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

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/subject"
)

// The consent service runs apart from the gateway: it alone holds the
// signing keys. The gateway's citizen-facing consent API (HTTP and gRPC)
// authenticates the citizen, then asks the consent service over NATS, on
// subjects only the gateway may publish to and only the consent identity may
// subscribe to (subject.ConsentAPI.>). The request names the citizen by
// their ckey: the consent service trusts it because NATS permissions let
// nothing but a gateway send it.

// Subjects of the consent service's NATS API.
var (
	SubjectGrant  = subject.ConsentAPI + ".grant"
	SubjectList   = subject.ConsentAPI + ".list"
	SubjectRevoke = subject.ConsentAPI + ".revoke"
	// A consumer's request (asked through the gateway, which names the
	// consumer from the query subject NATS vouched for).
	SubjectAsk = subject.ConsentAPI + ".ask"
	SubjectGet = subject.ConsentAPI + ".get"
	// The citizen's side of requests: list, decide, pause or resume.
	SubjectRequests = subject.ConsentAPI + ".requests"
	SubjectDecide   = subject.ConsentAPI + ".decide"
	SubjectPause    = subject.ConsentAPI + ".pause"
)

// Backend does what only the consent service may do for a citizen: mint
// and record a grant, list and revoke their grants. *Service implements it
// with the keys and the store; *Client asks the consent service over NATS.
type Backend interface {
	Grant(ctx context.Context, ckey string, g GrantRequest) (*GrantResponse, error)
	List(ctx context.Context, ckey string) ([]Grant, error)
	RevokeFor(ctx context.Context, ckey, jti string) (*Grant, error)
}

// ErrUnavailable is returned when the consent service or its store cannot
// be reached.
var ErrUnavailable = errors.New("consent: the consent service is unavailable")

type apiRequest struct {
	CKey  string        `json:"ckey"`
	Grant *GrantRequest `json:"grant,omitempty"`
	JTI   string        `json:"jti,omitempty"`

	Consumer  string        `json:"consumer,omitempty"` // a consumer's request: the member the gateway verified
	Ask       *AskRequest   `json:"ask,omitempty"`
	ID        string        `json:"id,omitempty"`
	WaitWhile string        `json:"wait_while,omitempty"`
	Wait      time.Duration `json:"wait,omitempty"`
	Decision  *Decision     `json:"decision,omitempty"`
	Paused    bool          `json:"paused,omitempty"`
}

type apiReply struct {
	Error   string          `json:"error,omitempty"` // bad_request, not_found, unavailable
	Message string          `json:"message,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
}

// Serve answers the consent API on nc (the consent identity's connection)
// with svc; replicas share the load in one queue group. Drain or
// unsubscribe the returned responder to stop. It is a bus.Responder: a
// reconnection with a renewed SVID first lets the requests already
// received be answered on the connection that received them.
func Serve(nc *nats.Conn, svc *Service) (*bus.Responder, error) {
	log := svc.Log
	if log == nil {
		log = slog.Default()
	}
	sem := make(chan struct{}, 1024)
	sub, err := bus.QueueSubscribe(nc, subject.ConsentAPI+".>", "jisr-consent", func(m *nats.Msg) {
		// Only the gateway may publish here, and it asks from its own inbox:
		// anything else is not answered (reply subjects are input).
		if subject.CheckReply(m.Reply, "gateway") != nil {
			log.Warn("consent API request with a reply subject outside the gateway's inbox dropped", "subject", m.Subject)
			return
		}
		// Each request in its own goroutine: a consumer's long poll
		// (SubjectGet with a wait) must not hold up the others.
		select {
		case sem <- struct{}{}:
		default:
			b, _ := json.Marshal(apiReply{Error: "unavailable", Message: "the consent service is busy"})
			_ = m.Respond(b)
			return
		}
		done := bus.Serving(nc)
		go func() {
			defer func() { <-sem }()
			defer done()
			b, _ := json.Marshal(svc.answer(m))
			if err := m.Respond(b); err != nil {
				log.Warn("consent API reply failed", "subject", m.Subject, "err", err)
			}
		}()
	}, nats.DefaultSubPendingMsgsLimit, nats.DefaultSubPendingBytesLimit)
	if err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub, nil
}

func (s *Service) answer(m *nats.Msg) apiReply {
	var req apiRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.CKey == "" {
		return apiReply{Error: "bad_request", Message: "not a consent API request"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+min(max(req.Wait, 0), 25*time.Second))
	defer cancel()
	var result any
	var err error
	switch m.Subject {
	case SubjectGrant:
		if req.Grant == nil {
			return apiReply{Error: "bad_request", Message: "no grant"}
		}
		result, err = s.Grant(ctx, req.CKey, *req.Grant)
	case SubjectList:
		result, err = s.List(ctx, req.CKey)
	case SubjectRevoke:
		result, err = s.RevokeFor(ctx, req.CKey, req.JTI)
	case SubjectAsk:
		if req.Ask == nil {
			return apiReply{Error: "bad_request", Message: "no request"}
		}
		result, err = s.Ask(ctx, req.Consumer, req.CKey, *req.Ask)
	case SubjectGet:
		result, err = s.Get(ctx, req.Consumer, req.CKey, req.ID, req.WaitWhile, req.Wait)
	case SubjectRequests:
		result, err = s.Requests(ctx, req.CKey)
	case SubjectDecide:
		if req.Decision == nil {
			return apiReply{Error: "bad_request", Message: "no decision"}
		}
		result, err = s.Decide(ctx, req.CKey, req.ID, *req.Decision)
	case SubjectPause:
		result, err = s.SetPaused(ctx, req.CKey, req.JTI, req.Paused)
	default:
		return apiReply{Error: "bad_request", Message: "unknown consent API subject"}
	}
	switch {
	case errors.Is(err, ErrBadRequest):
		return apiReply{Error: "bad_request", Message: err.Error()}
	case errors.Is(err, ErrUnknownToken), errors.Is(err, ErrUnknownRequest):
		return apiReply{Error: "not_found", Message: err.Error()}
	case errors.Is(err, ErrNotPending):
		return apiReply{Error: "not_pending", Message: err.Error()}
	case err != nil:
		if s.Log != nil {
			s.Log.Error("consent API", "subject", m.Subject, "err", err)
		}
		return apiReply{Error: "unavailable", Message: "the consent store is unavailable"}
	}
	b, err := json.Marshal(result)
	if err != nil {
		return apiReply{Error: "unavailable", Message: "the reply could not be encoded"}
	}
	return apiReply{Result: b}
}

// Client is the gateway's side of the consent API: a Backend that asks the
// consent service over NATS.
type Client struct {
	nc      *nats.Conn
	timeout time.Duration
}

// NewClient returns a client of the consent service on nc (the gateway's
// connection).
func NewClient(nc *nats.Conn) *Client { return &Client{nc: nc, timeout: 10 * time.Second} }

func (c *Client) call(ctx context.Context, subj string, req apiRequest, out any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout+min(max(req.Wait, 0), 25*time.Second))
	defer cancel()
	// bus.Call: during a planned reconnection of the gateway's connection
	// (a renewed SVID) it waits for its end, and a consent service pausing
	// its responder for its own reconnection is asked again.
	m, err := bus.Call(ctx, c.nc, &nats.Msg{Subject: subj, Data: b})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return decodeReply(m.Data, out, func(rep *apiReply) error {
		switch rep.Error {
		case "not_found":
			if req.ID != "" {
				return ErrUnknownRequest
			}
			return ErrUnknownToken
		case "not_pending":
			return ErrNotPending
		}
		return nil
	})
}

// decodeReply reads a consent service's answer into out. An error answer
// is first offered to special (nil: not one of its own), then read as a bad
// request or as the service being unavailable.
func decodeReply(data []byte, out any, special func(*apiReply) error) error {
	var rep apiReply
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("%w: unreadable reply", ErrUnavailable)
	}
	if rep.Error == "" {
		return json.Unmarshal(rep.Result, out)
	}
	if special != nil {
		if err := special(&rep); err != nil {
			return err
		}
	}
	if rep.Error == "bad_request" {
		return fmt.Errorf("%w: %s", ErrBadRequest, strings.TrimPrefix(rep.Message, ErrBadRequest.Error()+": "))
	}
	return fmt.Errorf("%w: %s", ErrUnavailable, rep.Message)
}

// Grant asks the consent service to mint and record a token of ckey's consent.
func (c *Client) Grant(ctx context.Context, ckey string, g GrantRequest) (*GrantResponse, error) {
	var out GrantResponse
	if err := c.call(ctx, SubjectGrant, apiRequest{CKey: ckey, Grant: &g}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// List asks the consent service for ckey's grants.
func (c *Client) List(ctx context.Context, ckey string) ([]Grant, error) {
	var out []Grant
	if err := c.call(ctx, SubjectList, apiRequest{CKey: ckey}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RevokeFor asks the consent service to revoke jti if it is one of ckey's.
func (c *Client) RevokeFor(ctx context.Context, ckey, jti string) (*Grant, error) {
	var out Grant
	if err := c.call(ctx, SubjectRevoke, apiRequest{CKey: ckey, JTI: jti}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Ask asks the consent service to record consumer's request to ckey.
func (c *Client) Ask(ctx context.Context, consumer, ckey string, a AskRequest) (*ConsentRequest, error) {
	var out ConsentRequest
	if err := c.call(ctx, SubjectAsk, apiRequest{CKey: ckey, Consumer: consumer, Ask: &a}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Get asks for consumer's request id to ckey, waiting up to wait while its
// state is waitWhile.
func (c *Client) Get(ctx context.Context, consumer, ckey, id, waitWhile string, wait time.Duration) (*ConsentRequest, error) {
	var out ConsentRequest
	if err := c.call(ctx, SubjectGet, apiRequest{CKey: ckey, Consumer: consumer, ID: id, WaitWhile: waitWhile, Wait: wait}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Requests lists ckey's consent requests.
func (c *Client) Requests(ctx context.Context, ckey string) ([]ConsentRequest, error) {
	var out []ConsentRequest
	if err := c.call(ctx, SubjectRequests, apiRequest{CKey: ckey}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Decide sends ckey's answer to their request id.
func (c *Client) Decide(ctx context.Context, ckey, id string, d Decision) (*ConsentRequest, error) {
	var out ConsentRequest
	if err := c.call(ctx, SubjectDecide, apiRequest{CKey: ckey, ID: id, Decision: &d}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetPaused pauses or resumes ckey's consent jti.
func (c *Client) SetPaused(ctx context.Context, ckey, jti string, paused bool) (*Grant, error) {
	var out Grant
	if err := c.call(ctx, SubjectPause, apiRequest{CKey: ckey, JTI: jti, Paused: paused}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
