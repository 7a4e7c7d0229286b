package record

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/gateway/decision"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

func TestAppendChainedIsMarshal(t *testing.T) {
	r := FromDecision(sampleDecision())
	body, err := MarshalBody(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		log  string
		leaf uint64
		prev []byte
	}{{"gw-1", 0, nil}, {"gw-1", 1, bytes.Repeat([]byte{7}, 32)}, {"a-very-long-instance-name", 1 << 40, bytes.Repeat([]byte{1}, 32)}} {
		full := proto.Clone(r).(*auditv1.Record)
		full.LogId, full.LeafIndex, full.PrevLeafHash = c.log, c.leaf, c.prev
		want, err := Marshal(full)
		if err != nil {
			t.Fatal(err)
		}
		got := AppendChained(nil, c.log, c.leaf, c.prev, body)
		if !bytes.Equal(got, want) || ChainedSize(c.log, c.leaf, c.prev, len(body)) != len(want) {
			t.Fatalf("leaf %d: AppendChained differs from Marshal", c.leaf)
		}
	}
	full := proto.Clone(r).(*auditv1.Record)
	full.LeafIndex = 3
	if _, err := MarshalBody(full); err == nil {
		t.Fatal("MarshalBody accepted a record with chaining fields")
	}
}

func TestBatchRoundTripAndJunk(t *testing.T) {
	recs := [][]byte{[]byte("one"), bytes.Repeat([]byte{2}, 300), {}}
	var buf []byte
	for _, r := range recs {
		buf = AppendBatch(buf, r)
	}
	// The encoding is RecordBatch's.
	var pb auditv1.RecordBatch
	if err := proto.Unmarshal(buf, &pb); err != nil || len(pb.GetRecords()) != 3 {
		t.Fatalf("not a RecordBatch: %v", err)
	}
	subj, _ := BatchSubject("gw-1")
	id, _, batch, got, err := Stored(subj, map[string][]string{HeaderCount: {"3"}}, buf)
	if err != nil || id != "gw-1" || !batch || len(got) != 3 || !bytes.Equal(got[1], recs[1]) {
		t.Fatalf("Stored: %v %v %d", err, batch, len(got))
	}
	if _, _, _, _, err := Stored(subj, map[string][]string{HeaderCount: {"2"}}, buf); !errors.Is(err, ErrBadBatch) {
		t.Fatalf("a count header that lies: %v", err)
	}
	for name, junk := range map[string][]byte{"empty": nil, "truncated": buf[:len(buf)-200], "other field": {0x10, 1}, "text": []byte(`{"person":"x"}`)} {
		if _, _, _, _, err := Stored(subj, nil, junk); err == nil {
			t.Errorf("%s: accepted as a batch", name)
		}
	}
	// Format 1: one record on the citizen's subject.
	s1, _ := Subject("gw-1", "CK")
	if id, ck, batch, got, err := Stored(s1, nil, []byte("x")); err != nil || id != "gw-1" || ck != "CK" || batch || len(got) != 1 {
		t.Fatalf("format 1: %v", err)
	}
	if _, _, _, err := ParseStoredSubject("jisr.audit.a.b." + BatchToken); err == nil {
		t.Fatal("a malformed batch subject was accepted")
	}
}

func sampleDecision() *decision.Decision {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return &decision.Decision{
		Time: now, Consumer: "tax", Provider: "cnss", Service: "jisr.cnss.v1.SocialSecurity", Method: "GetContributions",
		CKey: "CK", Purpose: "income-verification", LegalBasis: "mandate", Law: "CGI art. 214", Rule: "tax-contributions-check",
		Allowed: true, Reason: decision.ReasonAllowed, Fields: []string{"contributions", "employer.name"}, Code: codes.OK,
		Latency: 3 * time.Millisecond, TraceID: "0af7651916cd43dd8448eb211c80319c", VisibleAt: now.Add(720 * time.Hour),
	}
}
