package record_test

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/decision"
)

func bodyDecision() *decision.Decision {
	t := time.Date(2026, 11, 27, 20, 0, 0, 123456789, time.UTC)
	return &decision.Decision{
		Time: t, Consumer: "cnss", Provider: "civil-registry", Service: "jisr.civilregistry.v1.CivilRegistry",
		Method: "GetPerson", CKey: "ck_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", Purpose: "benefits", LegalBasis: "consent",
		Rule: "cnss-person", TokenID: "tok_0123456789abcdef", Allowed: true,
		Fields: []string{"person.names", "person.sex"}, Code: codes.OK, Latency: 1234567 * time.Nanosecond,
		TraceID: "0af7651916cd43dd8448eb211c80319c", FederationVersion: 7,
		VisibleAt: t.Add(time.Hour), Law: "Loi 09-08", Reason: "ALLOWED",
		ActorCKey: "ck_PARENT0123456789", AssistedBy: decision.AssistedGuardian,
	}
}

// Every field of a decision is set in bodyDecision, so that a field added
// to the decision (and to the record) without its line in AppendBody makes
// TestAppendBodyMatchesMarshal fail instead of vanishing from the log.
func TestBodyDecisionSetsEveryField(t *testing.T) {
	t.Parallel()
	v := reflect.ValueOf(bodyDecision()).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		if v.Field(i).IsZero() && f.Name != "Allowed" && f.Name != "Code" {
			t.Errorf("bodyDecision leaves Decision.%s unset: set it, and check AppendBody writes it", f.Name)
		}
	}
}

func checkBody(t *testing.T, d *decision.Decision) {
	t.Helper()
	want, werr := record.MarshalBody(record.FromDecision(d))
	got, gerr := record.AppendBody(nil, d)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("AppendBody error %v, MarshalBody error %v", gerr, werr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendBody\n %x\nMarshalBody\n %x", got, want)
	}
}

// TestAppendBodyMatchesMarshal: the hand-written encoder writes exactly the
// bytes of the protobuf Record (the Merkle leaf hashes them).
func TestAppendBodyMatchesMarshal(t *testing.T) {
	t.Parallel()
	checkBody(t, bodyDecision())
	checkBody(t, &decision.Decision{})
	d := bodyDecision()
	d.Allowed, d.Code, d.Reason, d.Fields = false, codes.PermissionDenied, "CONSENT_REVOKED", nil
	d.Latency = -1500 * time.Millisecond
	d.Time = time.Unix(-5, -7).UTC()
	d.VisibleAt = d.Time.Add(time.Hour)
	checkBody(t, d)
	d.Fields = []string{"", "x"}
	d.Law = "Law 09-08"
	checkBody(t, d)
	d.Purpose = "\xff" // not UTF-8: both refuse
	checkBody(t, d)
	d = bodyDecision()
	d.Fields = []string{"a\xc0"}
	checkBody(t, d)
}

func FuzzAppendBody(f *testing.F) {
	f.Add("cnss", "ck", "person.names", int64(1764273600), int64(5), int64(1234), uint32(0), uint64(0), true, int64(0))
	f.Add("", "", "", int64(0), int64(0), int64(-1), uint32(16), uint64(1<<40), false, int64(-3600))
	f.Fuzz(func(t *testing.T, s, ck, field string, secs, nanos, lat int64, code uint32, fv uint64, allowed bool, vis int64) {
		d := &decision.Decision{
			Time: time.Unix(secs, nanos), Consumer: s, Provider: s + "p", CKey: ck, Reason: field, TokenID: ck,
			Fields: []string{field, s}, Code: codes.Code(code), Latency: time.Duration(lat), FederationVersion: fv,
			Allowed: allowed, VisibleAt: time.Unix(secs+vis, 0),
		}
		checkBody(t, d)
	})
}

func BenchmarkMarshalBody(b *testing.B) {
	d := bodyDecision()
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := record.MarshalBody(record.FromDecision(d)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := record.AppendBody(nil, d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
