package adapter

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
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
	ev, err := p.a.checkEvent(req.GetEvent())
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.a.cfg.DefaultTimeout)
		defer cancel()
	}
	return p.a.sendEvent(ctx, ev)
}

// checkedEvent is an event of the member checked and encoded for the
// gateway: its subject (the citizen's ckey last) and payload.
type checkedEvent struct {
	subj, ckey string
	data       []byte
}

// checkEvent is every check the adapter makes of an event before it sends
// it, for Publish and PublishStream alike: an id, a payload of a type its
// member publishes, an eID of the federation's format.
func (a *Adapter) checkEvent(ev *eventsv1.Event) (checkedEvent, error) {
	if ev == nil {
		return checkedEvent{}, status.Error(codes.InvalidArgument, "the request has no event")
	}
	if err := checkEventID(ev.GetId()); err != nil {
		return checkedEvent{}, status.Error(codes.InvalidArgument, "the event id must be 16 to 64 characters of [A-Za-z0-9_-], the same each time the event is published")
	}
	od := ev.ProtoReflect().Descriptor().Oneofs().ByName("payload")
	fd := ev.ProtoReflect().WhichOneof(od)
	if fd == nil {
		return checkedEvent{}, status.Error(codes.InvalidArgument, "the event has no payload")
	}
	typ := string(fd.Message().Name())
	if !a.fs.Load().member.PublishesEvent(typ) {
		return checkedEvent{}, status.Errorf(codes.PermissionDenied, "%s may not publish %s events (members[].publishes in the federation file)", a.cfg.Member, typ)
	}
	eid, err := a.fs.Load().fed.NormaliseEID(ev.GetEid())
	if err != nil {
		return checkedEvent{}, status.Error(codes.InvalidArgument, "the event's eID does not match the federation's eID format")
	}
	ck := a.cfg.Keyer.CKey(eid)
	subj, err := subject.Event{Publisher: a.cfg.Member, Type: typ, CKey: ck}.Subject()
	if err != nil {
		return checkedEvent{}, status.Error(codes.Internal, "could not build the event subject")
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return checkedEvent{}, status.Error(codes.InvalidArgument, "the event could not be encoded")
	}
	if len(data) > bus.MaxEventBytes {
		// Refused before it waits anywhere: the gateway would refuse it.
		return checkedEvent{}, status.Errorf(codes.InvalidArgument, "the event is %d bytes, over the limit of %d", len(data), bus.MaxEventBytes)
	}
	return checkedEvent{subj: subj, ckey: ck, data: data}, nil
}

// sendEvent sends a checked event to the gateway, on its citizen's
// connection (eventConn), and returns its answer: the deliveries, once
// every one is durable, or the refusal.
func (a *Adapter) sendEvent(ctx context.Context, ev checkedEvent) (*eventsv1.PublishResponse, error) {
	reply, err := bus.Call(ctx, a.eventConn(ev.ckey), &nats.Msg{Subject: ev.subj, Data: ev.data, Header: nats.Header{}}, a.spanOpts...)
	if err != nil {
		return nil, err
	}
	out := &eventsv1.PublishResponse{}
	if err := proto.Unmarshal(reply.Data, out); err != nil {
		return nil, status.Error(codes.Internal, "the gateway's answer is not a PublishResponse")
	}
	return out, nil
}

