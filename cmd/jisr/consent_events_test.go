package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/events"
)

// TestConsentGrantForEvents: `jisr consent grant --service
// jisr.events.v1.EventSink --methods <types>` is checked against the event
// rules on consent (docs/events.md): the fields default to the rule's, and
// a type, purpose, field or consumer no such rule names is refused.
func TestConsentGrantForEvents(t *testing.T) {
	yaml, err := os.ReadFile("../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fed, err := federation.Parse(append(yaml, `
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
	grant := func(to, methods, purpose string, fields ...string) *consent.GrantRequest {
		return &consent.GrantRequest{To: to, Service: events.Service, Methods: strings.Split(methods, ","), Purpose: purpose, Fields: fields}
	}
	req := grant("tax", "MarriageRecorded", "household-tax")
	if _, err := checkGrant(fed, req, false); err != nil || req.LegalBasis != federation.BasisConsent || !slices.Equal(req.Fields, []string{"marriage_recorded.date"}) {
		t.Fatalf("a grant the rule allows: err %v, basis %q, fields %v", err, req.LegalBasis, req.Fields)
	}
	for _, c := range []struct {
		req  *consent.GrantRequest
		says string
	}{
		{grant("tax", "PersonDied", "household-tax"), "no event rule on consent delivers all of PersonDied to tax"},
		{grant("tax", "MarriageRecorded", "marketing"), `for purpose "marketing"`},
		{grant("tax", "MarriageRecorded", "household-tax", "marriage_recorded.spouse_eid"), "releases only marriage_recorded.date"},
		{grant("cnss", "MarriageRecorded", "household-tax"), "no event rule delivers events to cnss on consent"},
	} {
		if _, err := checkGrant(fed, c.req, false); err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "--force") {
			t.Errorf("%+v: got %v, want %q", c.req, err, c.says)
		}
	}
}
