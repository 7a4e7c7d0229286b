package natsstate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
)

// EventRetention is how long the event log and the members' event streams
// keep an event: long enough for a member's backend to come back from an
// outage and for replays to a new rule; events are personal data, so not
// for ever.
const EventRetention = 400 * 24 * time.Hour

// EventDedupWindow is how long a stream remembers an event's id
// (Nats-Msg-Id) to drop a second publication of it. A publisher's retry
// comes within seconds; the window also covers a gateway's restart.
const EventDedupWindow = 24 * time.Hour

// EventSpecs returns the streams of life events (docs/events.md): the event
// log (JISR_EVENTS, every accepted event as published, read only by the
// gateway) and one delivery stream per member (JISR_EVENTS_<member>,
// written only by the gateway, read only by that member). Like the audit
// streams: no delete, no purge, no roll-up, no per-message TTL, discard new
// (a full stream refuses the publication, which the publisher retries).
func EventSpecs(fed *federation.Federation, replicas int) []Spec {
	if replicas <= 0 {
		replicas = 1
	}
	spec := func(name, subj, desc string) Spec {
		return Spec{Stream: name, Config: jetstream.StreamConfig{
			Name: name, Description: desc, Subjects: []string{subj},
			Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: replicas,
			MaxMsgs: -1, MaxBytes: -1, MaxMsgSize: 64 << 10, MaxConsumers: -1, MaxAge: EventRetention,
			Duplicates: EventDedupWindow, Discard: jetstream.DiscardNew,
			DenyDelete: true, DenyPurge: true, AllowRollup: false, AllowMsgTTL: false, AllowDirect: true,
		}}
	}
	out := []Spec{spec(subject.EventLogStream, subject.EventLogPrefix+".>", "jisr life events as published (the gateway's, for replays)")}
	for _, m := range fed.Members {
		sp := spec(subject.EventStream(m.Name), subject.Deliveries(m.Name), "jisr life events delivered to "+m.Name)
		// The member creates consumers on its own stream (its adapter's
		// durable one, a tail's ephemeral ones): a bounded number.
		sp.Config.MaxConsumers = 16
		out = append(out, sp)
	}
	return out
}

// CheckEventStreams reports whether every event stream exists with its
// protections: a missing one is ErrMissing (run `jisr nats init`), never
// created here.
func CheckEventStreams(ctx context.Context, js jetstream.JetStream, fed *federation.Federation) error {
	for _, sp := range EventSpecs(fed, 0) {
		s, err := js.Stream(ctx, sp.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %s does not exist (%w): run `jisr nats init`", sp.Stream, ErrMissing)
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", sp.Stream, err)
		}
		if err := stream.Check(s.CachedInfo().Config, sp.Config); err != nil {
			return err
		}
	}
	return nil
}
