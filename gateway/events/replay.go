package events

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
)

// handleReplay answers a member's replay request: the events of the event
// log since the requested time that a rule of the member allowing replays
// covers are delivered again into its stream, each audited as a replay.
func (e *Events) handleReplay(msg *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ctx, span := e.startSpan(ctx, msg)
	defer span.End()
	consumer := senderOf(msg.Subject)
	if e.member(consumer) == "" || subjectReplay(msg.Subject) != consumer {
		e.log.Warn("replay request on a malformed subject dropped")
		return
	}
	if err := checkReply(msg, consumer); err != nil {
		e.refused.Add(1)
		_ = e.audit(ctx, &decision.Decision{Consumer: consumer, Service: Service, Method: ReplayMethod, Code: codes.PermissionDenied, Reason: decision.ReasonBadReplySubject, TraceID: traceID(ctx)})
		return
	}
	// One replay per member at a time: a replay is heavy (an audit record
	// per event), and a member asking again and again must not take the
	// gateway's capacity.
	if _, busy := e.replaying.LoadOrStore(consumer, true); busy {
		e.answerTo(msg, nil, decision.Refuse(codes.ResourceExhausted, decision.ReasonTooManyInFlight, "a replay for %s is already running", consumer))
		return
	}
	defer e.replaying.Delete(consumer)
	n, err := e.replay(ctx, consumer, msg.Data)
	if err != nil {
		e.answerTo(msg, nil, err)
		return
	}
	b, _ := proto.Marshal(&eventsv1.ReplayResponse{Replayed: n})
	e.answerTo(msg, b, nil)
}

func subjectReplay(s string) string {
	m, err := subject.ParseReplay(s)
	if err != nil {
		return ""
	}
	return m
}

func (e *Events) replay(ctx context.Context, consumer string, data []byte) (int32, error) {
	now := e.cfg.Now().UTC()
	refuse := func(r *decision.Refusal) (int32, error) {
		if err := e.audit(ctx, &decision.Decision{Time: now, Consumer: consumer, Service: Service, Method: ReplayMethod, Code: r.Code, Reason: r.Reason, TraceID: traceID(ctx)}); err != nil {
			return 0, err
		}
		return 0, r
	}
	req := &eventsv1.ReplayRequest{}
	if err := proto.Unmarshal(data, req); err != nil || req.GetSince().CheckValid() != nil || req.GetSince().AsTime().After(now) {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonMalformedPayload, "a replay needs a valid time in the past"))
	}
	var rules []*federation.EventRule
	var filters []string
	fed := e.federation() // one version decides the whole replay
	for _, r := range fed.EventRules {
		if r.Consumer != consumer || !r.Replay {
			continue
		}
		rules = append(rules, r)
		for _, t := range r.Events {
			filters = append(filters, subject.EventLogPrefix+"."+r.Publisher+"."+t+".*")
		}
	}
	if len(rules) == 0 {
		return refuse(decision.Refuse(codes.PermissionDenied, decision.ReasonReplayNotAllowed, "no event rule of %s allows replays", consumer))
	}
	// The member's stream is the operator's to create (jisr nats init): a
	// replay into a stream not created yet is refused, audited, before any
	// delivery is decided.
	if _, err := e.stream(ctx, consumer); errors.Is(err, jetstream.ErrStreamNotFound) {
		e.log.Error("a member's event stream is missing: its replay is refused; run `jisr nats init` with the federation in force",
			"consumer", consumer, "stream", subject.EventStream(consumer))
		return refuse(decision.Refuse(codes.FailedPrecondition, decision.ReasonEventStreamMissing,
			"the event stream of %s does not exist yet: the federation's operator creates it (jisr nats init)", consumer))
	} else if err != nil {
		return 0, decision.Refuse(codes.Unavailable, decision.ReasonEventStoreUnavailable, "the event stream is unavailable")
	}
	since := req.GetSince().AsTime()
	c, err := e.js.OrderedConsumer(ctx, subject.EventLogStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: dedupe(filters), DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		return 0, decision.Refuse(codes.Unavailable, decision.ReasonEventStoreUnavailable, "the event log is unavailable")
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, decision.Refuse(codes.Unavailable, decision.ReasonEventStoreUnavailable, "the event log is unavailable")
	}
	left := info.NumPending
	var n int32
	for left > 0 && n < MaxReplay {
		msg, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
				break
			}
			return n, decision.Refuse(codes.Unavailable, decision.ReasonEventStoreUnavailable, "the event log is unavailable")
		}
		meta, err := msg.Metadata()
		if err != nil {
			return n, decision.Refuse(codes.Unavailable, decision.ReasonEventStoreUnavailable, "the event log is unavailable")
		}
		left = meta.NumPending
		s, err := subject.ParseEventLog(msg.Subject())
		if err != nil {
			continue
		}
		ev := &eventsv1.Event{}
		if proto.Unmarshal(msg.Data(), ev) != nil {
			continue
		}
		for _, r := range rules {
			if r.Publisher != s.Publisher || !contains(r.Events, s.Type) {
				continue
			}
			var jti string
			if r.LegalBasis == federation.BasisConsent {
				// A replay rests on the citizen's consent as it stands now.
				if jti, err = e.consentFor(ctx, fed, s, r, now); err != nil {
					return n, err
				} else if jti == "" {
					continue
				}
			}
			if err := e.deliver(ctx, s, ev, r, jti, true, now); err != nil {
				return n, err
			}
			n++
		}
	}
	e.log.Info("events replayed", "consumer", consumer, "since", since, "replayed", n)
	return n, nil
}

func checkReply(msg *nats.Msg, member string) error {
	return subject.CheckReply(msg.Reply, member)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func dedupe(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
