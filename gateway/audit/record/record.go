// Package record turns the gateway's decisions into audit records and back:
// the protobuf Record, its stored bytes, its leaf hash, and the NATS subject
// and message id it is stored under.
//
// Invariant: a Record built here carries only what decision.Decision carries
// — a ckey, never an eID; a token's jti, never the token; field paths, never
// values — and its stored bytes are exactly the bytes the Merkle leaf hashes.
package record

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Sentinel errors.
var (
	ErrBadRecord  = errors.New("record: not a valid audit record")
	ErrBadSubject = errors.New("record: not an audit subject")
)

// FromDecision builds the record of a decision. The chaining fields (log id,
// leaf index, previous hash) are set by the log that appends it.
func FromDecision(d *decision.Decision) *auditv1.Record {
	r := &auditv1.Record{
		Time:       timestamppb.New(d.Time),
		Consumer:   d.Consumer,
		Provider:   d.Provider,
		Service:    d.Service,
		Method:     d.Method,
		Ckey:       d.CKey,
		Purpose:    d.Purpose,
		LegalBasis: d.LegalBasis,
		Law:        d.Law,
		Rule:       d.Rule,
		TokenId:    d.TokenID,
		Decision:   auditv1.Decision_DECISION_REFUSED,
		Reason:     d.Reason,
		Fields:     append([]string(nil), d.Fields...),
		StatusCode: uint32(d.Code),
		Latency:    durationpb.New(d.Latency),
		TraceId:    d.TraceID,

		FederationVersion: d.FederationVersion,
		ActorCkey:         d.ActorCKey,
		AssistedBy:        d.AssistedBy,
	}
	if d.Allowed {
		r.Decision = auditv1.Decision_DECISION_ALLOWED
	}
	visible := d.VisibleAt
	if visible.IsZero() || visible.Before(d.Time) {
		visible = d.Time
	}
	r.VisibleAt = timestamppb.New(visible)
	return r
}

// Marshal returns the bytes a record is stored (and hashed) as.
func Marshal(r *auditv1.Record) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("record: marshal: %w", err)
	}
	return b, nil
}

// Parse reads a stored record and checks the fields a reader relies on.
func Parse(b []byte) (*auditv1.Record, error) {
	r := &auditv1.Record{}
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if subject.CheckToken(r.GetLogId()) != nil {
		return nil, fmt.Errorf("%w: bad log id", ErrBadRecord)
	}
	if r.GetLeafIndex() > 0 && len(r.GetPrevLeafHash()) != 32 || r.GetLeafIndex() == 0 && len(r.GetPrevLeafHash()) != 0 {
		return nil, fmt.Errorf("%w: leaf %d has a previous hash of %d bytes", ErrBadRecord, r.GetLeafIndex(), len(r.GetPrevLeafHash()))
	}
	if r.GetTime() == nil {
		return nil, fmt.Errorf("%w: no time", ErrBadRecord)
	}
	return r, nil
}

// Subject is where a record of format 1 was stored: jisr.audit.<log>.<ckey>
// (format 2 stores batches on BatchSubject).
func Subject(logID, ckey string) (string, error) {
	s, err := subject.Audit(logID, ckey)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadSubject, err)
	}
	return s, nil
}

// ParseSubject splits an audit subject into its log id and ckey ("" for subject.NoCKey).
func ParseSubject(s string) (logID, ckey string, err error) {
	logID, ckey, err = subject.ParseAudit(s)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrBadSubject, err)
	}
	return logID, ckey, nil
}

// LogFilter selects every record of one log: jisr.audit.<log>.>.
func LogFilter(logID string) string { return subject.AuditPrefix + "." + logID + ".>" }

// CitizenFilter selects every record about one citizen, in every log.
func CitizenFilter(ckey string) (string, error) {
	f, err := subject.AuditCitizen(ckey)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadSubject, err)
	}
	return f, nil
}

// AllFilter selects every record.
func AllFilter() string { return subject.AuditPrefix + ".>" }

// CheckpointSubject is where a log's checkpoints are published.
func CheckpointSubject(logID string) (string, error) {
	s, err := subject.Checkpoint(logID)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadSubject, err)
	}
	return s, nil
}

// ParseCheckpointSubject returns the log of a checkpoint subject.
func ParseCheckpointSubject(s string) (string, error) {
	id, err := subject.ParseCheckpoint(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadSubject, err)
	}
	return id, nil
}

// MsgID is the JetStream deduplication id of a leaf: a retried publish of the
// same leaf is stored once, and two different records claiming the same leaf
// of a log cannot both be stored within the deduplication window.
func MsgID(logID string, leaf uint64) string {
	return logID + ":" + strconv.FormatUint(leaf, 10)
}

// Format 2: one message of the audit stream per group commit (a batch).
const (
	// Format is the record format this package writes: 2 (a batch of
	// records per message). Format 1 (one record per message, on the
	// citizen's subject) is still read.
	Format = 2
	// BatchToken is the last token of a batch's subject,
	// jisr.audit.<log>._batch. It is never a ckey (those are base32/base64 of
	// an HMAC, without '_' first).
	BatchToken = "_batch"
	// Headers of a batch message.
	HeaderFormat    = "Jisr-Audit-Format"
	HeaderFirstLeaf = "Jisr-Audit-First-Leaf"
	HeaderCount     = "Jisr-Audit-Count"
	// MaxBatchRecords is the most records one batch carries (the log
	// refuses a larger WithMaxBatch): readers may number a record by its
	// message's sequence and its place in the batch in 11 bits.
	MaxBatchRecords = 2048
)

