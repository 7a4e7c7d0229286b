// Package decision holds what the gateway knows and decides about one query:
// the request as the legal-basis check sees it, what a verified consent
// grants, the refusal with its machine-readable reason, and the decision
// that the audit log records.
//
// Invariant: none of these types has a place for a raw eID or a payload; a
// citizen appears only as a ckey, and a consent token only by its jti.
package decision

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/federation"
)

// Domain is the ErrorInfo domain of jisr's refusals.
const Domain = "jisr"

// Reasons: machine-readable, stable, UPPER_SNAKE_CASE (google.rpc.ErrorInfo).
const (
	ReasonBadSubject          = "BAD_SUBJECT"
	ReasonBadReplySubject     = "BAD_REPLY_SUBJECT" // the reply subject is not the asker's inbox: dropped unanswered
	ReasonUnknownMethod       = "UNKNOWN_METHOD"
	ReasonUnknownMember       = "UNKNOWN_MEMBER"
	ReasonMalformedPayload    = "MALFORMED_PAYLOAD"
	ReasonBadEID              = "BAD_EID"
	ReasonCKeyMismatch        = "CKEY_MISMATCH"
	ReasonPurposeMissing      = "PURPOSE_MISSING"
	ReasonNoRule              = "NO_ACCESS_RULE"
	ReasonPurposeNotAllowed   = "PURPOSE_NOT_ALLOWED"
	ReasonConsentRequired     = "CONSENT_REQUIRED"
	ReasonProviderUnavailable = "PROVIDER_UNAVAILABLE"
	ReasonProviderError       = "PROVIDER_ERROR"
	ReasonDeadline            = "DEADLINE_EXCEEDED"
	ReasonAuditUnavailable    = "AUDIT_UNAVAILABLE"
	ReasonOverloaded          = "GATEWAY_OVERLOADED" // the gateway's work slots are all taken
	ReasonRequestTooLarge     = "REQUEST_TOO_LARGE"  // over the member's max_request_bytes
	ReasonTooManyInFlight     = "TOO_MANY_IN_FLIGHT" // the member's in_flight queries are all being decided
	ReasonRateLimited         = "RATE_LIMITED"       // over the member's queries_per_second (and burst)
	ReasonMinimisation        = "MINIMISATION_FAILED"
	ReasonAllowed             = "ALLOWED"
)

// Reasons of the predicate safeguards (issue 12): a caller-chosen predicate
// parameter, and too many predicate queries about one citizen.
const (
	ReasonPredicateParameter = "PREDICATE_PARAMETER_NOT_ALLOWED"
	ReasonPredicateLimit     = "PREDICATE_LIMIT_EXCEEDED"
)

// Reasons of life events (issue 19, docs/events.md). A delivery is ALLOWED
// (its record's method is the event type); a replayed one is EVENT_REPLAYED.
const (
	ReasonEventReplayed         = "EVENT_REPLAYED"           // an allowed delivery made by a replay
	ReasonEventNotAllowed       = "EVENT_NOT_ALLOWED"        // the member may not publish this event type (members[].publishes)
	ReasonUnknownEventType      = "UNKNOWN_EVENT_TYPE"       // no such event type in jisr.events.v1
	ReasonReplayNotAllowed      = "EVENT_REPLAY_NOT_ALLOWED" // no event rule of the member allows replays
	ReasonEventStoreUnavailable = "EVENT_STORE_UNAVAILABLE"  // an event stream refused the delivery: nothing is acknowledged
	ReasonEventStreamMissing    = "EVENT_STREAM_MISSING"     // the consumer has no event stream yet (operator: jisr nats init): no delivery to it
)

// ReasonConsentStateUnavailable: the gateway's view of revocations and use
// counters is not known to be current (its watch stopped), so no consent
// token is accepted (Unavailable) until it is.
const ReasonConsentStateUnavailable = "CONSENT_STATE_UNAVAILABLE"

