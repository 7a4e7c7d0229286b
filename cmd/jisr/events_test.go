package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// sink is a receiving backend that does what EventSink asks of one: it
// applies each event once, by id, and answers OK to an event it already
// applied. It counts every call, to see what the adapter sent.
type sink struct {
	eventsv1.UnimplementedEventSinkServer
	mu       sync.Mutex
	applied  map[string]bool
	order    map[string][]int // eid → event numbers, in the order applied
	calls    int
	repeated int // calls for an id already applied
	redeliv  int // calls marked redelivered
	leaks    int // events with a field the rule does not release
}

func (s *sink) Deliver(_ context.Context, req *eventsv1.DeliverRequest) (*eventsv1.DeliverResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if req.GetRedelivered() {
		s.redeliv++
	}
	ev := req.GetEvent()
	if ev.GetPersonBorn().GetMotherEid() != "" || req.GetPublisher() != "civil-registry" || req.GetRule() != "cnss-births" {
		s.leaks++
	}
	if s.applied[ev.GetId()] {
		s.repeated++
		return &eventsv1.DeliverResponse{}, nil
	}
	s.applied[ev.GetId()] = true
	var n int
	fmt.Sscanf(ev.GetId(), "birth-%012d", &n)
	s.order[ev.GetEid()] = append(s.order[ev.GetEid()], n)
	return &eventsv1.DeliverResponse{}, nil
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.applied)
}

// eventsTestCount is how many events TestEventsReachABackendThatWasDown
// publishes: a thousand in `make test`, ten thousand with -tags events
// (`make test-events`).
var eventsTestCount = 1000

