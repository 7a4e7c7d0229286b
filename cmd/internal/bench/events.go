package bench

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/adapter"
	"github.com/jisr-bus/jisr/services/demodata"
)

// lagSink is a receiving backend that notes when each event arrived,
// against the time its publisher stamped on it (the same clock: this
// process publishes and receives).
type lagSink struct {
	eventsv1.UnimplementedEventSinkServer
	mu    sync.Mutex
	seen  map[string]bool
	lag   []time.Duration
	last  time.Time
	count atomic.Int64
}

// reset forgets the lags noted so far (a new step); the count goes on.
func (s *lagSink) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lag = nil
}

func (s *lagSink) Deliver(_ context.Context, req *eventsv1.DeliverRequest) (*eventsv1.DeliverResponse, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := req.GetEvent().GetId(); !s.seen[id] {
		s.seen[id] = true
		s.lag = append(s.lag, now.Sub(req.GetEvent().GetTime().AsTime()))
		s.last = now
		s.count.Add(1)
	}
	return &eventsv1.DeliverResponse{}, nil
}

// measureEvents measures life events end to end (docs/events.md): a
// civil-registry adapter publishes address changes at the top concurrency
// — each checked by the gateway, audited, stored in tax's stream — and
// tax's adapter delivers them to a backend in this process. Two steps, one
// after the other, each waited for until the backend has every event:
//
//   - unary: that many callers of EventPublisher.Publish, a gRPC call per
//     event (a third of the measured time): the publications per second
//     with their latency, and the delivery;
//   - streaming: EventPublisher.PublishStream with that many events in
//     flight (on one stream, or as many streams of at most the adapter's
//     bound as it takes): the publications with the latency of each
//     event's answer, and the delivery — events per second from the first
//     publication to the last delivery, the audit included, and the lag
//     from publication to the backend, p50/p99. This is the figure the
//     issue-19 target compares with the query path's.
//
// It runs with one gateway replica, as the full path it is compared with
// (the run before it may have left two), and counts the deliveries each
// publication made (one per consumer whose rule covers the event): the
// report gives events/s and deliveries/s.
func (b *harness) measureEvents(ctx context.Context, f *cluster) error {
	b.step("life events: publish with audit through the gateway (unary, then streaming), deliver to a backend")
	if len(f.gateways) != 1 {
		if err := b.restartGateways(ctx, f, nil, "gw-1"); err != nil {
			return err
		}
	}
	b.facts.EventGateways = len(f.gateways)
	sink := &lagSink{seen: map[string]bool{}}
	saddr, err := freeAddr()
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", saddr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	eventsv1.RegisterEventSinkServer(srv, sink)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	paddr, err := freeAddr()
	if err != nil {
		return err
	}
	pub, err := b.spawn("adapter-civil-registry-events", "--nats", f.natsURL, "adapter", "--member", "civil-registry",
		"--listen", paddr, "--backend", f.backendAddr)
	if err != nil {
		return err
	}
	defer pub.stop()
	taddr, err := freeAddr()
	if err != nil {
		return err
	}
	recv, err := b.spawn("adapter-tax-events", "--nats", f.natsURL, "adapter", "--member", "tax",
		"--listen", taddr, "--backend", saddr, "--event-sink", saddr, "--event-in-flight", fmt.Sprint(eventInFlight(b.judgedAt())))
	if err != nil {
		return err
	}
	defer recv.stop()
	if err := waitFor(ctx, pub, "publishing adapter", grpcServing(paddr)); err != nil {
		return err
	}
	if err := waitFor(ctx, recv, "receiving adapter", grpcServing(taddr)); err != nil {
		return err
	}
	cc, err := dialLoopback(paddr)
	if err != nil {
		return err
	}
	defer cc.Close()
	client := eventsv1.NewEventPublisherClient(cc)

	run := time.Now().UnixNano()
	var n atomic.Int64
	event := func(step string) *eventsv1.Event {
		i := n.Add(1)
		return &eventsv1.Event{
			Id: fmt.Sprintf("bench-%x-%s%011d", run, step, i), Time: timestamppb.Now(), Eid: demodata.EID(demodata.DefaultSeed, int(i%10000)),
			Payload: &eventsv1.Event_AddressChanged{AddressChanged: &eventsv1.AddressChanged{
				Place: &jisrv1.Place{Commune: "Agdal-Ryad", Province: "Rabat", Country: "MA"}, Street: "12 avenue de France"}},
		}
	}
	conc := b.judgedAt()
	procs := append(f.procs(), pub, recv)

	// Unary: a call per event, a third of the measured time.
	full := b.o.duration
	b.o.duration = max(full/3, 300*time.Millisecond)
	_, _, err = b.eventsStep(ctx, sink, procs, conc, "unary", "events-publish", "events-delivery-unary", "life events: Publish (unary)",
		func(ctx context.Context, _, _ int) (int32, error) {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			resp, err := client.Publish(cctx, &eventsv1.PublishRequest{Event: event("u")})
			return resp.GetDeliveries(), err
		}, nil)
	b.o.duration = full
	if err != nil {
		return err
	}

	// Streaming: conc events in flight, on streams of at most the
	// adapter's bound each.
	streams := make([]*eventStream, (conc+adapter.PublishStreamInFlight-1)/adapter.PublishStreamInFlight)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	for i := range streams {
		st, err := client.PublishStream(sctx)
		if err != nil {
			return fmt.Errorf("PublishStream: %w", err)
		}
		streams[i] = newEventStream(st)
	}
	var prof chan error
	if b.o.profile {
		prof = b.profileAs(ctx, procs, b.o.warmup, "events-")
	}
	r, d, err := b.eventsStep(ctx, sink, procs, conc, "stream", "events-stream-publish", "events-delivery", "life events: PublishStream",
		func(ctx context.Context, worker, _ int) (int32, error) {
			return streams[worker%len(streams)].publish(ctx, event("s"))
		}, prof)
	if err != nil {
		return err
	}
	for _, s := range streams {
		_ = s.st.CloseSend()
	}
	fmt.Fprintf(b.stderr, "  streaming: %.0f events/s published at %d in flight (p99 %.1f ms; %.2f deliveries each, %d gateway replica(s)); delivered end to end at %.0f/s, lag p50 %.1f ms, p99 %.1f ms\n",
		r.QPS, conc, r.P99, b.facts.DeliveriesPerEvent, b.facts.EventGateways, d.QPS, d.P50, d.P99)
	return nil
}

