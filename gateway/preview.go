package gateway

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// PurposeCitizen is the purpose, and the legal basis, of a citizen looking
// at their own data: the preview of what a consent would release.
const PurposeCitizen = "citizen"

// ErrPreview: the preview cannot be made (unknown method, provider error).
var ErrPreview = errors.New("gateway: no preview")

// Preview asks provider, for the citizen themselves (eid, from their own
// sign-in), for what service/method would release of their data under
// fields, minimised exactly as a consumer's answer would be, and returns it
// as JSON. It is audited like a query — consumer none, purpose and basis
// "citizen" — and nothing is returned unless the record is durable.
func (g *Gateway) Preview(ctx context.Context, eid, provider, service, method string, fields []string) ([]byte, error) {
	start := time.Now()
	d := &decision.Decision{Time: start.UTC(), Provider: provider, Service: service, Method: method,
		Purpose: PurposeCitizen, LegalBasis: PurposeCitizen}
	d.VisibleAt = d.Time
	out, err := g.preview(ctx, eid, provider, service, method, fields, d)
	d.Latency = time.Since(start)
	d.Allowed = err == nil
	d.Code, d.Reason = codes.OK, decision.ReasonAllowed
	if err != nil {
		st := decision.Refuse(codes.Unavailable, decision.ReasonProviderError, "no preview").GRPCStatus()
		if r := new(decision.Refusal); errors.As(err, &r) {
			st = r.GRPCStatus()
		}
		d.Code, d.Reason, d.Fields = st.Code(), decision.ReasonOf(st), nil
	}
	if !g.cfg.Unsafe.SkipAudit {
		if aerr := g.cfg.Audit.Append(context.WithoutCancel(ctx), d); aerr != nil {
			g.log.ErrorContext(ctx, "audit append of a citizen's preview failed: withheld", "err", aerr)
			return nil, decision.Refuse(codes.Unavailable, decision.ReasonAuditUnavailable, "the audit log is unavailable")
		}
	}
	if err != nil {
		return nil, errors.Join(ErrPreview, err)
	}
	return out, nil
}

func (g *Gateway) preview(ctx context.Context, eid, provider, service, method string, fields []string, d *decision.Decision) ([]byte, error) {
	fs := g.fs.Load()
	norm, err := fs.fed.NormaliseEID(eid)
	if err != nil {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonBadEID, "the eID does not match the federation's eID format")
	}
	d.CKey = g.cfg.Keyer.CKey(norm)
	m, err := fs.cat.Lookup(subject.ServiceToken(service), method)
	if err != nil || !fs.fed.Provides(provider, m.Service) {
		return nil, decision.Refuse(codes.NotFound, decision.ReasonUnknownMethod, "unknown service or method")
	}
	req := m.Input.New()
	req.Set(m.EID, protoreflect.ValueOfString(norm))
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(req.Interface())
	if err != nil {
		return nil, err
	}
	q := subject.Query{Consumer: PurposeCitizen, Provider: provider, Service: m.ServiceToken, Method: m.Name, CKey: d.CKey}
	tctx, cancel := context.WithTimeout(ctx, g.cfg.DefaultTimeout)
	defer cancel()
	reply, err := g.forward(tctx, q, data, PurposeCitizen)
	if err != nil {
		return nil, err
	}
	if len(fields) == 0 {
		fields = nil
	}
	b, err := g.minimise(ctx, q, m, reply, fields, fields, d)
	if err != nil {
		return nil, err
	}
	msg := m.Output.New().Interface()
	if err := proto.Unmarshal(b, msg); err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
}
