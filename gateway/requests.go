package gateway

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// ConsentRequests answers a consumer's consent requests: the consent
// service, asked over NATS. The consumer is the one the query subject names
// (NATS permissions vouch for it), the citizen the ckey of the request's eID.
type ConsentRequests interface {
	RequestConsent(ctx context.Context, consumer, ckey string, req *consentv1.RequestConsentRequest) (*consentv1.ConsentRequest, error)
	GetConsentRequest(ctx context.Context, consumer, ckey string, req *consentv1.GetConsentRequestRequest) (*consentv1.ConsentRequest, error)
}

// ConsentRequestService is the service a consumer's adapter offers for
// consent requests; its queries name subject.ConsentProvider as provider.
var ConsentRequestService = consentv1.ConsentRequests_ServiceDesc.ServiceName

// consentRequest decides a consumer's consent request
// (jisr.q.<consumer>.consent.jisr_consent_v1_ConsentRequests.<method>.<ckey>):
// the same checks of subject, payload and eID as a query, then the consent
// service answers. The record names the consent service as provider.
func (g *Gateway) consentRequest(ctx context.Context, q subject.Query, data []byte, d *decision.Decision) ([]byte, error) {
	if _, err := g.fs.Load().fed.Member(q.Consumer); err != nil {
		return nil, decision.Refuse(codes.PermissionDenied, decision.ReasonUnknownMember, "unknown consumer member")
	}
	d.Consumer, d.Provider = q.Consumer, subject.ConsentProvider
	if q.Service != subject.ServiceToken(ConsentRequestService) {
		return nil, decision.Refuse(codes.NotFound, decision.ReasonUnknownMethod, "unknown service or method")
	}
	var in interface {
		proto.Message
		GetEid() string
	}
	switch q.Method {
	case "RequestConsent":
		in = new(consentv1.RequestConsentRequest)
	case "GetConsentRequest":
		in = new(consentv1.GetConsentRequestRequest)
	default:
		return nil, decision.Refuse(codes.NotFound, decision.ReasonUnknownMethod, "unknown service or method")
	}
	d.Service, d.Method = ConsentRequestService, q.Method
	if g.cfg.Requests == nil {
		return nil, decision.Refuse(codes.Unavailable, decision.ReasonConsentStateUnavailable, "this gateway does not take consent requests")
	}
	if err := proto.Unmarshal(data, in); err != nil {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonMalformedPayload, "the request payload is not a valid %s", in.ProtoReflect().Descriptor().FullName())
	}
	eid, err := g.fs.Load().fed.NormaliseEID(in.GetEid())
	if err != nil {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonBadEID, "the eID does not match the federation's eID format")
	}
	ck := g.cfg.Keyer.CKey(eid)
	d.CKey = ck
	if !ckey.Equal(ck, q.CKey) {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonCKeyMismatch, "the subject's citizen key does not match the request's eID")
	}
	var out *consentv1.ConsentRequest
	switch in := in.(type) {
	case *consentv1.RequestConsentRequest:
		// The record keeps only what the federation could have written:
		// a well-formed purpose, a known basis (the consent service checks
		// the request against the rules).
		if federation.CheckPurpose(in.GetPurpose()) == nil {
			d.Purpose = in.GetPurpose()
		}
		if b := in.GetLegalBasis(); b == federation.BasisConsent || b == federation.BasisExplicitRequest {
			d.LegalBasis = b
		}
		out, err = g.cfg.Requests.RequestConsent(ctx, q.Consumer, ck, in)
	case *consentv1.GetConsentRequestRequest:
		// A long poll waits no longer than the caller does.
		if dl, ok := ctx.Deadline(); ok && in.GetWait() != nil {
			if left := time.Until(dl) - time.Second; in.GetWait().AsDuration() > left {
				in.Wait = nil
				if left > 0 {
					in.Wait = durationpb.New(left)
				}
			}
		}
		out, err = g.cfg.Requests.GetConsentRequest(ctx, q.Consumer, ck, in)
	}
	if err != nil {
		return nil, err
	}
	if out.GetJti() != "" {
		d.TokenID = out.GetJti()
	}
	if federation.CheckPurpose(out.GetPurpose()) == nil {
		d.Purpose = out.GetPurpose()
	}
	if b := out.GetLegalBasis(); b == federation.BasisConsent || b == federation.BasisExplicitRequest {
		d.LegalBasis = b
	}
	var reply proto.Message = &consentv1.GetConsentRequestResponse{Request: out}
	if q.Method == "RequestConsent" {
		reply = &consentv1.RequestConsentResponse{Request: out}
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(reply)
}
