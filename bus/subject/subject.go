// Package subject builds and parses jisr's NATS subjects.
//
// Invariant: every subject this package returns has a fixed number of tokens
// and every token is a validated safe token (no '.', '*', '>', whitespace or
// non-ASCII), so no input can widen a subscription, reach another member's
// subject, or shift the ckey out of the last position. Parsing is as strict
// as building: ParseQuery accepts exactly what Query builds.
package subject

import (
	"errors"
	"fmt"
	"strings"
)

// Prefixes of jisr's subject spaces.
const (
	QueryPrefix      = "jisr.q"          // jisr.q.<consumer>.<provider>.<service>.<method>.<ckey>
	ProviderPrefix   = "jisr.p"          // jisr.p.<provider>.<service>.<method>.<ckey>
	AuditPrefix      = "jisr.audit"      // jisr.audit.<log>._batch: a batch of records of a gateway instance's audit log (format 1: jisr.audit.<log>.<ckey>, one record)
	CheckpointPrefix = "jisr.checkpoint" // jisr.checkpoint.<log>: the signed checkpoints of that log
	InboxPrefix      = "_INBOX"          // _INBOX.<identity>.>
)

// Queue groups.
const (
	GatewayQueue = "jisr-gateway"
)

// ProviderQueue is the queue group of a provider's adapters: each query is
// handled by one of the member's replicas.
func ProviderQueue(provider string) string { return "jisr-provider-" + provider }

const maxToken = 128

// Sentinel errors.
var (
	ErrBadToken   = errors.New("subject: invalid subject token")
	ErrBadSubject = errors.New("subject: malformed subject")
	// ErrBadReply: a reply subject outside the inbox it must be in.
	ErrBadReply = errors.New("subject: the reply subject is not in the expected inbox")
)

// CheckToken reports whether s may be used as one subject token.
func CheckToken(s string) error {
	if s == "" || len(s) > maxToken {
		return ErrBadToken
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' {
			return ErrBadToken
		}
	}
	return nil
}

// ServiceToken turns a full protobuf service name into its subject token:
// jisr.civilregistry.v1.CivilRegistry → jisr_civilregistry_v1_CivilRegistry.
func ServiceToken(fullName string) string {
	return strings.ReplaceAll(fullName, ".", "_")
}

// Query is the parsed form of a query subject.
type Query struct {
	Consumer, Provider string
	Service            string // service token (dots replaced by '_')
	Method             string
	CKey               string
}

// Subject renders q as jisr.q.<consumer>.<provider>.<service>.<method>.<ckey>.
func (q Query) Subject() (string, error) {
	if err := checkAll(q.Consumer, q.Provider, q.Service, q.Method, q.CKey); err != nil {
		return "", err
	}
	return QueryPrefix + "." + q.Consumer + "." + q.Provider + "." + q.Service + "." + q.Method + "." + q.CKey, nil
}

// ProviderSubject renders the subject the gateway forwards q on:
// jisr.p.<provider>.<service>.<method>.<ckey>.
func (q Query) ProviderSubject() (string, error) {
	if err := checkAll(q.Provider, q.Service, q.Method, q.CKey); err != nil {
		return "", err
	}
	return ProviderPrefix + "." + q.Provider + "." + q.Service + "." + q.Method + "." + q.CKey, nil
}

// ParseQuery parses a query subject.
func ParseQuery(s string) (Query, error) {
	t, err := split(s, QueryPrefix, 5)
	if err != nil {
		return Query{}, err
	}
	return Query{Consumer: t[0], Provider: t[1], Service: t[2], Method: t[3], CKey: t[4]}, nil
}

// ParseProvider parses a provider subject; Consumer is left empty.
func ParseProvider(s string) (Query, error) {
	t, err := split(s, ProviderPrefix, 4)
	if err != nil {
		return Query{}, err
	}
	return Query{Provider: t[0], Service: t[1], Method: t[2], CKey: t[3]}, nil
}

// CKey is the ckey of a query (jisr.q.…) or provider (jisr.p.…) subject:
// its last token, taken without validating the rest (for trace attributes on
// the hot path; ParseQuery and ParseProvider validate). It is "" for any
// other subject.
func CKey(s string) string {
	if !strings.HasPrefix(s, QueryPrefix+".") && !strings.HasPrefix(s, ProviderPrefix+".") {
		return ""
	}
	return s[strings.LastIndexByte(s, '.')+1:]
}

// AllQueries is the subscription of the gateway: every query subject.
func AllQueries() string { return QueryPrefix + ".>" }

