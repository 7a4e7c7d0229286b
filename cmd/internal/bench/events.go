package bench

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
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
// tax's adapter delivers them to a backend in this process. It reports the
// publications per second with their latency (the audit included), and the
// delivery: events per second from the first publication to the last
// delivery, and the lag from publication to the backend, p50/p99.
//
// It runs with one gateway replica, as the full path it is compared with
// (the run before it may have left two), and counts the deliveries each
// publication made (one per consumer whose rule covers the event): the
// report gives events/s and deliveries/s.
func (b *harness) measureEvents(ctx context.Context, f *cluster) error {
	b.step("life events: publish with audit through the gateway, deliver to a backend")
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
		"--listen", taddr, "--backend", saddr, "--event-sink", saddr)
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
	var published, deliveries atomic.Int64
	conc := b.top()
	procs := append(f.procs(), pub, recv)
	s0 := sampleCPU(procs)
	var prof chan error
	if b.o.profile {
		prof = b.profileAs(ctx, procs, b.o.warmup, "events-")
	}
	first := time.Now()
	r := b.load(ctx, fmt.Sprintf("life events: publish, c=%d", conc), conc, procs, func(ctx context.Context, _, _ int) error {
		n := published.Add(1)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := client.Publish(cctx, &eventsv1.PublishRequest{Event: &eventsv1.Event{
			Id: fmt.Sprintf("bench-%x-%012d", run, n), Time: timestamppb.Now(), Eid: demodata.EID(demodata.DefaultSeed, int(n%10000)),
			Payload: &eventsv1.Event_AddressChanged{AddressChanged: &eventsv1.AddressChanged{
				Place: &jisrv1.Place{Commune: "Agdal-Ryad", Province: "Rabat", Country: "MA"}, Street: "12 avenue de France"}},
		}})
		if err != nil {
			published.Add(-1) // not published: not waited for
			return err
		}
		deliveries.Add(int64(resp.GetDeliveries()))
		return nil
	})
	r.Scenario = "events-publish"
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
	for sink.count.Load() < want {
		select {
		case <-wctx.Done():
			return fmt.Errorf("events: %d of %d delivered", sink.count.Load(), want)
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
	d := Result{Name: "life events: delivery to the backend (lag from publication)", Scenario: "events-delivery",
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
	fmt.Fprintf(b.stderr, "  %d events published (%.0f/s at c=%d, p99 %.1f ms; %.2f deliveries each, %d gateway replica(s)); delivered end to end at %.0f/s, lag p50 %.1f ms, p99 %.1f ms\n",
		want, r.QPS, conc, r.P99, b.facts.DeliveriesPerEvent, b.facts.EventGateways, d.QPS, d.P50, d.P99)
	return nil
}