// eventsStep publishes events with publish from conc workers for warm-up
// plus the measured time, then waits until the backend has every event
// published (each answered OK is durable in tax's stream). It adds two
// results: the publications (scenario pubScenario: their rate and latency)
// and the delivery (delScenario: events per second from the first
// publication to the last delivery, the lag from publication to the
// backend as its latencies, the CPU of every process per event over all of
// it), and sets the deliveries per event.
func (b *harness) eventsStep(ctx context.Context, sink *lagSink, procs []*proc, conc int, label, pubScenario, delScenario, name string,
	publish func(ctx context.Context, worker, i int) (int32, error), prof chan error) (Result, Result, error) {
	sink.reset()
	base := sink.count.Load() // the events of the steps before
	var published, deliveries atomic.Int64
	s0 := sampleCPU(procs)
	first := time.Now()
	r := b.load(ctx, fmt.Sprintf("%s, c=%d", name, conc), conc, procs, func(ctx context.Context, worker, i int) error {
		published.Add(1)
		n, err := publish(ctx, worker, i)
		if err != nil {
			published.Add(-1) // not published: not waited for
			return err
		}
		deliveries.Add(int64(n))
		return nil
	})
	r.Scenario = pubScenario
	if prof != nil {
		if err := <-prof; err != nil {
			fmt.Fprintf(b.stderr, "profile: %v\n", err)
		}
	}
	b.results = append(b.results, r)

	// Every publication that was answered OK is durable in tax's stream:
	// wait for the backend to have them all.
	want := published.Load()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for sink.count.Load()-base < want {
		select {
		case <-wctx.Done():
			return r, Result{}, fmt.Errorf("events (%s): %d of %d delivered", label, sink.count.Load()-base, want)
		case <-time.After(50 * time.Millisecond):
		}
	}
	s1 := sampleCPU(procs)
	sink.mu.Lock()
	lag := append([]time.Duration(nil), sink.lag...)
	last := sink.last
	sink.mu.Unlock()
	// Its latencies are the lags; its rate is events from the first
	// publication to the last delivery; its CPU is all of it, per event.
	d := Result{Name: name + ": delivery to the backend (lag from publication)", Scenario: delScenario,
		Concurrency: conc, Seconds: last.Sub(first).Seconds(), lat: lag,
		cpu: s1.path - s0.path, clientCPU: s1.self - s0.self, machine: s1.machine.sub(s0.machine), perCPU: map[string]time.Duration{}}
	for _, p := range procs {
		d.perCPU[p.name] = s1.per[p.name] - s0.per[p.name]
	}
	d.summarise()
	b.results = append(b.results, d)
	if want > 0 {
		b.facts.DeliveriesPerEvent = float64(deliveries.Load()) / float64(want)
	}
	fmt.Fprintf(b.stderr, "  %s: %d events published (%.0f/s at c=%d, p99 %.1f ms); delivered end to end at %.0f/s, lag p50 %.1f ms, p99 %.1f ms\n",
		label, want, r.QPS, conc, r.P99, d.QPS, d.P50, d.P99)
	return r, d, nil
}

