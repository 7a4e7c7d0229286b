package consent

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// GRPC serves the consent service over gRPC (jisr.consent.v1.Consent); the
// citizen is whoever the bearer credential in the metadata authenticates.
type GRPC struct {
	consentv1.UnimplementedConsentServer
	svc  *Service
	auth Authenticator
}

// NewGRPC returns the gRPC face of svc.
func NewGRPC(svc *Service, auth Authenticator) *GRPC { return &GRPC{svc: svc, auth: auth} }

// Register adds the service to a gRPC server.
func (g *GRPC) Register(s grpc.ServiceRegistrar) { consentv1.RegisterConsentServer(s, g) }

func (g *GRPC) citizen(ctx context.Context) (string, error) {
	if g.auth == nil {
		return "", status.Error(codes.Unavailable, "citizen login is not configured")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var cred string
	if v := md.Get("authorization"); len(v) > 0 {
		cred, _ = strings.CutPrefix(v[0], "Bearer ")
	}
	if cred == "" {
		return "", status.Error(codes.Unauthenticated, "log in first: send authorization: Bearer <session> metadata")
	}
	ckey, err := g.auth.Authenticate(ctx, cred)
	if err != nil {
		return "", status.Error(codes.Unauthenticated, "the session is not valid: log in again")
	}
	return ckey, nil
}

// Grant grants a consent for the authenticated citizen.
func (g *GRPC) Grant(ctx context.Context, req *consentv1.GrantRequest) (*consentv1.GrantResponse, error) {
	ckey, err := g.citizen(ctx)
	if err != nil {
		return nil, err
	}
	gr := GrantRequest{To: req.GetTo(), Service: req.GetService(), Methods: req.GetMethods(), Fields: req.GetFields(),
		Purpose: req.GetPurpose(), MaxUses: int(req.GetMaxUses()), LegalBasis: req.GetLegalBasis()}
	if req.GetTtl() != nil {
		gr.TTL = req.GetTtl().AsDuration().String()
	}
	resp, err := g.svc.grantAudited(ctx, ckey, gr)
	switch {
	case errors.Is(err, ErrBadRequest):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errAuditUnavailable):
		return nil, status.Error(codes.Unavailable, err.Error())
	case err != nil:
		return nil, status.Error(codes.Unavailable, "the consent store is unavailable")
	}
	return &consentv1.GrantResponse{Token: resp.Token, Jti: resp.ID, Expires: timestamppb.New(resp.Expires)}, nil
}

// ListConsents lists the authenticated citizen's consents.
func (g *GRPC) ListConsents(ctx context.Context, _ *consentv1.ListConsentsRequest) (*consentv1.ListConsentsResponse, error) {
	ckey, err := g.citizen(ctx)
	if err != nil {
		return nil, err
	}
	gs, err := g.svc.List(ctx, ckey)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "the consent store is unavailable")
	}
	out := &consentv1.ListConsentsResponse{}
	for i := range gs {
		out.Consents = append(out.Consents, toProto(&gs[i]))
	}
	return out, nil
}

// Revoke revokes one of the authenticated citizen's consents.
func (g *GRPC) Revoke(ctx context.Context, req *consentv1.RevokeRequest) (*consentv1.RevokeResponse, error) {
	ckey, err := g.citizen(ctx)
	if err != nil {
		return nil, err
	}
	if g.svc.Audit != nil {
		// As on HTTP: the revocation is audited before it is made, and not
		// made when its record is not durable.
		found, err := g.svc.findGrant(ctx, ckey, req.GetJti())
		switch {
		case errors.Is(err, ErrUnknownToken):
			return nil, status.Error(codes.NotFound, "no consent of yours has this ID")
		case err != nil:
			return nil, status.Error(codes.Unavailable, "the consent store is unavailable")
		}
		if err := g.svc.audit(ctx, ckey, ActionRevoke, ConsumerName(g.svc.FederationNow(), found.Consumer), found, nil); err != nil {
			g.svc.Log.Error("audit of a citizen's revocation failed: not carried out", "err", err)
			return nil, status.Error(codes.Unavailable, "the audit log is unavailable; nothing was changed")
		}
	}
	gr, err := g.svc.RevokeFor(ctx, ckey, req.GetJti())
	switch {
	case errors.Is(err, ErrUnknownToken):
		return nil, status.Error(codes.NotFound, "no consent of yours has this ID")
	case err != nil:
		return nil, status.Error(codes.Unavailable, "the consent store is unavailable")
	}
	return &consentv1.RevokeResponse{Consent: toProto(gr)}, nil
}

func toProto(g *Grant) *consentv1.ConsentGrant {
	return &consentv1.ConsentGrant{
		Jti: g.ID, Consumer: g.Consumer, Service: g.Service, Methods: g.Methods, Fields: g.Fields,
		Purpose: g.Purpose, LegalBasis: g.LegalBasis, IssuedAt: timestamppb.New(g.IssuedAt),
		Expires: timestamppb.New(g.Expires), MaxUses: int32(g.MaxUses), Revoked: g.Revoked,
	}
}