// Events published while the receiving backend is stopped all reach it once
// it starts, exactly once and in order per citizen — through a kill -9 of
// the receiving adapter mid-stream and its restart. Every event is also
// published twice (a publisher retrying): still delivered once.
func TestEventsReachABackendThatWasDown(t *testing.T) {
	if testing.Short() {
		t.Skip("-short (make test-short): runs an adapter process and kills it; make test and CI run it")
	}
	n := eventsTestCount
	dir := t.TempDir()
	logs := &syncBuffer{}
	fedPath := "../testdata/federation.yaml"
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	g, gw, civil := startEventHub(ctx, t, fedPath, dir, logs)

	// The receiving backend's address, not yet served: it is down.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sinkAddr := lis.Addr().String()
	lis.Close()

	// CNSS's adapter, a real child process (the test binary is jisr).
	startAdapter := func() (*exec.Cmd, chan struct{}) {
		p := exec.Command(os.Args[0], "--federation", fedPath, "--certs", g.CertsDir, "--data", dir, "--nats", g.NATSURL,
			"--log-level", "warn", "adapter", "--member", "cnss", "--listen", "127.0.0.1:0",
			"--backend", sinkAddr, "--event-sink", sinkAddr, "--event-ack-wait", "1s")
		p.Env = append(os.Environ(), "JISR_TEST_MAIN=1")
		p.Stdout, p.Stderr = logs, logs
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = p.Wait(); close(exited) }()
		t.Cleanup(func() { _ = p.Process.Kill(); <-exited })
		return p, exited
	}
	first, firstExited := startAdapter()

	// The civil registry publishes n births of 100 citizens, each citizen's
	// in order, each twice.
	cc, err := grpc.NewClient(civil.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	pub := eventsv1.NewEventPublisherClient(cc)
	published := time.Now()
	const citizens, workers = 100, 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A citizen's events all come from one worker, in order.
			for i := 0; i < n; i++ {
				if (i%citizens)%workers != w {
					continue
				}
				ev := &eventsv1.Event{Id: fmt.Sprintf("birth-%012d", i), Time: timestamppb.Now(), Eid: eidN(i % citizens),
					Payload: &eventsv1.Event_PersonBorn{PersonBorn: &eventsv1.PersonBorn{DateOfBirth: &jisrv1.Date{Year: 2026, Month: 11, Day: 27}, MotherEid: eidN(999)}}}
				for range 2 {
					cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					_, err := pub.Publish(cctx, &eventsv1.PublishRequest{Event: ev})
					cancel()
					if err != nil {
						errs <- fmt.Errorf("publish %d: %w", i, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	t.Logf("%d events published twice in %s", n, time.Since(published).Round(time.Millisecond))
	if delivered, _ := gw.Events().Counts(); delivered != int64(n) {
		t.Fatalf("the gateway stored %d deliveries of %d events published twice, want %d", delivered, n, n)
	}

	// The backend starts: everything it missed arrives.
	s := &sink{applied: map[string]bool{}, order: map[string][]int{}}
	srv := grpc.NewServer()
	eventsv1.RegisterEventSinkServer(srv, s)
	lis, err = net.Listen("tcp", sinkAddr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	backendUp := time.Now()
	t.Cleanup(srv.Stop)

	// kill -9 the adapter mid-stream, then start it again.
	bustest.Eventually(t, 2*time.Minute, func() error {
		select {
		case <-firstExited:
			t.Fatalf("the adapter exited:\n%s", logs.String())
		default:
		}
		return bustest.Check(s.count() >= n/3, fmt.Sprintf("%d of %d delivered before the kill", s.count(), n))
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-firstExited
	atKill := s.count()
	startAdapter()
	bustest.Eventually(t, 3*time.Minute, func() error {
		return bustest.Check(s.count() == n, fmt.Sprintf("%d of %d delivered (%d at the kill)", s.count(), n, atKill))
	})

	t.Logf("%d events delivered in %s after the backend started (a kill -9 and a restart included)", n, time.Since(backendUp).Round(time.Millisecond))

	// Nothing is left in flight, and nothing more comes.
	op, src, err := g.Connect(ctx, subject.Operator)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { op.Close(); src.Close() }()
	js, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 30*time.Second, func() error {
		c, err := js.Consumer(ctx, subject.EventStream("cnss"), subject.EventDurable)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		return bustest.Check(info.NumPending == 0 && info.NumAckPending == 0, fmt.Sprintf("pending %d, unacknowledged %d", info.NumPending, info.NumAckPending))
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	// Only events unacknowledged at the kill (and those after the
	// acknowledgement floor then) come again, each marked redelivered.
	if s.leaks > 0 {
		t.Fatalf("%d deliveries carried what the rule does not release, or a wrong publisher or rule", s.leaks)
	}
	if s.calls != n+s.repeated || s.repeated > s.redeliv {
		t.Fatalf("%d calls for %d events: %d repeated, %d marked redelivered", s.calls, n, s.repeated, s.redeliv)
	}
	for eid, got := range s.order {
		for k := 1; k < len(got); k++ {
			if got[k] < got[k-1] {
				t.Fatalf("citizen %s: events applied out of order: %v", eid, got)
			}
		}
	}
	if len(s.order) != citizens {
		t.Fatalf("%d citizens got events, want %d", len(s.order), citizens)
	}
	t.Logf("%d events delivered once each; %d at the kill; %d calls, %d repeated", n, atKill, s.calls, s.repeated)
}

// startEventHub starts what the event tests share, in dir, with the
// federation file fed: the certificates, NATS (initialised as the operator
// does), one gateway and the civil registry's adapter, three NATS
// connections each (its backend not served: the tests publish through the
// adapter).
// Everything stops with the test; logs gets the processes' warnings.
func startEventHub(ctx context.Context, t *testing.T, fed, dir string, logs *syncBuffer) (*process.Env, *process.GatewayNode, *process.AdapterNode) {
	t.Helper()
	g := &process.Env{FederationPath: fed, CertsDir: filepath.Join(dir, "certs"), DataDir: dir,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	f, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(g, f); err != nil {
		t.Fatal(err)
	}
	ns, err := process.StartNATS(context.Background(), g, process.NATSOptions{Listen: "127.0.0.1:-1", Sync: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	g.NATSURL = ns.ClientURL()
	if err := process.NATSInit(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	// Three NATS connections each, as on a 12-core machine: the adapter
	// publishes over them by citizen, the gateway takes publications on
	// each and stores by citizen, and the tests' order per citizen holds.
	gw, err := process.StartGateway(ctx, g, process.GatewayOptions{HTTPAddr: "127.0.0.1:0", Instance: "gw-1", NATSConns: 3})
	if err != nil {
		t.Fatalf("gateway: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() { _ = gw.Stop(context.Background()) })
	civil, err := process.StartAdapter(ctx, g, process.AdapterOptions{Member: "civil-registry", Listen: "127.0.0.1:0", Backend: "127.0.0.1:1", NATSConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = civil.Stop(context.Background()) })
	return g, gw, civil
}