// eventStream is one PublishStream shared by several workers: each sends
// its event (one send at a time) and waits for that event's answer, which
// the stream's reader hands it by the event's index.
type eventStream struct {
	st     grpc.BidiStreamingClient[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse]
	sendMu sync.Mutex
	next   uint64
	mu     sync.Mutex
	wait   map[uint64]chan *eventsv1.PublishStreamResponse
	broken chan struct{}
	err    error // why the stream broke, once broken is closed
}

func newEventStream(st grpc.BidiStreamingClient[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse]) *eventStream {
	s := &eventStream{st: st, wait: map[uint64]chan *eventsv1.PublishStreamResponse{}, broken: make(chan struct{})}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				s.err = err
				close(s.broken)
				return
			}
			s.mu.Lock()
			ch := s.wait[r.GetIndex()]
			delete(s.wait, r.GetIndex())
			s.mu.Unlock()
			if ch != nil {
				ch <- r
			}
		}
	}()
	return s
}

// publish sends one event and waits for its answer: its deliveries, or
// the refusal as an error with Publish's code, message and reason.
func (s *eventStream) publish(ctx context.Context, ev *eventsv1.Event) (int32, error) {
	ch := make(chan *eventsv1.PublishStreamResponse, 1)
	s.sendMu.Lock()
	i := s.next
	s.next++
	s.mu.Lock()
	s.wait[i] = ch
	s.mu.Unlock()
	err := s.st.Send(&eventsv1.PublishStreamRequest{Event: ev})
	s.sendMu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("PublishStream: %w", err)
	}
	select {
	case r := <-ch:
		if c := codes.Code(r.GetCode()); c != codes.OK {
			return 0, fmt.Errorf("PublishStream: %s %s: %s", c, r.GetReason(), r.GetMessage())
		}
		return r.GetDeliveries(), nil
	case <-s.broken:
		return 0, fmt.Errorf("PublishStream: %w", s.err)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// eventInFlight is how many events the bench's receiving adapter delivers
// at once: as many as are published at once, up to one per citizen of the
// run. With the adapter's default (adapter.DefaultEventInFlight, 64) the
// delivery, not the path, was the limit on 16 cores: published at 20,400
// a second, delivered at 15,500, the lag growing through the run.
func eventInFlight(top int) int { return min(max(top, 64), tokensPerRun/2) }
