package federation

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
)

// EventRule lets one consumer receive some life events of one publisher:
// which events, which of their fields, for what purpose and on which legal
// basis. The gateway delivers an event to every member whose rule covers
// it, and only then.
type EventRule struct {
	Name      string
	Consumer  string
	Publisher string
	Events    []string // event type names (PersonDied, …)
	// Fields are the event's field paths that may be released (such as
	// person_died.date_of_death); the id, time and eid are always released.
	// Empty = the whole event.
	Fields     []string
	Purpose    string
	LegalBasis string // mandate, or consent (the citizen's standing grant)
	Law        string
	LogDelay   time.Duration // delay before the delivery shows in the citizen's access log
	// Replay lets the consumer ask for the events published since a date
	// (for a rule newer than the events); each replayed delivery is audited.
	Replay bool
}

type eventRuleFile struct {
	Name       string   `yaml:"name"`
	Consumer   string   `yaml:"consumer"`
	Publisher  string   `yaml:"publisher"`
	Events     []string `yaml:"events"`
	Fields     []string `yaml:"fields"`
	Purpose    string   `yaml:"purpose"`
	LegalBasis string   `yaml:"legal_basis"`
	Law        string   `yaml:"law"`
	LogDelay   string   `yaml:"access_log_delay"`
	Replay     bool     `yaml:"replay"`
}

// EventTypes returns the life event type names of jisr.events.v1.Event's
// payload, in field order: PersonDied, PersonBorn, ….
func EventTypes() []string {
	var out []string
	fs := (&eventsv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload").Fields()
	for i := 0; i < fs.Len(); i++ {
		out = append(out, string(fs.Get(i).Message().Name()))
	}
	return out
}

// EventField returns the Event's payload field of an event type name, or nil.
func EventField(eventType string) protoreflect.FieldDescriptor {
	fs := (&eventsv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload").Fields()
	for i := 0; i < fs.Len(); i++ {
		if string(fs.Get(i).Message().Name()) == eventType {
			return fs.Get(i)
		}
	}
	return nil
}

func checkPublishes(types []string) ([]string, error) {
	var out []string
	for _, t := range types {
		if EventField(t) == nil {
			return nil, fmt.Errorf("%q is not an event type (one of %s)", t, strings.Join(EventTypes(), ", "))
		}
		if slices.Contains(out, t) {
			return nil, fmt.Errorf("%q appears twice", t)
		}
		out = append(out, t)
	}
	return out, nil
}

func (f *Federation) parseEventRules(raw []eventRuleFile) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	names := map[string]bool{}
	for _, r := range f.Rules {
		names[r.Name] = true
	}
	for i, rr := range raw {
		where := fmt.Sprintf("event_rules[%d]", i)
		if rr.Name == "" {
			return bad("%s.name is required", where)
		}
		where = fmt.Sprintf("event_rules[%d] (%s)", i, rr.Name)
		if CheckName(rr.Name) != nil || names[rr.Name] {
			return bad("%s.name: a unique name of lower-case letters, digits and '-'", where)
		}
		names[rr.Name] = true
		r := &EventRule{Name: rr.Name, Consumer: rr.Consumer, Publisher: rr.Publisher, Fields: rr.Fields,
			Purpose: rr.Purpose, LegalBasis: rr.LegalBasis, Law: strings.TrimSpace(rr.Law), Replay: rr.Replay}
		if _, ok := f.members[r.Consumer]; !ok {
			return bad("%s.consumer %q is not a member", where, r.Consumer)
		}
		pub, ok := f.members[r.Publisher]
		if !ok {
			return bad("%s.publisher %q is not a member", where, r.Publisher)
		}
		if r.Consumer == r.Publisher {
			return bad("%s: consumer and publisher are the same member", where)
		}
		if len(rr.Events) == 0 {
			return bad("%s.events: at least one event type is required", where)
		}
		for j, e := range rr.Events {
			if !slices.Contains(pub.Publishes, e) {
				return bad("%s.events[%d] %q: %s does not publish it (members[].publishes)", where, j, e, r.Publisher)
			}
			if slices.Contains(r.Events, e) {
				return bad("%s.events[%d] %q appears twice", where, j, e)
			}
			r.Events = append(r.Events, e)
		}
		for j, p := range r.Fields {
			if err := checkFieldPath(p); err != nil {
				return bad("%s.fields[%d]: %v", where, j, err)
			}
		}
		if err := CheckPurpose(r.Purpose); err != nil {
			return bad("%s.purpose: %v", where, err)
		}
		switch r.LegalBasis {
		case BasisMandate:
			if r.Law == "" {
				return bad("%s.law: a mandate must name the law it rests on", where)
			}
		case BasisConsent:
			// A published event carries no consent token of the receiver's:
			// the gateway delivers only while the citizen holds an active
			// grant for the consumer, the event type and the rule's fields
			// (docs/events.md). A law is a mandate's, not a consent's.
			if r.Law != "" {
				return bad("%s.law: a rule on consent names no law", where)
			}
		default:
			return bad("%s.legal_basis %q: event rules rest on a %s or the citizen's %s", where, r.LegalBasis, BasisMandate, BasisConsent)
		}
		if rr.LogDelay != "" {
			d, err := time.ParseDuration(rr.LogDelay)
			if err != nil || d < 0 {
				return bad("%s.access_log_delay %q: a duration such as 720h", where, rr.LogDelay)
			}
			r.LogDelay = d
		}
		f.EventRules = append(f.EventRules, r)
	}
	return nil
}

// EventRulesFor returns the event rules that deliver eventType of publisher,
// in file order.
func (f *Federation) EventRulesFor(publisher, eventType string) []*EventRule {
	var out []*EventRule
	for _, r := range f.EventRules {
		if r.Publisher == publisher && slices.Contains(r.Events, eventType) {
			out = append(out, r)
		}
	}
	return out
}

// ReceivesEvents reports whether some event rule delivers to member.
func (f *Federation) ReceivesEvents(member string) bool {
	for _, r := range f.EventRules {
		if r.Consumer == member {
			return true
		}
	}
	return false
}

// PublishesEvent reports whether the member may publish eventType.
func (m *Member) PublishesEvent(eventType string) bool {
	return slices.Contains(m.Publishes, eventType)
}