// ProviderQueries is the subscription of a provider adapter.
func ProviderQueries(provider string) string { return ProviderPrefix + "." + provider + ".>" }

// ConsumerQueries is what a member may publish on.
func ConsumerQueries(consumer string) string { return QueryPrefix + "." + consumer + ".>" }

// Inbox is the reply-subject prefix of an identity (member name or "gateway").
func Inbox(identity string) string { return InboxPrefix + "." + identity }

// NoCKey is the ckey token of an audit record about no known citizen (a
// query refused before its payload named a valid eID). A ckey is base32 in
// upper case, so it is never "_".
const NoCKey = "_"

// Audit is the subject of one record of log (a gateway instance's name)
// about the citizen ckey ("" for NoCKey): jisr.audit.<log>.<ckey>. The log
// comes first so a gateway reads its own log with one filter, and the ckey
// last, as in every subject, so one citizen's records are jisr.audit.*.<ckey>.
func Audit(log, ckey string) (string, error) {
	if ckey == "" {
		ckey = NoCKey
	}
	if err := checkAll(log, ckey); err != nil {
		return "", err
	}
	return AuditPrefix + "." + log + "." + ckey, nil
}

// ParseAudit parses an audit subject; ckey is "" for NoCKey.
func ParseAudit(s string) (log, ckey string, err error) {
	t, err := split(s, AuditPrefix, 2)
	if err != nil {
		return "", "", err
	}
	if t[1] == NoCKey {
		t[1] = ""
	}
	return t[0], t[1], nil
}

// AuditLog selects every record of one log: jisr.audit.<log>.>.
func AuditLog(log string) (string, error) {
	if err := CheckToken(log); err != nil {
		return "", err
	}
	return AuditPrefix + "." + log + ".>", nil
}

// AuditCitizen selects every record about one citizen in every log:
// jisr.audit.*.<ckey>.
func AuditCitizen(ckey string) (string, error) {
	if err := CheckToken(ckey); err != nil || ckey == NoCKey {
		return "", ErrBadToken
	}
	return AuditPrefix + ".*." + ckey, nil
}

// Checkpoint is the subject of the checkpoints of one log: jisr.checkpoint.<log>.
func Checkpoint(log string) (string, error) {
	if err := CheckToken(log); err != nil {
		return "", err
	}
	return CheckpointPrefix + "." + log, nil
}

// ParseCheckpoint returns the log of a checkpoint subject.
func ParseCheckpoint(s string) (string, error) {
	t, err := split(s, CheckpointPrefix, 1)
	if err != nil {
		return "", err
	}
	return t[0], nil
}

// QueryConsumer returns the consumer token of a query subject (the first
// token after jisr.q), which NATS's permissions vouch for even when the rest
// of the subject is malformed.
func QueryConsumer(s string) (string, error) {
	rest, ok := strings.CutPrefix(s, QueryPrefix+".")
	if !ok {
		return "", fmt.Errorf("%w: want prefix %s", ErrBadSubject, QueryPrefix)
	}
	c, _, _ := strings.Cut(rest, ".")
	if err := CheckToken(c); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadSubject, err)
	}
	return c, nil
}

// CheckReply reports whether reply lies in identity's own inbox:
// _INBOX.<identity>.<token>[.<token>…], every token safe (no wildcards).
// A reply anywhere else was chosen to make its answerer publish where the
// asker itself may not.
func CheckReply(reply, identity string) error {
	if CheckToken(identity) != nil {
		return ErrBadReply
	}
	rest, ok := strings.CutPrefix(reply, Inbox(identity)+".")
	if !ok || len(reply) > 512 {
		return ErrBadReply
	}
	for t := range strings.SplitSeq(rest, ".") {
		if CheckToken(t) != nil {
			return ErrBadReply
		}
	}
	return nil
}

func checkAll(tokens ...string) error {
	for _, t := range tokens {
		if err := CheckToken(t); err != nil {
			return err
		}
	}
	return nil
}

func split(s, prefix string, n int) ([]string, error) {
	rest, ok := strings.CutPrefix(s, prefix+".")
	if !ok {
		return nil, fmt.Errorf("%w: want prefix %s", ErrBadSubject, prefix)
	}
	t := strings.Split(rest, ".")
	if len(t) != n {
		return nil, fmt.Errorf("%w: want %d tokens after %s, got %d", ErrBadSubject, n, prefix, len(t))
	}
	if err := checkAll(t...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSubject, err)
	}
	return t, nil
}