// eventConn is the connection the events of the citizen ck are sent on:
// one of Conn and MoreConns, by FNV-1a of the ckey — always the same, so a
// citizen's events, sent one after another (PublishStream's lanes), do not
// overtake each other on two connections (a lane that gave up waiting for
// an answer, after its timeout, sends the next while the gateway may still
// be storing the last: docs/events.md), and the citizens spread over them
// (one connection serialises its own writes and reads).
func (a *Adapter) eventConn(ck string) *nats.Conn {
	if len(a.cfg.MoreConns) == 0 {
		return a.cfg.Conn
	}
	h := uint32(2166136261)
	for i := 0; i < len(ck); i++ {
		h ^= uint32(ck[i])
		h *= 16777619
	}
	if i := h % uint32(len(a.cfg.MoreConns)+1); i > 0 {
		return a.cfg.MoreConns[i-1]
	}
	return a.cfg.Conn
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
// EventSink (Config.EventSink), several at once but one at a time per
// citizen and in stream order for each: the durable consumer allows
// EventInFlight unacknowledged events, which the adapter hands to lanes by
// the citizen's key (a citizen's events all go through one lane, in order)
// and acknowledges each only after the backend's Deliver returned OK,
// retrying (and keeping it and what follows it in its lane) while the
// backend is down. After a crash it first delivers again, in stream order,
// every event from the consumer's acknowledgement floor to the last one
// delivered, before it takes any newer one — so a citizen's older event
// left unacknowledged is never overtaken by a newer one — marked
// redelivered; the backend drops those it applied by their ids.
func (a *Adapter) StartEvents(ctx context.Context) error {
	if a.cfg.EventSink == "" {
		return fmt.Errorf("%w: delivering events needs an event sink address", ErrConfig)
	}
	a.eventsMu.Lock()
	defer a.eventsMu.Unlock()
	if a.events != nil {
		return nil // started
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
	ackWait, inFlight := a.ackWait(), a.inFlight()
	cons, err := js.CreateOrUpdateConsumer(ctx, subject.EventStream(a.cfg.Member), jetstream.ConsumerConfig{
		Durable: subject.EventDurable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxAckPending: inFlight, MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
		Description: "the adapter's delivery of " + a.cfg.Member + "'s events to its backend",
	})
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("adapter: event stream %s (run `jisr nats init`): %w", subject.EventStream(a.cfg.Member), err)
	}
	st, err := js.Stream(ctx, subject.EventStream(a.cfg.Member))
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("adapter: event stream: %w", err)
	}
	ectx, cancel := context.WithCancel(context.Background())
	l := &eventsLoop{a: a, cons: cons, stream: st, sink: eventsv1.NewEventSinkClient(conn), conn: conn, cancel: cancel,
		done: make(chan struct{}), held: map[uint64]*delivery{}, recovered: map[uint64]bool{}, lanes: make([]chan *delivery, inFlight)}
	a.events = l
	go l.run(ectx)
	a.log.Info("event delivery ready", "stream", subject.EventStream(a.cfg.Member), "sink", a.cfg.EventSink, "in_flight", inFlight)
	return nil
}

// StartEventsIfReceiving starts the delivery to the backend (StartEvents)
// when the adapter has an event sink and the federation in force has an
// event rule that delivers to its member, unless it is started: at start,
// and when a new federation version gives the member its first rule.
func (a *Adapter) StartEventsIfReceiving(ctx context.Context) error {
	if a.cfg.EventSink == "" || !a.fs.Load().fed.ReceivesEvents(a.cfg.Member) {
		return nil
	}
	return a.StartEvents(ctx)
}

func (a *Adapter) ackWait() time.Duration {
	if a.cfg.EventAckWait <= 0 {
		return 30 * time.Second
	}
	return a.cfg.EventAckWait
}

// DefaultEventInFlight is how many events the adapter delivers to its
// backend at once by default (at most one per citizen).
const DefaultEventInFlight = 64

func (a *Adapter) inFlight() int {
	if a.cfg.EventInFlight <= 0 {
		return DefaultEventInFlight
	}
	return a.cfg.EventInFlight
}

// delivery is one event on its way to the backend: from the consumer (msg
// set, acknowledged once the backend accepted it) or read again from the
// stream after a crash (msg nil).
type delivery struct {
	msg   jetstream.Msg
	seq   uint64
	subj  string
	hdr   nats.Header
	data  []byte
	redel bool
	since time.Time // when it was received: kept ours (InProgress) past a third of the ack wait
	done  func(ok bool)
}

