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

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// NoCKey is the subject token of records without a citizen key (a query
// refused before its payload named a valid citizen). A ckey is base32 in
// upper case, so it can never be "_".
const NoCKey = "_"

// CheckpointPrefix is the subject space of the checkpoint stream:
// jisr.checkpoint.<log>.
const CheckpointPrefix = "jisr.checkpoint"

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

// Subject is where a record is stored: jisr.audit.<log>.<ckey>.
func Subject(logID, ckey string) (string, error) {
	if ckey == "" {
		ckey = NoCKey
	}
	if err := subject.CheckToken(logID); err != nil {
		return "", fmt.Errorf("%w: log id: %w", ErrBadSubject, err)
	}
	if err := subject.CheckToken(ckey); err != nil {
		return "", fmt.Errorf("%w: ckey: %w", ErrBadSubject, err)
	}
	return subject.AuditPrefix + "." + logID + "." + ckey, nil
}

// ParseSubject splits an audit subject into its log id and ckey ("" for NoCKey).
func ParseSubject(s string) (logID, ckey string, err error) {
	rest, ok := strings.CutPrefix(s, subject.AuditPrefix+".")
	t := strings.Split(rest, ".")
	if !ok || len(t) != 2 || subject.CheckToken(t[0]) != nil || subject.CheckToken(t[1]) != nil {
		return "", "", fmt.Errorf("%w: %q", ErrBadSubject, s)
	}
	if t[1] == NoCKey {
		t[1] = ""
	}
	return t[0], t[1], nil
}

// LogFilter selects every record of one log: jisr.audit.<log>.>.
func LogFilter(logID string) string { return subject.AuditPrefix + "." + logID + ".>" }

// CitizenFilter selects every record about one citizen, in every log:
// jisr.audit.*.<ckey>.
func CitizenFilter(ckey string) (string, error) {
	if err := subject.CheckToken(ckey); err != nil || ckey == NoCKey {
		return "", fmt.Errorf("%w: ckey", ErrBadSubject)
	}
	return subject.AuditPrefix + ".*." + ckey, nil
}

// AllFilter selects every record.
func AllFilter() string { return subject.AuditPrefix + ".>" }

// CheckpointSubject is where a log's checkpoints are published.
func CheckpointSubject(logID string) (string, error) {
	if err := subject.CheckToken(logID); err != nil {
		return "", fmt.Errorf("%w: log id: %w", ErrBadSubject, err)
	}
	return CheckpointPrefix + "." + logID, nil
}

// MsgID is the JetStream deduplication id of a leaf: a retried publish of the
// same leaf is stored once, and two different records claiming the same leaf
// of a log cannot both be stored within the deduplication window.
func MsgID(logID string, leaf uint64) string {
	return logID + ":" + strconv.FormatUint(leaf, 10)
}
