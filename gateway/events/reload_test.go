package events_test

import (
	"errors"
	"testing"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/events"
)

// A federation version applied to the running service decides the next
// event: a removed rule delivers nothing more (health's death rule), the
// remaining one still does; a version whose event rule names a field that
// is not an event's is refused and the running version stays.
func TestSetFederationDecidesTheNextEvent(t *testing.T) {
	f := start(t)
	got, err := f.publish(t, "civil-registry", died("reload-death-0000001", "ab123"), "")
	if err != nil || got.GetDeliveries() != 2 {
		t.Fatalf("before: %v, %v (want cnss and health)", got, err)
	}
	without := func(fed *federation.Federation, name string) *federation.Federation {
		cp := *fed
		cp.EventRules = nil
		for _, r := range fed.EventRules {
			if r.Name != name {
				cp.EventRules = append(cp.EventRules, r)
			}
		}
		if len(cp.EventRules) == len(fed.EventRules) {
			t.Fatalf("no rule %s", name)
		}
		return &cp
	}
	if err := f.ev.SetFederation(without(f.env.Fed, "health-deaths")); err != nil {
		t.Fatal(err)
	}
	got, err = f.publish(t, "civil-registry", died("reload-death-0000002", "ab123"), "")
	if err != nil || got.GetDeliveries() != 1 {
		t.Fatalf("after health's rule was removed: %v, %v (want cnss only)", got, err)
	}
	if n := len(f.read(t, "health")); n != 1 {
		t.Fatalf("health has %d deliveries, want the one from before its rule was removed", n)
	}
	if n := len(f.read(t, "cnss")); n != 2 {
		t.Fatalf("cnss has %d deliveries, want 2", n)
	}

	bad := *f.env.Fed
	r := *bad.EventRules[0]
	r.Fields = []string{"person_died.favourite_colour"}
	bad.EventRules = append([]*federation.EventRule{&r}, bad.EventRules[1:]...)
	if err := f.ev.SetFederation(&bad); !errors.Is(err, events.ErrConfig) {
		t.Fatalf("a rule with a field no event has: %v, want refused", err)
	}
	got, err = f.publish(t, "civil-registry", died("reload-death-0000003", "ab123"), "")
	if err != nil || got.GetDeliveries() != 1 {
		t.Fatalf("after a refused version: %v, %v (want the running version: cnss only)", got, err)
	}
}