type eventsLoop struct {
	a      *Adapter
	cons   jetstream.Consumer
	stream jetstream.Stream
	sink   eventsv1.EventSinkClient
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}
	lanes  []chan *delivery

	mu sync.Mutex
	it jetstream.MessagesContext // nil until the recovery is over
	// held are the consumer's events received and not yet acknowledged, by
	// stream sequence: a copy the bus sends again while one is held is
	// dropped (the held one is acknowledged).
	held map[uint64]*delivery
	// recovered are the sequences delivered again after a crash and
	// accepted by the backend: when the bus sends them again (their ack
	// wait over), they are acknowledged without another delivery.
	recovered map[uint64]bool
}

func (l *eventsLoop) stop() {
	l.cancel()
	l.mu.Lock()
	if l.it != nil {
		l.it.Stop()
	}
	l.mu.Unlock()
	<-l.done
	_ = l.conn.Close()
}

// run starts the lanes, delivers again what a crash left unacknowledged,
// then delivers the consumer's events until the adapter stops.
func (l *eventsLoop) run(ctx context.Context) {
	defer close(l.done)
	var lanes sync.WaitGroup
	for i := range l.lanes {
		l.lanes[i] = make(chan *delivery, len(l.lanes))
		lanes.Add(1)
		go func() {
			defer lanes.Done()
			for d := range l.lanes[i] {
				ok := l.a.deliverOne(ctx, d, l.sink)
				d.done(ok)
			}
		}()
	}
	defer func() {
		for _, c := range l.lanes {
			close(c)
		}
		lanes.Wait()
	}()
	go l.keepHeld(ctx)
	if !l.recover(ctx) {
		return
	}
	var it jetstream.MessagesContext
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		var err error
		if it, err = l.cons.Messages(jetstream.PullMaxMessages(len(l.lanes))); err == nil {
			break
		}
		l.a.log.Error("event stream: cannot read: retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
	l.mu.Lock()
	l.it = it
	l.mu.Unlock()
	if ctx.Err() != nil {
		it.Stop()
		return
	}
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			l.a.log.Warn("event stream", "err", err)
			continue
		}
		l.take(msg)
	}
}

// take hands one message of the consumer to its citizen's lane.
func (l *eventsLoop) take(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		l.a.log.Error("event stream: a message without metadata: terminated", "subject", msg.Subject())
		_ = msg.Term()
		return
	}
	seq := meta.Sequence.Stream
	l.mu.Lock()
	if l.held[seq] != nil {
		l.mu.Unlock()
		return // sent again while ours: the held one is acknowledged
	}
	if l.recovered[seq] {
		delete(l.recovered, seq)
		l.mu.Unlock()
		_ = msg.Ack() // the backend accepted it when it was delivered again after the crash
		return
	}
	d := &delivery{msg: msg, seq: seq, subj: msg.Subject(), hdr: msg.Headers(), data: msg.Data(), redel: meta.NumDelivered > 1, since: time.Now()}
	d.done = func(ok bool) {
		if ok {
			if err := msg.Ack(); err != nil {
				l.a.log.Warn("event ack failed (the backend will get it again, marked redelivered)", "err", err)
			}
		}
		l.mu.Lock()
		delete(l.held, seq)
		l.mu.Unlock()
	}
	l.held[seq] = d
	l.mu.Unlock()
	l.lanes[l.lane(d.subj)] <- d // never blocks: at most len(lanes) are held
}

// lane is the lane of a delivery subject's citizen (its last token, the
// ckey): a citizen's events all go through one lane, in stream order.
func (l *eventsLoop) lane(subj string) int {
	ck := subj
	if i := strings.LastIndexByte(subj, '.'); i >= 0 {
		ck = subj[i+1:]
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(ck))
	return int(h.Sum32() % uint32(len(l.lanes)))
}

// keepHeld keeps the held events ours while they wait (the backend down,
// or behind a citizen's older event): InProgress restarts the bus's ack
// wait of each held a third of it, else the bus would send it again.
func (l *eventsLoop) keepHeld(ctx context.Context) {
	every := max(l.a.ackWait()/3, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			l.mu.Lock()
			var keep []jetstream.Msg
			for _, d := range l.held {
				if now.Sub(d.since) >= every {
					keep = append(keep, d.msg)
				}
			}
			l.mu.Unlock()
			for _, m := range keep {
				_ = m.InProgress()
			}
		}
	}
}

