package natsconf

import (
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
)

// memberEvents is what a member publishes for life events (docs/events.md):
// its own events (jisr.e.<member>.>), its own replay requests, and the read
// side of its own delivery stream — bind, create its own consumers, pull,
// and acknowledge. Never another member's stream, never a delivery subject
// (jisr.ev.>: only the gateway writes deliveries), never the event log.
func memberEvents(member string) []string {
	st := subject.EventStream(member)
	return append([]string{
		subject.MemberEvents(member),
		subject.Replay(member),
		"$JS.ACK." + st + ".>",
	}, StreamAPI(st)...)
}

// gatewayEvents is what the gateway publishes for life events: deliveries
// into every member's stream, the event log, the read side of the event log
// (replays), and the information of every member's stream (its readiness
// check) and its messages one by one (dedup of a publication again).
func gatewayEvents(fed *federation.Federation) []string {
	out := []string{subject.DeliveryPrefix + ".>", subject.EventLogPrefix + ".>"}
	out = append(out, StreamAPI(subject.EventLogStream)...)
	for _, m := range fed.Members {
		// The information of every member's stream (its readiness check),
		// and the last message on a subject (is a publication again already
		// delivered?), never a consumer on it.
		out = append(out, "$JS.API.STREAM.INFO."+subject.EventStream(m.Name), "$JS.API.STREAM.MSG.GET."+subject.EventStream(m.Name), "$JS.API.DIRECT.GET."+subject.EventStream(m.Name), "$JS.API.DIRECT.GET."+subject.EventStream(m.Name)+".>")
	}
	return out
}

// eventStreams are the event log and every member's delivery stream.
func eventStreams(fed *federation.Federation) []string {
	out := []string{subject.EventLogStream}
	for _, m := range fed.Members {
		out = append(out, subject.EventStream(m.Name))
	}
	return out
}
