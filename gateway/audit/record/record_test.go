package record

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/gateway/decision"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

func TestFromDecision(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	d := &decision.Decision{
		Time: now, Consumer: "tax", Provider: "cnss", Service: "jisr.cnss.v1.SocialSecurity", Method: "GetContributions",
		CKey: "CK", Purpose: "income-verification", LegalBasis: "mandate", Law: "CGI art. 214", Rule: "tax-contributions-check",
		Allowed: true, Reason: decision.ReasonAllowed, Fields: []string{"contributions"}, Code: codes.OK,
		Latency: 3 * time.Millisecond, TraceID: "0af7651916cd43dd8448eb211c80319c", VisibleAt: now.Add(720 * time.Hour),
	}
	r := FromDecision(d)
	if r.GetDecision() != auditv1.Decision_DECISION_ALLOWED || r.GetLaw() != d.Law || r.GetCkey() != "CK" ||
		r.GetLatency().AsDuration() != d.Latency || !r.GetVisibleAt().AsTime().Equal(d.VisibleAt) || r.GetStatusCode() != 0 {
		t.Fatalf("record %v", r)
	}
	d.Fields[0] = "changed"
	if r.GetFields()[0] != "contributions" {
		t.Fatal("the record shares the decision's field slice")
	}
	refused := &decision.Decision{Time: now, Reason: decision.ReasonBadEID, Code: codes.InvalidArgument}
	r = FromDecision(refused)
	if r.GetDecision() != auditv1.Decision_DECISION_REFUSED || r.GetStatusCode() != uint32(codes.InvalidArgument) {
		t.Fatalf("refused record %v", r)
	}
	if !r.GetVisibleAt().AsTime().Equal(now) {
		t.Fatal("a record without VisibleAt must be visible at once")
	}
	b, err := Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	r.LogId = "gw-1"
	b, _ = Marshal(r)
	if _, err := Parse(b); err != nil {
		t.Fatal(err)
	}
}

// The record has no place for an eID, a token or a payload: its string
// fields are names, keys and codes. A new field must be looked at here.
func TestRecordHasNoPlaceForCitizenData(t *testing.T) {
	t.Parallel()
	allowed := map[string]bool{
		"log_id": true, "leaf_index": true, "prev_leaf_hash": true, "time": true, "consumer": true, "provider": true,
		"service": true, "method": true, "ckey": true, "purpose": true, "legal_basis": true, "law": true, "rule": true,
		"token_id": true, "decision": true, "reason": true, "fields": true, "status_code": true, "latency": true,
		"trace_id": true, "visible_at": true, "federation_version": true,
		// Assisted access: a ckey, and "guardian" / "agent" / "guardian,agent:<ckey>"
		// (decision.AssistedGuardian, AssistedAgent; gateway/node).
		"actor_ckey": true, "assisted_by": true,
	}
	fields := (&auditv1.Record{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		if name := string(fields.Get(i).Name()); !allowed[name] {
			t.Errorf("Record has a new field %q: make sure it can never hold an eID, a token or a payload, then list it here", name)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	ok := &auditv1.Record{LogId: "gw-1", LeafIndex: 1, PrevLeafHash: make([]byte, 32), Time: FromDecision(&decision.Decision{}).GetTime()}
	for name, r := range map[string]*auditv1.Record{
		"no log id":           {LeafIndex: 0, Time: ok.Time},
		"unsafe log id":       {LogId: "gw.1", Time: ok.Time},
		"leaf 1 without prev": {LogId: "gw-1", LeafIndex: 1, Time: ok.Time},
		"leaf 0 with prev":    {LogId: "gw-1", PrevLeafHash: make([]byte, 32), Time: ok.Time},
		"short prev":          {LogId: "gw-1", LeafIndex: 2, PrevLeafHash: make([]byte, 31), Time: ok.Time},
		"no time":             {LogId: "gw-1"},
	} {
		b, _ := Marshal(r)
		if _, err := Parse(b); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Parse([]byte{0xff, 0x01}); !errors.Is(err, ErrBadRecord) {
		t.Errorf("garbage: %v", err)
	}
	b, _ := Marshal(ok)
	if _, err := Parse(b); err != nil {
		t.Fatal(err)
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	s, err := Subject("gw-1", "")
	if err != nil || s != "jisr.audit.gw-1._" {
		t.Fatalf("%q %v", s, err)
	}
	if _, err := Subject("gw-1", "A.B"); !errors.Is(err, ErrBadSubject) {
		t.Fatalf("unsafe ckey: %v", err)
	}
	if _, _, err := ParseSubject("jisr.audit.x"); !errors.Is(err, ErrBadSubject) {
		t.Fatalf("short subject: %v", err)
	}
	if f, _ := CitizenFilter("CK"); f != "jisr.audit.*.CK" {
		t.Fatal(f)
	}
	if c, _ := CheckpointSubject("gw-1"); c != "jisr.checkpoint.gw-1" {
		t.Fatal(c)
	}
	if id := MsgID("gw-1", 42); !strings.HasPrefix(id, "gw-1:") || id == MsgID("gw-1", 43) || id == MsgID("gw-2", 42) {
		t.Fatal(id)
	}
}
