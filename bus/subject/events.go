package subject

// Life events (docs/events.md). A publisher's adapter sends each event to
// the gateway on jisr.e.<publisher>.<type>.<ckey>; the gateway stores every
// delivery in the receiving member's own stream on
// jisr.ev.<consumer>.<publisher>.<type>.<ckey>, and the event as published in
// the gateway's event log on jisr.elog.<publisher>.<type>.<ckey> (read only
// by the gateway, for replays). A member asks for a replay on
// jisr.er.<consumer>.
const (
	EventPrefix    = "jisr.e"    // jisr.e.<publisher>.<type>.<ckey>: a member publishes, the gateway decides
	DeliveryPrefix = "jisr.ev"   // jisr.ev.<consumer>.<publisher>.<type>.<ckey>: only the gateway publishes
	EventLogPrefix = "jisr.elog" // jisr.elog.<publisher>.<type>.<ckey>: only the gateway
	ReplayPrefix   = "jisr.er"   // jisr.er.<consumer>: a member asks the gateway for a replay
)

// EventLogStream holds every event the gateway accepted, as published.
const EventLogStream = "JISR_EVENTS"

// EventDurable is the durable consumer through which a member's adapter
// reads its own event stream.
const EventDurable = "adapter"

// EventStream is the stream of the deliveries to one member: JISR_EVENTS_<member>.
func EventStream(member string) string { return EventLogStream + "_" + member }

// Event is the parsed form of an event subject.
type Event struct {
	Consumer  string // deliveries only
	Publisher string
	Type      string // event type name (PersonDied)
	CKey      string
}

// Subject renders e as jisr.e.<publisher>.<type>.<ckey>.
func (e Event) Subject() (string, error) {
	if err := checkAll(e.Publisher, e.Type, e.CKey); err != nil {
		return "", err
	}
	return EventPrefix + "." + e.Publisher + "." + e.Type + "." + e.CKey, nil
}

// DeliverySubject renders jisr.ev.<consumer>.<publisher>.<type>.<ckey>.
func (e Event) DeliverySubject() (string, error) {
	if err := checkAll(e.Consumer, e.Publisher, e.Type, e.CKey); err != nil {
		return "", err
	}
	return DeliveryPrefix + "." + e.Consumer + "." + e.Publisher + "." + e.Type + "." + e.CKey, nil
}

// LogSubject renders jisr.elog.<publisher>.<type>.<ckey>.
func (e Event) LogSubject() (string, error) {
	if err := checkAll(e.Publisher, e.Type, e.CKey); err != nil {
		return "", err
	}
	return EventLogPrefix + "." + e.Publisher + "." + e.Type + "." + e.CKey, nil
}

// ParseEvent parses jisr.e.<publisher>.<type>.<ckey>.
func ParseEvent(s string) (Event, error) {
	t, err := split(s, EventPrefix, 3)
	if err != nil {
		return Event{}, err
	}
	return Event{Publisher: t[0], Type: t[1], CKey: t[2]}, nil
}

// ParseDelivery parses jisr.ev.<consumer>.<publisher>.<type>.<ckey>.
func ParseDelivery(s string) (Event, error) {
	t, err := split(s, DeliveryPrefix, 4)
	if err != nil {
		return Event{}, err
	}
	return Event{Consumer: t[0], Publisher: t[1], Type: t[2], CKey: t[3]}, nil
}

// ParseEventLog parses jisr.elog.<publisher>.<type>.<ckey>.
func ParseEventLog(s string) (Event, error) {
	t, err := split(s, EventLogPrefix, 3)
	if err != nil {
		return Event{}, err
	}
	return Event{Publisher: t[0], Type: t[1], CKey: t[2]}, nil
}

// AllEvents is the gateway's subscription: every published event.
func AllEvents() string { return EventPrefix + ".>" }

// MemberEvents is what a member may publish events on.
func MemberEvents(member string) string { return EventPrefix + "." + member + ".>" }

// Deliveries selects every delivery to one member (its stream's subjects).
func Deliveries(member string) string { return DeliveryPrefix + "." + member + ".>" }

// Replay is the subject on which member asks for a replay.
func Replay(member string) string { return ReplayPrefix + "." + member }

// AllReplays is the gateway's subscription to replay requests.
func AllReplays() string { return ReplayPrefix + ".*" }

// ParseReplay returns the member of a replay subject.
func ParseReplay(s string) (string, error) {
	t, err := split(s, ReplayPrefix, 1)
	if err != nil {
		return "", err
	}
	return t[0], nil
}
