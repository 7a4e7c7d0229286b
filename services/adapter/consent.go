package adapter

import (
	"context"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/subject"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// A consumer's backend asks a citizen for consent through its own adapter
// (jisr.consent.v1.ConsentRequests): the adapter turns the eID into the
// ckey at once and sends the request to the gateway like a query, naming
// the consent service as provider. The gateway audits it and the consent
// service records it; the token comes back only once the citizen approved.

type eidMessage interface {
	proto.Message
	GetEid() string
}

// registerConsentRequests adds the ConsentRequests service to s.
func (a *Adapter) registerConsentRequests(s *grpc.Server) {
	sd := consentv1.ConsentRequests_ServiceDesc
	desc := &grpc.ServiceDesc{ServiceName: sd.ServiceName, HandlerType: (*any)(nil), Metadata: sd.Metadata}
	for _, m := range []struct {
		name string
		new  func() eidMessage
	}{
		{"RequestConsent", func() eidMessage { return new(consentv1.RequestConsentRequest) }},
		{"GetConsentRequest", func() eidMessage { return new(consentv1.GetConsentRequestRequest) }},
	} {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: m.name, Handler: a.consentHandler(sd.ServiceName, m.name, m.new)})
	}
	s.RegisterService(desc, struct{}{})
	a.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

func (a *Adapter) consentHandler(service, method string, newMsg func() eidMessage) grpc.MethodHandler {
	full := "/" + service + "/" + method
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(frame)
		if err := dec(in); err != nil {
			return nil, err
		}
		call := func(ctx context.Context, req any) (any, error) {
			return a.askConsent(ctx, service, method, newMsg(), req.(*frame))
		}
		if interceptor == nil {
			return call(ctx, in)
		}
		return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, call)
	}
}

func (a *Adapter) askConsent(ctx context.Context, service, method string, msg eidMessage, in *frame) (*frame, error) {
	if err := proto.Unmarshal(in.b, msg); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the request is not a valid %s", msg.ProtoReflect().Descriptor().FullName())
	}
	if msg.GetEid() == "" {
		return nil, status.Error(codes.InvalidArgument, `the request has no eID in field "eid"`)
	}
	eid, err := a.fs.Load().fed.NormaliseEID(msg.GetEid())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, `the eID in field "eid" does not match the federation's eID format`)
	}
	subj, err := subject.Query{
		Consumer: a.cfg.Member, Provider: subject.ConsentProvider, Service: subject.ServiceToken(service), Method: method,
		CKey: a.cfg.Keyer.CKey(eid),
	}.Subject()
	if err != nil {
		return nil, status.Error(codes.Internal, "could not build the query subject")
	}
	out := &nats.Msg{Subject: subj, Data: in.b, Header: nats.Header{}}
	if p := incoming(ctx, bus.MetadataPurpose); p != "" {
		out.Header.Set(bus.HeaderPurpose, p)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.cfg.DefaultTimeout)
		defer cancel()
	}
	reply, err := bus.Call(ctx, a.cfg.Conn, out, a.spanOpts...)
	if err != nil {
		return nil, err
	}
	return &frame{b: reply.Data}, nil
}
