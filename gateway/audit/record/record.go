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
