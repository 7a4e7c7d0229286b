package consent_test

import (
	"slices"
	"testing"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/events"
)

// A consumer may ask a citizen for consent to receive life events (the
// citizen approves it on their page like any request): an event rule on
// consent reads as the rule behind the request, and nothing else does.
func TestConsentRequestsForEvents(t *testing.T) {
	fed, err := federation.Parse(append(bustest.FederationYAML(), `
  - name: tax-marriages
    consumer: tax
    publisher: civil-registry
    events: [MarriageRecorded]
    fields: [marriage_recorded.date]
    purpose: household-tax
    legal_basis: consent
`...))
	if err != nil {
		t.Fatal(err)
	}
	s := &consent.Service{Federation: fed}
	req := func(consumer, method, purpose, basis string) *consent.ConsentRequest {
		return &consent.ConsentRequest{Consumer: consumer, Service: events.Service, Methods: []string{method}, Purpose: purpose, LegalBasis: basis}
	}
	if got := s.RuleFields(req("tax", "MarriageRecorded", "household-tax", federation.BasisConsent)); !slices.Equal(got, []string{"marriage_recorded.date"}) {
		t.Fatalf("fields of the event rule on consent: %v", got)
	}
	for _, r := range []*consent.ConsentRequest{
		req("cnss", "MarriageRecorded", "household-tax", federation.BasisConsent), // another consumer
		req("tax", "PersonDied", "household-tax", federation.BasisConsent),        // another type
		req("tax", "MarriageRecorded", "marketing", federation.BasisConsent),      // another purpose
		req("tax", "MarriageRecorded", "household-tax", federation.BasisExplicitRequest),
		req("cnss", "PersonDied", "pension-continuity", federation.BasisConsent), // a rule on a mandate
	} {
		if got := s.RuleFields(r); got != nil {
			t.Errorf("%+v: a rule behind it (%v), want none", r, got)
		}
	}
}
