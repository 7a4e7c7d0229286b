package notify

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// slow is what notice replaces: Of(record.Parse(b)) and visible_at.
func slow(b []byte) (n Notification, visible time.Time, ok, bad bool) {
	r, err := record.Parse(b)
	if err != nil {
		return n, visible, false, true
	}
	n, ok = Of(r)
	return n, r.GetVisibleAt().AsTime(), ok, false
}

func noticeRecords(t testing.TB) [][]byte {
	t.Helper()
	now := time.Date(2026, 11, 27, 22, 0, 0, 123456789, time.UTC)
	prev := bytes.Repeat([]byte{7}, 32)
	allowed := &auditv1.Record{
		LogId: "gw-1", LeafIndex: 5, PrevLeafHash: prev, Time: timestamppb.New(now),
		Consumer: "cnss", Provider: "civil-registry", Service: "jisr.civilregistry.v1.CivilRegistry", Method: "GetPerson",
		Ckey: "ck-1", Purpose: "amo-enrolment", LegalBasis: "consent", Law: "law 09-08", Rule: "r1", TokenId: "jti",
		Decision: auditv1.Decision_DECISION_ALLOWED, Reason: "ALLOWED", Fields: []string{"person.eid", "", "person.names.latin"},
		StatusCode: 0, Latency: durationpb.New(3 * time.Millisecond), TraceId: "abc", VisibleAt: timestamppb.New(now.Add(time.Hour)),
		FederationVersion: 3,
	}
	var out [][]byte
	add := func(edit func(r *auditv1.Record)) {
		r := &auditv1.Record{}
		*r = auditv1.Record{}
		b, _ := record.Marshal(allowed)
		if err := protoUnmarshal(b, r); err != nil {
			t.Fatal(err)
		}
		edit(r)
		b, err := record.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	add(func(*auditv1.Record) {})
	add(func(r *auditv1.Record) { r.Fields = nil; r.Law = ""; r.VisibleAt = nil })
	add(func(r *auditv1.Record) { r.Decision = auditv1.Decision_DECISION_REFUSED })
	add(func(r *auditv1.Record) { r.Provider = subject.ConsentProvider })
	add(func(r *auditv1.Record) { r.Consumer = "" })
	add(func(r *auditv1.Record) { r.Ckey = subject.NoCKey })
	add(func(r *auditv1.Record) { r.Ckey = "" })
	add(func(r *auditv1.Record) { r.LeafIndex, r.PrevLeafHash = 0, nil })
	add(func(r *auditv1.Record) { r.PrevLeafHash = prev[:31] })
	add(func(r *auditv1.Record) { r.Time = nil })
	add(func(r *auditv1.Record) { r.LogId = "gw.1" })
	add(func(r *auditv1.Record) { r.Time = timestamppb.New(time.Unix(-5, 7)) })
	// Bytes record.Marshal would not write: a second time merging into
	// the first, a field of another wire type, a string that is not UTF-8,
	// a truncated record.
	b := out[0]
	out = append(out,
		append(append([]byte{}, b...), 0x22, 0x02, 0x10, 0x05), // time again: nanos 5
		append(append([]byte{}, b...), 0x28, 0x01),             // consumer as a varint: unknown
		append(append([]byte{}, b...), 0x2a, 0x01, 0xff),       // consumer not UTF-8
		append(append([]byte{}, b...), 0x6a, 0x01, 0xff),       // rule not UTF-8
		b[:len(b)-1],
		nil,
	)
	return out
}

func TestNoticeIsOfParse(t *testing.T) {
	var in interner
	for i, b := range noticeRecords(t) {
		for range 2 { // the second time from the interner
			n, v, ok, bad := notice(b, &in)
			wn, wv, wok, wbad := slow(b)
			if !reflect.DeepEqual(n, wn) || !v.Equal(wv) || ok != wok || bad != wbad {
				t.Fatalf("record %d:\n got %+v %v %v %v\nwant %+v %v %v %v", i, n, v, ok, bad, wn, wv, wok, wbad)
			}
		}
	}
}

func FuzzNoticeIsOfParse(f *testing.F) {
	for _, b := range noticeRecords(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var in interner
		n, v, ok, bad := notice(b, &in)
		wn, wv, wok, wbad := slow(b)
		if bad != wbad || !bad && (!reflect.DeepEqual(n, wn) || !v.Equal(wv) || ok != wok) {
			t.Fatalf("got %+v %v %v %v\nwant %+v %v %v %v", n, v, ok, bad, wn, wv, wok, wbad)
		}
	})
}

func BenchmarkNotice(b *testing.B) {
	rec := noticeRecords(b)[0]
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			slow(rec)
		}
	})
	b.Run("notice", func(b *testing.B) {
		var in interner
		b.ReportAllocs()
		for b.Loop() {
			notice(rec, &in)
		}
	})
}

func protoUnmarshal(b []byte, r *auditv1.Record) error { return proto.Unmarshal(b, r) }

func BenchmarkLogNotify(b *testing.B) {
	n, _, _, _ := slow(noticeRecords(b)[0])
	l := Log{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	b.ReportAllocs()
	for b.Loop() {
		_ = l.Notify(context.Background(), n)
	}
}