// ReasonProviderNotFound: the provider's backend answered NotFound (it has
// no record for this citizen). Like PROVIDER_UNAVAILABLE and PROVIDER_ERROR,
// it is the provider's outcome, not a policy refusal (see ProviderOutcome).
const ReasonProviderNotFound = "PROVIDER_NOT_FOUND"

// ReasonNotGuardian: a citizen asked to act for a person the civil
// registry does not show as a living minor child of their household, with
// them as its head or spouse (assisted access, checked at each action).
const ReasonNotGuardian = "GUARDIAN_NOT_ESTABLISHED"

// ProviderOutcome reports whether a reason is the provider's answer or
// failure (unavailable, timed out, not found, an error of its own) rather
// than a refusal by the federation's policy: metrics count them apart
// (decision="provider_failed") so that an outage does not read as a jump in
// refusals.
func ProviderOutcome(reason string) bool {
	switch reason {
	case ReasonProviderUnavailable, ReasonProviderError, ReasonProviderNotFound, ReasonDeadline:
		return true
	}
	return false
}

// Request is what the legal-basis check sees of a query.
type Request struct {
	Consumer   string      // member name, proven by the subject it published on
	ConsumerID spiffeid.ID // that member's SPIFFE ID (the token audience)
	Provider   string
	Service    string // full protobuf service name
	Method     string
	CKey       string
	Purpose    string
	Token      string // the raw consent token; never logged, never recorded
	Rule       *federation.Rule
	Predicate  bool
	Now        time.Time
}

// Grant is what a verified consent token allows.
type Grant struct {
	TokenID    string   // jti
	Fields     []string // field paths granted; empty = all the rule allows
	LegalBasis string
	Expires    time.Time
}

// Refusal is an error that carries its gRPC code and reason. Its message is a
// fixed text: it never contains citizen data or token content.
type Refusal struct {
	Code    codes.Code
	Reason  string
	Message string
}

// Refuse builds a Refusal.
func Refuse(code codes.Code, reason, format string, a ...any) *Refusal {
	return &Refusal{Code: code, Reason: reason, Message: fmt.Sprintf(format, a...)}
}

func (r *Refusal) Error() string { return r.Message + " (" + r.Reason + ")" }

// GRPCStatus lets status.Convert and status.FromError see the code and an
// ErrorInfo detail with the reason.
func (r *Refusal) GRPCStatus() *status.Status {
	st := status.New(r.Code, r.Message)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: r.Reason, Domain: Domain}); err == nil {
		return d
	}
	return st
}

// ReasonOf returns the ErrorInfo reason of a status, or "".
func ReasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}

// Decision is one audited decision about one query, allowed or refused.
type Decision struct {
	Time       time.Time
	Consumer   string
	Provider   string
	Service    string
	Method     string
	CKey       string
	Purpose    string
	LegalBasis string
	Law        string // for a mandate
	Rule       string
	TokenID    string
	Allowed    bool
	Reason     string
	Fields     []string // released
	Code       codes.Code
	Latency    time.Duration
	TraceID    string
	// FederationVersion is the signed federation version that decided
	// (0: the file the gateway started with).
	FederationVersion uint64
	// VisibleAt is when the citizen's access log may show this access
	// (later than Time only for mandates the law allows to delay).
	VisibleAt time.Time
	// ActorCKey and AssistedBy: assisted access — the ckey of who acted for
	// the citizen CKey names (a parent or legal guardian), and how
	// (AssistedGuardian). Empty when the citizen acted alone.
	ActorCKey  string
	AssistedBy string
}

// AssistedGuardian is Decision.AssistedBy of an action a parent or legal
// guardian took for a minor.
const AssistedGuardian = "guardian"

// AssistedAgent is Decision.AssistedBy of an action a citizen took, signed
// in themselves, on a counter agent's session (ActorCKey is the agent's).
const AssistedAgent = "agent"
