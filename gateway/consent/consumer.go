package consent

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/gateway/decision"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// Refusal reasons of consumers' consent requests.
const (
	ReasonRequestInvalid = "CONSENT_REQUEST_INVALID" // not a request the federation's rules allow
	ReasonRequestUnknown = "CONSENT_REQUEST_UNKNOWN" // no such request of this consumer for this citizen
)

// ConsumerRequests is the gateway's side of consumers' consent requests
// (gateway.ConsentRequests): it asks the consent service through Backend.
type ConsumerRequests struct {
	Backend RequestBackend
}

// RequestConsent records a PENDING request of consumer to ckey.
func (c ConsumerRequests) RequestConsent(ctx context.Context, consumer, ckey string, in *consentv1.RequestConsentRequest) (*consentv1.ConsentRequest, error) {
	a := AskRequest{Service: in.GetService(), Methods: in.GetMethods(), Fields: in.GetFields(), Purpose: in.GetPurpose(),
		LegalBasis: in.GetLegalBasis(), MaxUses: int(in.GetMaxUses())}
	if in.GetDuration() != nil {
		a.TTL = in.GetDuration().AsDuration().String()
	}
	r, err := c.Backend.Ask(ctx, consumer, ckey, a)
	if err != nil {
		return nil, requestRefusal(err)
	}
	return RequestProto(r), nil
}

// GetConsentRequest returns consumer's request, waiting while its state is
// the one given.
func (c ConsumerRequests) GetConsentRequest(ctx context.Context, consumer, ckey string, in *consentv1.GetConsentRequestRequest) (*consentv1.ConsentRequest, error) {
	var while string
	if in.GetWaitWhile() != consentv1.ConsentState_CONSENT_STATE_UNSPECIFIED {
		while = strings.TrimPrefix(in.GetWaitWhile().String(), "CONSENT_STATE_")
	}
	wait := 25 * time.Second
	if in.GetWait() != nil {
		wait = min(in.GetWait().AsDuration(), wait)
	}
	r, err := c.Backend.Get(ctx, consumer, ckey, in.GetId(), while, wait)
	if err != nil {
		return nil, requestRefusal(err)
	}
	return RequestProto(r), nil
}

func requestRefusal(err error) error {
	switch {
	case errors.Is(err, ErrBadRequest):
		return decision.Refuse(codes.InvalidArgument, ReasonRequestInvalid, "%s", strings.TrimPrefix(err.Error(), ErrBadRequest.Error()+": "))
	case errors.Is(err, ErrUnknownRequest), errors.Is(err, ErrUnknownToken):
		return decision.Refuse(codes.NotFound, ReasonRequestUnknown, "no consent request of yours has this ID for this citizen")
	default:
		return decision.Refuse(codes.Unavailable, decision.ReasonConsentStateUnavailable, "the consent service is unavailable; retry later")
	}
}

// RequestProto is r as the consumer sees it.
func RequestProto(r *ConsentRequest) *consentv1.ConsentRequest {
	out := &consentv1.ConsentRequest{
		Id: r.ID, State: consentv1.ConsentState(consentv1.ConsentState_value["CONSENT_STATE_"+r.State]),
		Service: r.Service, Methods: r.Methods, Fields: r.Fields, Purpose: r.Purpose, LegalBasis: r.LegalBasis,
		Duration: durationpb.New(time.Duration(r.TTL)), MaxUses: int32(r.MaxUses),
		Created: timestamppb.New(r.Created), Updated: timestamppb.New(r.Updated), Token: r.Token, Jti: r.JTI,
	}
	if len(out.Fields) == 0 {
		out.Fields = r.Asked
	}
	if !r.Expires.IsZero() {
		out.Expires = timestamppb.New(r.Expires)
	}
	return out
}