// recover delivers again, in stream order through the lanes, every event
// from the consumer's acknowledgement floor to the last one it delivered,
// when some are unacknowledged (a crash, or a stop with events held): one
// of them may be a citizen's older event that a newer one must not
// overtake. It reads them from the stream (the member may read its own);
// the backend drops by id those it applied. It returns false when the
// adapter stopped first.
func (l *eventsLoop) recover(ctx context.Context) bool {
	var info *jetstream.ConsumerInfo
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		var err error
		if info, err = l.cons.Info(ctx); err == nil {
			break
		}
		l.a.log.Warn("event stream: consumer state unreadable: retrying", "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
	}
	if info.NumAckPending == 0 {
		return true
	}
	from, to := info.AckFloor.Stream+1, info.Delivered.Stream
	l.a.log.Info("events left unacknowledged: delivering them again in order first", "from", from, "to", to, "unacknowledged", info.NumAckPending)
	var wg sync.WaitGroup
	for seq := from; seq <= to; seq++ {
		var raw *jetstream.RawStreamMsg
		for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
			var err error
			raw, err = l.stream.GetMsg(ctx, seq)
			if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			l.a.log.Warn("event stream: an unacknowledged event unreadable: retrying", "seq", seq, "err", err)
			select {
			case <-ctx.Done():
				return false
			case <-time.After(backoff):
			}
		}
		if raw == nil {
			continue
		}
		d := &delivery{seq: seq, subj: raw.Subject, hdr: raw.Header, data: raw.Data, redel: true}
		wg.Add(1)
		d.done = func(ok bool) {
			if ok {
				l.mu.Lock()
				l.recovered[seq] = true
				l.mu.Unlock()
			}
			wg.Done()
		}
		select {
		case l.lanes[l.lane(d.subj)] <- d:
		case <-ctx.Done():
			wg.Done()
			return false
		}
	}
	wg.Wait()
	return ctx.Err() == nil
}

// deliverOne hands one event to the backend until it accepts it (true), or
// the adapter stops (false: not acknowledged, delivered again).
func (a *Adapter) deliverOne(ctx context.Context, m *delivery, sink eventsv1.EventSinkClient) bool {
	s, perr := subject.ParseDelivery(m.subj)
	ev := &eventsv1.Event{}
	if perr != nil || s.Consumer != a.cfg.Member || proto.Unmarshal(m.data, ev) != nil {
		// Only the gateway writes this stream; a message that does not read
		// is kept out of the backend and never delivered again.
		a.log.Error("event stream: a message that is not a delivery: terminated", "subject", m.subj)
		if m.msg != nil {
			_ = m.msg.Term()
		}
		return false
	}
	req := &eventsv1.DeliverRequest{
		Event: ev, Publisher: s.Publisher, Sequence: m.seq,
		Rule: m.hdr.Get(headerEventRule), Replay: m.hdr.Get(headerEventReplay) == "true",
		Redelivered: m.redel,
	}
	// While the backend is down the event stays ours (keepHeld), and so do
	// the events behind it in its lane.
	backoff, maxBackoff := 50*time.Millisecond, min(2*time.Second, a.ackWait()/3)
	// The delivery's span continues the gateway's trace of the publication
	// (its traceparent header: only the gateway writes this stream), so
	// publish → gateway → delivery is one trace, as a query is.
	dctx, span := bus.StartSpan(bus.ExtractTrace(ctx, m.hdr), "process", m.subj, trace.SpanKindConsumer, len(m.data), a.spanOpts...)
	defer span.End()
	for {
		cctx, cancel := context.WithTimeout(dctx, 30*time.Second)
		_, err := sink.Deliver(cctx, req)
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false // not acknowledged: delivered again
		}
		a.log.Warn("event not accepted by the backend: retrying", "publisher", s.Publisher, "type", s.Type,
			"seq", m.seq, "code", status.Code(err).String())
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
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
