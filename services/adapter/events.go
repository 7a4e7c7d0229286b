package adapter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/bus/subject"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
)

// Headers of a delivery in a member's stream (written by the gateway).
const (
	headerEventRule   = "Jisr-Event-Rule"
	headerEventReplay = "Jisr-Event-Replay"
)

// publisher is the EventPublisher the adapter serves to its own backend.
type publisher struct {
	eventsv1.UnimplementedEventPublisherServer
	a *Adapter
}

// Publish sends one event of the member to the gateway and returns once
// every delivery is durable (or the gateway's refusal).
func (p publisher) Publish(ctx context.Context, req *eventsv1.PublishRequest) (*eventsv1.PublishResponse, error) {
	a := p.a
	ev := req.GetEvent()
	if ev == nil {
		return nil, status.Error(codes.InvalidArgument, "the request has no event")
	}
	if err := checkEventID(ev.GetId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, "the event id must be 16 to 64 characters of [A-Za-z0-9_-], the same each time the event is published")
	}
	od := ev.ProtoReflect().Descriptor().Oneofs().ByName("payload")
	fd := ev.ProtoReflect().WhichOneof(od)
	if fd == nil {
		return nil, status.Error(codes.InvalidArgument, "the event has no payload")
	}
	typ := string(fd.Message().Name())
	if !a.fs.Load().member.PublishesEvent(typ) {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not publish %s events (members[].publishes in the federation file)", a.cfg.Member, typ)
	}
	eid, err := a.fs.Load().fed.NormaliseEID(ev.GetEid())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "the event's eID does not match the federation's eID format")
	}
	subj, err := subject.Event{Publisher: a.cfg.Member, Type: typ, CKey: a.cfg.Keyer.CKey(eid)}.Subject()
	if err != nil {
		return nil, status.Error(codes.Internal, "could not build the event subject")
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "the event could not be encoded")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.cfg.DefaultTimeout)
		defer cancel()
	}
	reply, err := bus.Call(ctx, a.cfg.Conn, &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}, a.spanOpts...)
	if err != nil {
		return nil, err
	}
	out := &eventsv1.PublishResponse{}
	if err := proto.Unmarshal(reply.Data, out); err != nil {
		return nil, status.Error(codes.Internal, "the gateway's answer is not a PublishResponse")
	}
	return out, nil
}

// Replay asks the gateway to deliver again the events since a time.
func (p publisher) Replay(ctx context.Context, req *eventsv1.ReplayRequest) (*eventsv1.ReplayResponse, error) {
	a := p.a
	data, err := proto.Marshal(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "the request could not be encoded")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
	}
	reply, err := bus.Call(ctx, a.cfg.Conn, &nats.Msg{Subject: subject.Replay(a.cfg.Member), Data: data, Header: nats.Header{}}, a.spanOpts...)
	if err != nil {
		return nil, err
	}
	out := &eventsv1.ReplayResponse{}
	if err := proto.Unmarshal(reply.Data, out); err != nil {
		return nil, status.Error(codes.Internal, "the gateway's answer is not a ReplayResponse")
	}
	return out, nil
}

func checkEventID(id string) error {
	if len(id) < 16 || len(id) > 64 {
		return errors.New("bad id")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return errors.New("bad id")
		}
	}
	return nil
}

// StartEvents starts delivering the member's events to its backend's
// EventSink (Config.EventSink), one at a time and in stream order: the
// durable consumer allows one unacknowledged event, which the adapter
// acknowledges only after the backend's Deliver returned OK, retrying (and
// keeping it, so nothing after it passes) while the backend is down. After
// a crash the bus delivers the unacknowledged event again, marked
// redelivered; the backend drops it by its id.
func (a *Adapter) StartEvents(ctx context.Context) error {
	if a.cfg.EventSink == "" {
		return fmt.Errorf("%w: delivering events needs an event sink address", ErrConfig)
	}
	creds, err := loopback.ClientCredentials(a.cfg.EventSink, a.cfg.BackendTLS)
	if err != nil {
		return ErrPlaintextNotLocal
	}
	conn, err := grpc.NewClient(a.cfg.EventSink, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, a.cfg.DialOptions...)...)
	if err != nil {
		return fmt.Errorf("adapter: event sink %s: %w", a.cfg.EventSink, err)
	}
	js, err := jetstream.New(a.cfg.Conn)
	if err != nil {
		_ = conn.Close()
		return err
	}
	ackWait := a.ackWait()
	cons, err := js.CreateOrUpdateConsumer(ctx, subject.EventStream(a.cfg.Member), jetstream.ConsumerConfig{
		Durable: subject.EventDurable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxAckPending: 1, MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
		Description: "the adapter's delivery of " + a.cfg.Member + "'s events to its backend",
	})
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("adapter: event stream %s (run `jisr nats init`): %w", subject.EventStream(a.cfg.Member), err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(16))
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("adapter: event stream: %w", err)
	}
	sink := eventsv1.NewEventSinkClient(conn)
	ectx, cancel := context.WithCancel(context.Background())
	a.events = &eventsLoop{it: it, conn: conn, cancel: cancel, done: make(chan struct{})}
	go a.deliverLoop(ectx, it, sink, a.events.done)
	a.log.Info("event delivery ready", "stream", subject.EventStream(a.cfg.Member), "sink", a.cfg.EventSink)
	return nil
}