// ErrBadBatch: a message on a batch subject that is not a batch of records.
var ErrBadBatch = errors.New("record: not a valid batch of audit records")

// BatchSubject is where a log's batches are stored: jisr.audit.<log>._batch.
func BatchSubject(logID string) (string, error) {
	if err := subject.CheckToken(logID); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadSubject, err)
	}
	return subject.AuditPrefix + "." + logID + "." + BatchToken, nil
}

// ParseStoredSubject splits a subject of the audit stream: its log, and
// whether it holds a batch (format 2) or one record about ckey (format 1).
func ParseStoredSubject(s string) (logID, ckey string, batch bool, err error) {
	if strings.HasSuffix(s, "."+BatchToken) {
		id := strings.TrimSuffix(strings.TrimPrefix(s, subject.AuditPrefix+"."), "."+BatchToken)
		if !strings.HasPrefix(s, subject.AuditPrefix+".") || subject.CheckToken(id) != nil {
			return "", "", false, fmt.Errorf("%w: %q", ErrBadSubject, s)
		}
		return id, "", true, nil
	}
	logID, ckey, err = ParseSubject(s)
	return logID, ckey, false, err
}

// BatchMsgID is the JetStream deduplication id of a batch, by its first
// leaf: a retried publish of the batch is stored once, and two different
// batches starting at the same leaf of a log cannot both be stored within
// the deduplication window.
func BatchMsgID(logID string, first uint64) string {
	return logID + ":b" + strconv.FormatUint(first, 10)
}

// AppendBatch appends one record's stored bytes to a batch being built in
// buf (the encoding of RecordBatch, field by field).
func AppendBatch(buf, rec []byte) []byte {
	buf = protowire.AppendTag(buf, 1, protowire.BytesType)
	return protowire.AppendBytes(buf, rec)
}

// BatchOverhead is how many bytes AppendBatch adds around a record of n bytes.
func BatchOverhead(n int) int { return 1 + protowire.SizeVarint(uint64(n)) }

// SplitBatch returns the records of a batch's payload, as slices of data
// (not copied), in order. It accepts exactly the encoding AppendBatch writes.
func SplitBatch(data []byte) ([][]byte, error) {
	var recs [][]byte
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return nil, fmt.Errorf("%w: unexpected field", ErrBadBatch)
		}
		data = data[n:]
		v, n := protowire.ConsumeBytes(data)
		if n < 0 {
			return nil, fmt.Errorf("%w: truncated", ErrBadBatch)
		}
		recs = append(recs, v[:len(v):len(v)])
		data = data[n:]
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadBatch)
	}
	return recs, nil
}

// Stored returns the records one message of the audit stream holds, with
// its log: a batch's records (format 2; the count header, when present, must
// match), or the message's single record (format 1; ckey is the citizen its
// subject names). The records are not parsed.
func Stored(subj string, header map[string][]string, data []byte) (logID, ckey string, batch bool, recs [][]byte, err error) {
	logID, ckey, batch, err = ParseStoredSubject(subj)
	if err != nil {
		return "", "", false, nil, err
	}
	if !batch {
		return logID, ckey, false, [][]byte{data}, nil
	}
	if recs, err = SplitBatch(data); err != nil {
		return logID, "", true, nil, err
	}
	if c := headerValue(header, HeaderCount); c != "" && c != strconv.Itoa(len(recs)) {
		return logID, "", true, nil, fmt.Errorf("%w: header %s is %s, the batch holds %d records", ErrBadBatch, HeaderCount, c, len(recs))
	}
	return logID, "", true, recs, nil
}

func headerValue(h map[string][]string, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// MarshalBody returns a record's stored bytes without its chaining fields
// (log_id, leaf_index, prev_leaf_hash), which must be unset. AppendChained
// completes it once the record's place in the log is known: the result is
// exactly Marshal of the whole record, because deterministic marshalling
// writes fields in field-number order and the chaining fields come first.
// This lets the costly part run on the caller's goroutine, in parallel,
// and only the short head in the log's sequencer.
func MarshalBody(r *auditv1.Record) ([]byte, error) {
	if r.GetLogId() != "" || r.GetLeafIndex() != 0 || len(r.GetPrevLeafHash()) != 0 {
		return nil, fmt.Errorf("record: marshal: the chaining fields are set")
	}
	return Marshal(r)
}

// ChainedSize is the length of AppendChained's output for a body of n bytes.
func ChainedSize(logID string, leaf uint64, prev []byte, n int) int {
	s := n
	if logID != "" {
		s += 1 + protowire.SizeBytes(len(logID))
	}
	if leaf != 0 {
		s += 1 + protowire.SizeVarint(leaf)
	}
	if len(prev) != 0 {
		s += 1 + protowire.SizeBytes(len(prev))
	}
	return s
}

// AppendChained appends to buf the stored bytes of the record whose body
// (MarshalBody) is body, at leaf of log logID after prev.
func AppendChained(buf []byte, logID string, leaf uint64, prev, body []byte) []byte {
	if logID != "" {
		buf = protowire.AppendTag(buf, 1, protowire.BytesType)
		buf = protowire.AppendString(buf, logID)
	}
	if leaf != 0 {
		buf = protowire.AppendTag(buf, 2, protowire.VarintType)
		buf = protowire.AppendVarint(buf, leaf)
	}
	if len(prev) != 0 {
		buf = protowire.AppendTag(buf, 3, protowire.BytesType)
		buf = protowire.AppendBytes(buf, prev)
	}
	return append(buf, body...)
}
