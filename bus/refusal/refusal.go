// Package refusal is the part of jisr's one vocabulary of refusal reasons
// that lives below the gateway: the ErrorInfo domain, the reasons an
// adapter gives on its own (before or without asking the gateway), and the
// helpers that put a reason into a gRPC status and read it back.
//
// The gateway's reasons are in gateway/decision; both sets are documented,
// one row each, in docs/errors.md, and a test (gateway/decision's
// TestEveryReasonIsProducedAndDocumented) walks every constant of both.
// A reason that means the same thing at the adapter and at the gateway has
// the same string (BAD_EID, MALFORMED_PAYLOAD, UNKNOWN_METHOD).
//
// Invariant: a refusal's message is written by jisr and never carries
// citizen data (no eID, no payload, no token).
package refusal

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the google.rpc.ErrorInfo domain of every jisr refusal.
const Domain = "jisr"

// Reasons given by an adapter. Those shared with the gateway have its
// strings.
const (
	// ReasonBadEID: the request carries no eID, or one that does not match
	// the federation's eID format (InvalidArgument).
	ReasonBadEID = "BAD_EID"
	// ReasonMalformedPayload: the request is not a valid message of the
	// method's input type (InvalidArgument).
	ReasonMalformedPayload = "MALFORMED_PAYLOAD"
	// ReasonBadSubject: the provider adapter received a query on a subject
	// that is not jisr.p.<itself>.<service>.<method>.<ckey> (InvalidArgument).
	ReasonBadSubject = "BAD_SUBJECT"
	// ReasonUnknownMethod: the provider adapter does not serve this service
	// or method, or the consumer adapter has no such service or method
	// (Unimplemented).
	ReasonUnknownMethod = "UNKNOWN_METHOD"
	// ReasonUnknownProvider: no member of the federation provides the
	// service, or the member named in jisr-provider does not (NotFound).
	ReasonUnknownProvider = "UNKNOWN_PROVIDER"
	// ReasonProviderAmbiguous: several members provide the service and the
	// call does not name one in jisr-provider metadata (InvalidArgument).
	ReasonProviderAmbiguous = "PROVIDER_AMBIGUOUS"
	// ReasonRequestTooLarge: the request is over the bus's maximum payload
	// (the gateway's same reason: over the member's max_request_bytes)
	// (InvalidArgument at the adapter, ResourceExhausted at the gateway).
	ReasonRequestTooLarge = "REQUEST_TOO_LARGE"
	// ReasonGatewayUnavailable: the consumer adapter could not reach a
	// gateway (no gateway connected, or the bus connection is down)
	// (Unavailable).
	ReasonGatewayUnavailable = "GATEWAY_UNAVAILABLE"
	// ReasonGatewayTimeout: no answer came back before the call's deadline
	// (DeadlineExceeded).
	ReasonGatewayTimeout = "GATEWAY_TIMEOUT"
	// ReasonBackendReplyInvalid: the provider's backend answered with bytes
	// that are not a valid reply message (Internal).
	ReasonBackendReplyInvalid = "BACKEND_REPLY_INVALID"
	// ReasonAdapterInternal: the adapter could not build the query (a bug
	// or a federation file it cannot use) (Internal).
	ReasonAdapterInternal = "ADAPTER_INTERNAL"
)

// Error returns a status error with code, a message written by jisr and an
// ErrorInfo detail carrying reason in Domain.
func Error(code codes.Code, reason, format string, a ...any) error {
	return Status(code, reason, format, a...).Err()
}

// Status is Error as a *status.Status.
func Status(code codes.Code, reason, format string, a ...any) *status.Status {
	st := status.New(code, fmt.Sprintf(format, a...))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); err == nil {
		return d
	}
	return st
}

// Of returns the jisr ErrorInfo reason of an error or status ("" when it
// carries none).
func Of(err error) string {
	st, ok := status.FromError(err)
	if !ok || st == nil {
		return ""
	}
	return OfStatus(st)
}

// OfStatus returns the jisr ErrorInfo reason of a status, or "".
func OfStatus(st *status.Status) string {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == Domain {
			return ei.GetReason()
		}
	}
	return ""
}
