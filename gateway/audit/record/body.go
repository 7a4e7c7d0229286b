package record

import (
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jisr-bus/jisr/gateway/decision"
)

// AppendBody appends to buf the bytes MarshalBody(FromDecision(d)) returns,
// without building the protobuf Record: it writes the fields in field-number
// order as deterministic marshalling does, and refuses a string that is not
// UTF-8 as marshalling does. The audit log calls it on every decision;
// TestAppendBodyMatchesMarshal and FuzzAppendBody hold it to MarshalBody.
func AppendBody(buf []byte, d *decision.Decision) ([]byte, error) {
	for _, s := range [...]string{d.Consumer, d.Provider, d.Service, d.Method, d.CKey, d.Purpose,
		d.LegalBasis, d.Law, d.Rule, d.TokenID, d.Reason, d.TraceID, d.ActorCKey, d.AssistedBy} {
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("record: marshal: a string field is not valid UTF-8")
		}
	}
	n := 96 // tags, lengths, times, numbers
	for _, s := range [...]string{d.Consumer, d.Provider, d.Service, d.Method, d.CKey, d.Purpose,
		d.LegalBasis, d.Law, d.Rule, d.TokenID, d.Reason, d.TraceID, d.ActorCKey, d.AssistedBy} {
		n += len(s)
	}
	for _, s := range d.Fields {
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("record: marshal: a string field is not valid UTF-8")
		}
		n += len(s) + 3
	}
	buf = slices.Grow(buf, n)
	buf = appendTime(buf, 4, d.Time)
	buf = appendString(buf, 5, d.Consumer)
	buf = appendString(buf, 6, d.Provider)
	buf = appendString(buf, 7, d.Service)
	buf = appendString(buf, 8, d.Method)
	buf = appendString(buf, 9, d.CKey)
	buf = appendString(buf, 10, d.Purpose)
	buf = appendString(buf, 11, d.LegalBasis)
	buf = appendString(buf, 12, d.Law)
	buf = appendString(buf, 13, d.Rule)
	buf = appendString(buf, 14, d.TokenID)
	verdict := uint64(2) // DECISION_REFUSED
	if d.Allowed {
		verdict = 1 // DECISION_ALLOWED
	}
	buf = protowire.AppendTag(buf, 15, protowire.VarintType)
	buf = protowire.AppendVarint(buf, verdict)
	buf = appendString(buf, 16, d.Reason)
	for _, f := range d.Fields { // repeated: empty elements are written too
		buf = protowire.AppendTag(buf, 17, protowire.BytesType)
		buf = protowire.AppendString(buf, f)
	}
	if c := uint32(d.Code); c != 0 {
		buf = protowire.AppendTag(buf, 18, protowire.VarintType)
		buf = protowire.AppendVarint(buf, uint64(c))
	}
	buf = appendSecondsNanos(buf, 19, int64(d.Latency/time.Second), int32(d.Latency%time.Second))
	buf = appendString(buf, 20, d.TraceID)
	visible := d.VisibleAt
	if visible.IsZero() || visible.Before(d.Time) {
		visible = d.Time
	}
	buf = appendTime(buf, 21, visible)
	if v := d.FederationVersion; v != 0 {
		buf = protowire.AppendTag(buf, 40, protowire.VarintType)
		buf = protowire.AppendVarint(buf, v)
	}
	buf = appendString(buf, 50, d.ActorCKey)
	buf = appendString(buf, 51, d.AssistedBy)
	return buf, nil
}

func appendString(buf []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return buf
	}
	buf = protowire.AppendTag(buf, num, protowire.BytesType)
	return protowire.AppendString(buf, s)
}

// appendTime writes t as a google.protobuf.Timestamp (timestamppb.New).
func appendTime(buf []byte, num protowire.Number, t time.Time) []byte {
	return appendSecondsNanos(buf, num, t.Unix(), int32(t.Nanosecond()))
}

// appendSecondsNanos writes a present Timestamp or Duration message.
func appendSecondsNanos(buf []byte, num protowire.Number, secs int64, nanos int32) []byte {
	n := 0
	if secs != 0 {
		n += 1 + protowire.SizeVarint(uint64(secs))
	}
	if nanos != 0 {
		n += 1 + protowire.SizeVarint(uint64(int64(nanos)))
	}
	buf = protowire.AppendTag(buf, num, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(n))
	if secs != 0 {
		buf = protowire.AppendTag(buf, 1, protowire.VarintType)
		buf = protowire.AppendVarint(buf, uint64(secs))
	}
	if nanos != 0 {
		buf = protowire.AppendTag(buf, 2, protowire.VarintType)
		buf = protowire.AppendVarint(buf, uint64(int64(nanos)))
	}
	return buf
}
