package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/gateway"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// TestQuerySpansAndTheirPrivacy follows queries through a real gateway with
// spans kept in memory: an allowed query is one span per step under the
// query's span, the root of a trace of the gateway's own (linked to the
// caller's span) whose trace id is the audit record's; and a member that
// bypasses its adapter to put a raw eID in the subject (as the ckey, or as
// the method) does not get that eID into any span.
func TestQuerySpansAndTheirPrivacy(t *testing.T) {
	mem := telemetry.NewMemory(1000)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(mem))
	h := start(t, []string{"person.eid", "person.names.latin"}, answer, gateway.WithTracerProvider(tp))
	ctx, root := tp.Tracer("test").Start(context.Background(), "consumer adapter")
	payload, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: testEID})
	call := func(subj string) {
		msg := &nats.Msg{Subject: subj, Data: payload, Header: nats.Header{}}
		msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
		msg.Header.Set(bus.HeaderConsent, "ok")
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, _ = bus.Call(cctx, h.cnss, msg, bus.WithTracerProvider(tp))
	}
	good := "jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson." + h.env.Keyer.CKey(testEID)
	call(good)
	call("jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson." + testEID)
	call("jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry." + testEID + "." + h.env.Keyer.CKey(testEID))
	root.End()
	_ = tp.ForceFlush(context.Background())

	recs := h.audit.all()
	if len(recs) != 3 || !recs[0].Allowed || recs[1].Allowed || recs[2].Allowed {
		t.Fatalf("audit records: %+v", recs)
	}
	// The caller chose its trace context; each record names a trace of the
	// gateway's own, whose root (the query span) links the caller's span.
	callerTrace := root.SpanContext().TraceID()
	callerSpans := map[string]bool{}
	var spans []telemetry.Span
	seen := map[string]bool{}
	for i, r := range recs {
		if len(r.TraceID) != 32 || r.TraceID == callerTrace.String() || seen[r.TraceID] {
			t.Fatalf("record %d: trace id %q; want a new trace per query, never the caller's %s", i, r.TraceID, callerTrace)
		}
		seen[r.TraceID] = true
		id, err := trace.TraceIDFromHex(r.TraceID)
		if err != nil {
			t.Fatal(err)
		}
		// The gateway ends its query span just after sending the reply, in
		// its own goroutine: wait for it rather than race it.
		var q *telemetry.Span
		bustest.Eventually(t, 10*time.Second, func() error {
			for _, s := range mem.Trace(id) {
				if s.Name == "process jisr.q" {
					q = &s
				}
			}
			if q == nil {
				return fmt.Errorf("record %d: no query span in its trace %s", i, id)
			}
			return nil
		})
		if q.ParentID != "" || len(q.Links) != 1 || q.Links[0].TraceID != callerTrace.String() {
			t.Errorf("record %d: query span parent %q, links %+v; want a root linking the caller's trace %s", i, q.ParentID, q.Links, callerTrace)
		} else {
			callerSpans[q.Links[0].SpanID] = true
		}
		spans = append(spans, mem.Trace(id)...)
	}
	// Each link names the caller's own "send jisr.q" span.
	for _, s := range mem.Trace(callerTrace) {
		if s.Name == "send jisr.q" {
			delete(callerSpans, s.SpanID)
		}
	}
	if len(callerSpans) != 0 {
		t.Errorf("query spans link spans that are not the caller's send spans: %v", callerSpans)
	}
	for _, s := range append(spans, mem.Trace(callerTrace)...) {
		if s.Name == "send jisr.q" {
			continue // the hostile member's own span, in its own process
		}
		if raw, _ := json.Marshal(s); strings.Contains(string(raw), testEID) {
			t.Errorf("a gateway span carries the eID: %s", raw)
		}
	}

	var queries []telemetry.Span
	byID := map[string]telemetry.Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
		if s.Name == "process jisr.q" {
			queries = append(queries, s)
		}
	}
	if len(queries) != 3 {
		t.Fatalf("%d query spans, want 3", len(queries))
	}
	allowed := queries[0]
	if allowed.Attributes["messaging.destination.name"] != good || allowed.Attributes["jisr.ckey"] != h.env.Keyer.CKey(testEID) ||
		allowed.Attributes["jisr.allowed"] != "true" || allowed.Attributes["rpc.method"] != "GetPerson" {
		t.Errorf("allowed query span: %v", allowed.Attributes)
	}
	// Every attribute docs/observability.md lists for the query span (the
	// gateway records them all at once, when the query is decided).
	for k, v := range map[string]string{
		"messaging.system": "nats", "messaging.operation.type": "process", "messaging.operation": "process",
		"messaging.message.body.size": fmt.Sprint(len(payload)),
		"jisr.consumer":               "cnss", "jisr.provider": "civil-registry", "rpc.system": "grpc",
		"rpc.service": "jisr.civilregistry.v1.CivilRegistry", "jisr.legal_basis": "consent",
		"jisr.reason": "ALLOWED", "rpc.grpc.status_code": "0",
	} {
		if got, ok := allowed.Attributes[k]; !ok || got != v {
			t.Errorf("allowed query span: %s = %q, want %q", k, got, v)
		}
	}
	for _, refused := range queries[1:] {
		if _, ok := refused.Attributes["messaging.destination.name"]; ok || refused.Status != "Error" {
			t.Errorf("refused query with an unchecked subject: %+v", refused)
		}
		for _, k := range []string{"messaging.system", "jisr.consumer", "jisr.allowed", "jisr.reason", "rpc.grpc.status_code"} {
			if _, ok := refused.Attributes[k]; !ok {
				t.Errorf("refused query span without %s: %v", k, refused.Attributes)
			}
		}
		if refused.Attributes["jisr.ckey"] == testEID {
			t.Errorf("refused query span names the eID as its ckey: %v", refused.Attributes)
		}
	}
	steps := map[string]bool{}
	for _, s := range spans {
		if p, ok := byID[s.ParentID]; ok && p.SpanID == allowed.SpanID {
			steps[s.Name] = true
		}
	}
	for _, step := range []string{"gateway.policy.check", "gateway.consent.verify", "send jisr.p", "gateway.minimise", "gateway.audit.append"} {
		if !steps[step] {
			t.Errorf("no %s span under the allowed query (have %v)", step, steps)
		}
	}
}
