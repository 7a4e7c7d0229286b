package notify

import (
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jisr-bus/jisr/bus/subject"
)

// notice reads the notification of a stored record (record format: an
// auditv1.Record) straight from its bytes: Of(record.Parse(b)) and the
// record's visible_at, without building the record. It reads every field
// as proto.Unmarshal does (the last occurrence wins, a message field merges,
// a field of another wire type is an unknown field) and refuses (ok false,
// bad true) every record record.Parse refuses — a malformed field, a string
// that is not UTF-8, a bad log id, a previous hash of the wrong size, no
// time — so that the caller can fall back on record.Parse to report it.
// The member-chosen names (consumer, provider, purpose, fields…) come from
// in: the gateway's records repeat the same few.
func notice(b []byte, in *interner) (n Notification, visible time.Time, ok, bad bool) {
	var (
		logID, ckey, consumer, provider, service, method, purpose, basis, law []byte
		fields                                                                [][]byte
		leaf, verdict                                                         uint64
		prevLen                                                               int
		t, v, latency                                                         stamp
		hasTime                                                               bool
		fieldsBuf                                                             [8][]byte
	)
	fields = fieldsBuf[:0]
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return n, visible, false, true
		}
		b = b[k:]
		var val []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			val, k = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, k = protowire.ConsumeVarint(b)
		default:
			k = protowire.ConsumeFieldValue(num, typ, b)
		}
		if k < 0 {
			return n, visible, false, true
		}
		b = b[k:]
		switch {
		case typ == protowire.VarintType:
			switch num {
			case 2:
				leaf = x
			case 15:
				verdict = x
			}
		case typ != protowire.BytesType:
		case num == 3:
			prevLen = len(val)
		case num == 4 || num == 19 || num == 21:
			s := &t
			switch num {
			case 19:
				s = &latency
			case 21:
				s = &v
			}
			if !s.merge(val) {
				return n, visible, false, true
			}
			hasTime = hasTime || num == 4
		case num == 1 || num >= 5 && num <= 14 || num == 16 || num == 17 || num == 20 || num == 50 || num == 51:
			if !utf8.Valid(val) {
				return n, visible, false, true
			}
			switch num {
			case 1:
				logID = val
			case 5:
				consumer = val
			case 6:
				provider = val
			case 7:
				service = val
			case 8:
				method = val
			case 9:
				ckey = val
			case 10:
				purpose = val
			case 11:
				basis = val
			case 12:
				law = val
			case 17:
				fields = append(fields, val)
			}
		}
	}
	switch {
	case subject.CheckToken(string(logID)) != nil,
		leaf > 0 && prevLen != 32 || leaf == 0 && prevLen != 0,
		!hasTime:
		return n, visible, false, true
	}
	visible = v.time()
	if verdict != 1 || string(provider) == subject.ConsentProvider || len(consumer) == 0 || len(provider) == 0 ||
		len(ckey) == 0 || string(ckey) == subject.NoCKey {
		return n, visible, false, false
	}
	n = Notification{
		CKey: string(ckey), Time: t.time(), Consumer: in.get(consumer), Provider: in.get(provider),
		Service: in.get(service), Method: in.get(method), Purpose: in.get(purpose),
		LegalBasis: in.get(basis), Law: in.get(law),
	}
	// logID is the caller's record: appended to, it would be written over.
	var rec [64]byte
	n.Record = string(strconv.AppendUint(append(append(rec[:0], logID...), '/'), leaf, 10))
	if len(fields) > 0 {
		n.Fields = make([]string, len(fields))
		for i, f := range fields {
			n.Fields[i] = in.get(f)
		}
	}
	return n, visible, true, false
}

// stamp is a google.protobuf.Timestamp (or Duration) as read.
type stamp struct {
	secs  int64
	nanos int32
}

// merge reads one occurrence of the message into s.
func (s *stamp) merge(b []byte) bool {
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return false
		}
		b = b[k:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			x, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return false
			}
			if num == 1 {
				s.secs = int64(x)
			} else {
				s.nanos = int32(x)
			}
			b = b[k:]
			continue
		}
		k = protowire.ConsumeFieldValue(num, typ, b)
		if k < 0 {
			return false
		}
		b = b[k:]
	}
	return true
}

// time is timestamppb's AsTime.
func (s stamp) time() time.Time { return time.Unix(s.secs, int64(s.nanos)).UTC() }

// interner hands out one string per distinct value, up to a bound (then
// a fresh one each time). One goroutine uses it.
type interner struct{ m map[string]string }

const internMax = 4096

func (in *interner) get(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if in.m == nil {
		in.m = map[string]string{}
	}
	if len(in.m) < internMax {
		in.m[s] = s
	}
	return s
}
