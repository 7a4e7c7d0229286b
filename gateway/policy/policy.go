// Package policy applies the federation's access rules: which consumer may
// call which method of which provider, for which purposes, on which legal
// basis, releasing which fields.
//
// Invariant: deny by default — a query is allowed only by a rule that names
// its consumer, provider, service, method and purpose exactly.
package policy

import (
	"slices"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/decision"
)

type key struct{ consumer, provider, service, method string }

// Policy indexes the rules for the query path.
type Policy struct {
	rules map[key][]*federation.Rule
}

// New indexes the federation's rules.
func New(fed *federation.Federation) *Policy {
	p := &Policy{rules: map[key][]*federation.Rule{}}
	for _, r := range fed.Rules {
		for _, m := range r.Methods {
			k := key{r.Consumer, r.Provider, r.Service, m}
			p.rules[k] = append(p.rules[k], r)
		}
	}
	return p
}

// Check returns the rule that allows the query. With a consent token the
// rules needing one are preferred; without, only a mandate can allow it.
func (p *Policy) Check(consumer, provider, service, method, purpose string, hasToken bool) (*federation.Rule, error) {
	candidates := p.rules[key{consumer, provider, service, method}]
	if len(candidates) == 0 {
		return nil, decision.Refuse(codes.PermissionDenied, decision.ReasonNoRule,
			"no access rule lets %s call %s/%s of %s", consumer, service, method, provider)
	}
	var forPurpose []*federation.Rule
	for _, r := range candidates {
		if slices.Contains(r.Purposes, purpose) {
			forPurpose = append(forPurpose, r)
		}
	}
	if len(forPurpose) == 0 {
		return nil, decision.Refuse(codes.PermissionDenied, decision.ReasonPurposeNotAllowed,
			"the access rules for %s/%s do not cover this purpose (allowed: %s)", service, method, strings.Join(purposesOf(candidates), ", "))
	}
	for _, r := range forPurpose {
		if hasToken == (r.LegalBasis != federation.BasisMandate) {
			return r, nil
		}
	}
	if hasToken {
		// A token was sent but only a mandate applies: the mandate allows it.
		return forPurpose[0], nil
	}
	return nil, decision.Refuse(codes.Unauthenticated, decision.ReasonConsentRequired,
		"rule %s requires %s: send the citizen's consent token in jisr-consent metadata", forPurpose[0].Name, forPurpose[0].LegalBasis)
}

// purposesOf lists the purposes the rules allow, each once, in order.
func purposesOf(rules []*federation.Rule) []string {
	var out []string
	for _, r := range rules {
		for _, p := range r.Purposes {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}