func (a *Adapter) ackWait() time.Duration {
	if a.cfg.EventAckWait <= 0 {
		return 30 * time.Second
	}
	return a.cfg.EventAckWait
}

type eventsLoop struct {
	it     jetstream.MessagesContext
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}
}

func (l *eventsLoop) stop() {
	l.cancel()
	l.it.Stop()
	<-l.done
	_ = l.conn.Close()
}

func (a *Adapter) deliverLoop(ctx context.Context, it jetstream.MessagesContext, sink eventsv1.EventSinkClient, done chan struct{}) {
	defer close(done)
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			a.log.Warn("event stream", "err", err)
			continue
		}
		a.deliverOne(ctx, msg, sink)
	}
}

// deliverOne hands one event to the backend until it accepts it (or the
// adapter stops), then acknowledges it.
func (a *Adapter) deliverOne(ctx context.Context, msg jetstream.Msg, sink eventsv1.EventSinkClient) {
	s, perr := subject.ParseDelivery(msg.Subject())
	ev := &eventsv1.Event{}
	meta, merr := msg.Metadata()
	if perr != nil || s.Consumer != a.cfg.Member || merr != nil || proto.Unmarshal(msg.Data(), ev) != nil {
		// Only the gateway writes this stream; a message that does not read
		// is kept out of the backend and never delivered again.
		a.log.Error("event stream: a message that is not a delivery: terminated", "subject", msg.Subject())
		_ = msg.Term()
		return
	}
	req := &eventsv1.DeliverRequest{
		Event: ev, Publisher: s.Publisher, Sequence: meta.Sequence.Stream,
		Rule: msg.Headers().Get(headerEventRule), Replay: msg.Headers().Get(headerEventReplay) == "true",
		Redelivered: meta.NumDelivered > 1,
	}
	// While the backend is down the event stays ours: InProgress restarts
	// the bus's ack wait, and no wait between tries is longer than a third
	// of it (else the bus would deliver the event again behind this one).
	backoff, maxBackoff := 50*time.Millisecond, min(2*time.Second, a.ackWait()/3)
	// The delivery's span continues the gateway's trace of the publication
	// (its traceparent header: only the gateway writes this stream), so
	// publish → gateway → delivery is one trace, as a query is.
	dctx, span := bus.StartSpan(bus.ExtractTrace(ctx, msg.Headers()), "process", msg.Subject(), trace.SpanKindConsumer, len(msg.Data()), a.spanOpts...)
	defer span.End()
	for {
		cctx, cancel := context.WithTimeout(dctx, 30*time.Second)
		_, err := sink.Deliver(cctx, req)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return // not acknowledged: delivered again after the ack wait
		}
		a.log.Warn("event not accepted by the backend: retrying", "publisher", s.Publisher, "type", s.Type,
			"seq", meta.Sequence.Stream, "code", status.Code(err).String())
		_ = msg.InProgress() // keep it ours while the backend is down
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
	if err := msg.Ack(); err != nil {
		a.log.Warn("event ack failed (the backend will get it again, marked redelivered)", "err", err)
	}
}

// EventTypeOf is the event type name of an event's payload ("" when none).
func EventTypeOf(ev *eventsv1.Event) string {
	fd := ev.ProtoReflect().WhichOneof(ev.ProtoReflect().Descriptor().Oneofs().ByName("payload"))
	if fd == nil {
		return ""
	}
	return string(fd.Message().Name())
}
