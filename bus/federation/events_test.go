package federation

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const eventsBase = `
eid: {pattern: "[A-Z][0-9]{3}"}
members:
  - {name: registry, provides: [a.v1.Alpha], publishes: [PersonDied, PersonBorn]}
  - {name: pensions}
  - {name: taxes}
`

func TestEventRules(t *testing.T) {
	t.Parallel()
	f, err := Parse([]byte(eventsBase + `event_rules:
  - {name: deaths, consumer: pensions, publisher: registry, events: [PersonDied], fields: [person_died.date_of_death], purpose: pensions, legal_basis: mandate, law: L, replay: true, access_log_delay: 1h}
  - {name: births, consumer: taxes, publisher: registry, events: [PersonBorn], purpose: allowance, legal_basis: consent}
`))
	if err != nil {
		t.Fatal(err)
	}
	rs := f.EventRulesFor("registry", "PersonDied")
	if len(rs) != 1 || rs[0].Consumer != "pensions" || !rs[0].Replay || rs[0].LogDelay.Hours() != 1 {
		t.Fatalf("rules %+v", rs)
	}
	if rs := f.EventRulesFor("registry", "PersonBorn"); len(rs) != 1 || rs[0].LegalBasis != BasisConsent || rs[0].Consumer != "taxes" {
		t.Fatalf("a rule on consent: %+v", rs)
	}
	if len(f.EventRulesFor("registry", "MarriageRecorded")) != 0 || !f.ReceivesEvents("pensions") || f.ReceivesEvents("registry") {
		t.Fatal("a rule covers what it does not name")
	}
	if m, _ := f.Member("taxes"); m.PublishesEvent("PersonDied") {
		t.Fatal("taxes publishes no event")
	}
	if !slices.Equal(EventTypes(), []string{"PersonDied", "PersonBorn", "MarriageRecorded", "AddressChanged", "IncomeDeclared"}) {
		t.Fatalf("event types %v", EventTypes())
	}
}

func TestInvalidEventRulesNameTheField(t *testing.T) {
	t.Parallel()
	rule := func(s string) string { return eventsBase + "event_rules:\n  - " + s + "\n" }
	ok := "consumer: pensions, publisher: registry, events: [PersonDied], purpose: p, legal_basis: mandate, law: L"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown type published", strings.Replace(eventsBase, "PersonBorn]", "PersonVanished]", 1), "members[0] (registry).publishes"},
		{"no name", rule("{" + ok + "}"), "event_rules[0].name"},
		{"unknown consumer", rule("{name: r, " + strings.Replace(ok, "pensions", "zed", 1) + "}"), "consumer"},
		{"self", rule("{name: r, " + strings.Replace(ok, "pensions", "registry", 1) + "}"), "same member"},
		{"type not published", rule("{name: r, " + strings.Replace(ok, "PersonDied", "MarriageRecorded", 1) + "}"), "does not publish"},
		{"publisher publishes nothing", rule("{name: r, " + strings.Replace(ok, "publisher: registry", "publisher: taxes", 1) + "}"), "does not publish"},
		{"bad field", rule("{name: r, fields: [a..b], " + ok + "}"), "fields[0]"},
		{"no purpose", rule("{name: r, " + strings.Replace(ok, "purpose: p, ", "", 1) + "}"), "purpose"},
		{"mandate without law", rule("{name: r, " + strings.Replace(ok, ", law: L", "", 1) + "}"), "must name the law"},
		{"consent with a law", rule("{name: r, " + strings.Replace(ok, "mandate", "consent", 1) + "}"), "names no law"},
		{"explicit request", rule("{name: r, " + strings.Replace(strings.Replace(ok, "mandate", "explicit_request", 1), ", law: L", "", 1) + "}"), "legal_basis"},
		{"bad delay", rule("{name: r, access_log_delay: soon, " + ok + "}"), "access_log_delay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}
