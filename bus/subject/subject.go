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
	QueryPrefix    = "jisr.q"     // jisr.q.<consumer>.<provider>.<service>.<method>.<ckey>
	ProviderPrefix = "jisr.p"     // jisr.p.<provider>.<service>.<method>.<ckey>
	AuditPrefix    = "jisr.audit" // jisr.audit.<ckey>
	InboxPrefix    = "_INBOX"     // _INBOX.<identity>.>
)

// Queue groups.
const (
	GatewayQueue = "jisr-gateway"
)

const maxToken = 128

// Sentinel errors.
var (
	ErrBadToken   = errors.New("subject: invalid subject token")
	ErrBadSubject = errors.New("subject: malformed subject")
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

// AllQueries is the subscription of the gateway: every query subject.
func AllQueries() string { return QueryPrefix + ".>" }

// ProviderQueries is the subscription of a provider adapter.
func ProviderQueries(provider string) string { return ProviderPrefix + "." + provider + ".>" }

// ConsumerQueries is what a member may publish on.
func ConsumerQueries(consumer string) string { return QueryPrefix + "." + consumer + ".>" }

// Inbox is the reply-subject prefix of an identity (member name or "gateway").
func Inbox(identity string) string { return InboxPrefix + "." + identity }

// Audit is the audit subject of one citizen.
func Audit(ckey string) (string, error) {
	if err := CheckToken(ckey); err != nil {
		return "", err
	}
	return AuditPrefix + "." + ckey, nil
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
