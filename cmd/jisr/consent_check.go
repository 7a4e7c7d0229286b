package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/events"
)

// checkGrant checks a grant against the federation's access rules before a
// token is minted, so that a token the gateway would always refuse is never
// made: the consumer must be allowed the service by a rule that needs a
// token, every method and the purpose must be one such rule's, and the legal
// basis must be that rule's. basisSet says whether --basis was given; when it
// was not, the basis is taken from the matching rule. It returns the rule.
func checkGrant(fed *federation.Federation, req *consent.GrantRequest, basisSet bool) (*federation.Rule, error) {
	if req.Service == events.Service {
		return nil, checkEventGrant(fed, req, basisSet)
	}
	var forService []*federation.Rule
	for _, r := range fed.Rules {
		if r.Consumer == req.To && r.Service == req.Service && r.LegalBasis != federation.BasisMandate {
			forService = append(forService, r)
		}
	}
	if len(forService) == 0 {
		return nil, fmt.Errorf("no access rule lets %s call %s with a consent token (%s); --force mints it anyway", req.To, req.Service, rulesFor(fed, req.To))
	}
	var covering []*federation.Rule
	for _, r := range forService {
		if !slices.ContainsFunc(req.Methods, func(m string) bool { return !slices.Contains(r.Methods, m) }) {
			covering = append(covering, r)
		}
	}
	if len(covering) == 0 {
		return nil, fmt.Errorf("no access rule lets %s call all of %s on %s (%s); --force mints it anyway",
			req.To, strings.Join(req.Methods, ","), req.Service, describe(forService, func(r *federation.Rule) string { return strings.Join(r.Methods, ",") }))
	}
	var matching []*federation.Rule
	for _, r := range covering {
		if slices.Contains(r.Purposes, req.Purpose) {
			matching = append(matching, r)
		}
	}
	if len(matching) == 0 {
		return nil, fmt.Errorf("purpose %q is not allowed for %s on %s (%s); --force mints it anyway",
			req.Purpose, req.To, req.Service, describe(covering, func(r *federation.Rule) string { return strings.Join(r.Purposes, ",") }))
	}
	if !basisSet {
		req.LegalBasis = matching[0].LegalBasis
		return matching[0], nil
	}
	for _, r := range matching {
		if r.LegalBasis == req.LegalBasis {
			return r, nil
		}
	}
	return nil, fmt.Errorf("rule %s requires legal basis %s, not %s: use --basis %s or leave --basis out (--force mints it anyway)",
		matching[0].Name, matching[0].LegalBasis, req.LegalBasis, matching[0].LegalBasis)
}

// describe lists rules as "rule NAME allows X; …".
func describe(rules []*federation.Rule, what func(*federation.Rule) string) string {
	parts := make([]string, len(rules))
	for i, r := range rules {
		parts[i] = "rule " + r.Name + " allows " + what(r)
	}
	return strings.Join(parts, "; ")
}

// rulesFor names the services a consumer may call with a token.
func rulesFor(fed *federation.Federation, consumer string) string {
	var svcs []string
	for _, r := range fed.Rules {
		if r.Consumer == consumer && r.LegalBasis != federation.BasisMandate && !slices.Contains(svcs, r.Service) {
			svcs = append(svcs, r.Service)
		}
	}
	if len(svcs) == 0 {
		return "it may call no service with a token"
	}
	return "with a token it may call " + strings.Join(svcs, ", ")
}

// checkEventGrant checks a grant for life events (--service
// jisr.events.v1.EventSink, --methods the event types) against the event
// rules on consent (docs/events.md): one rule must deliver every type to
// the consumer for the purpose, and the fields, when given, must be the
// rule's; left out, they are the rule's, so the grant names what the
// citizen agreed to release.
func checkEventGrant(fed *federation.Federation, req *consent.GrantRequest, basisSet bool) error {
	if basisSet && req.LegalBasis != federation.BasisConsent {
		return fmt.Errorf("event deliveries rest on consent, not %s (--force mints it anyway)", req.LegalBasis)
	}
	var names []string
	for _, r := range fed.EventRules {
		if r.Consumer != req.To || r.LegalBasis != federation.BasisConsent {
			continue
		}
		names = append(names, r.Name)
		if r.Purpose != req.Purpose || slices.ContainsFunc(req.Methods, func(m string) bool { return !slices.Contains(r.Events, m) }) {
			continue
		}
		if slices.ContainsFunc(req.Fields, func(f string) bool { return !slices.Contains(r.Fields, f) }) {
			return fmt.Errorf("event rule %s releases only %s (--force mints it anyway)", r.Name, strings.Join(r.Fields, ","))
		}
		if len(req.Fields) == 0 {
			req.Fields = slices.Clone(r.Fields)
		}
		req.LegalBasis = federation.BasisConsent
		return nil
	}
	if len(names) == 0 {
		return fmt.Errorf("no event rule delivers events to %s on consent (--force mints it anyway)", req.To)
	}
	return fmt.Errorf("no event rule on consent delivers all of %s to %s for purpose %q (its rules on consent: %s); --force mints it anyway",
		strings.Join(req.Methods, ","), req.To, req.Purpose, strings.Join(names, ", "))
}
