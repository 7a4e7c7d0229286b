package adapter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/adapter"
)

// heldGateway takes the civil registry's publications on the gateway's
// connection (the gateway's own identity and queue group) and answers each
// only when released, noting how many it holds at once, in all and per
// citizen (the subject's ckey), and the order of each citizen's events.
type heldGateway struct {
	mu       sync.Mutex
	held     []*nats.Msg
	release  bool
	max      int
	perCKey  map[string]int
	maxCKey  int
	order    map[string][]string // ckey → event ids as they arrived
	received int
}

func (g *heldGateway) take(m *nats.Msg) {
	ev := &eventsv1.Event{}
	_ = proto.Unmarshal(m.Data, ev)
	ck := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	g.mu.Lock()
	defer g.mu.Unlock()
	g.received++
	g.order[ck] = append(g.order[ck], ev.GetId())
	if g.release {
		answerPublication(m, ev.GetId())
		return
	}
	g.held = append(g.held, m)
	g.perCKey[ck]++
	g.max = max(g.max, len(g.held))
	g.maxCKey = max(g.maxCKey, g.perCKey[ck])
}

// releaseAll answers every held publication, and every later one at once.
func (g *heldGateway) releaseAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.release = true
	for _, m := range g.held {
		ev := &eventsv1.Event{}
		_ = proto.Unmarshal(m.Data, ev)
		answerPublication(m, ev.GetId())
	}
	g.held = nil
}

func (g *heldGateway) heldNow() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held)
}

func answerPublication(m *nats.Msg, id string) {
	data, _ := proto.Marshal(&eventsv1.PublishResponse{Id: id, Deliveries: 1})
	_ = m.Respond(data)
}

// streamFixture is the civil registry's adapter serving EventPublisher on a
// real gRPC server, its publications taken by a heldGateway on the bus.
type streamFixture struct {
	gw     *heldGateway
	client eventsv1.EventPublisherClient
	cc     *grpc.ClientConn
	conns  []*nats.Conn // the adapter's: Conn, then MoreConns
	env    *bustest.Env
}

func startStreamFixture(t *testing.T) *streamFixture { return startStreamFixtureConns(t, 1) }

// startStreamFixtureConns is startStreamFixture with an adapter of n NATS
// connections.
func startStreamFixtureConns(t *testing.T, n int) *streamFixture {
	t.Helper()
	env := bustest.Start(t)
	var conns []*nats.Conn
	for range n {
		conns = append(conns, env.Connect(t, "civil-registry"))
	}
	g := &heldGateway{perCKey: map[string]int{}, order: map[string][]string{}}
	gwc := env.Connect(t, "gateway")
	sub, err := gwc.QueueSubscribe(subject.EventPrefix+".civil-registry.>", subject.GatewayQueue, g.take)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := gwc.Flush(); err != nil {
		t.Fatal(err)
	}
	a, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer,
		Conn: conns[0], MoreConns: conns[1:], Log: bustest.Logger(t), DefaultTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := a.GRPCServer()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { g.releaseAll(); srv.Stop() })
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return &streamFixture{gw: g, client: eventsv1.NewEventPublisherClient(cc), cc: cc, conns: conns, env: env}
}

func addressChange(id, eid string) *eventsv1.Event {
	return &eventsv1.Event{Id: id, Time: timestamppb.Now(), Eid: eid,
		Payload: &eventsv1.Event_AddressChanged{AddressChanged: &eventsv1.AddressChanged{
			Place: &jisrv1.Place{Commune: "Agdal-Ryad", Province: "Rabat", Country: "MA"}, Street: "12 avenue de France"}}}
}

// readAnswers reads a stream's answers until it ends, by index.
// closeAndRead ends the stream's sending side and reads every answer.
func closeAndRead(t *testing.T, st grpc.BidiStreamingClient[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse]) map[uint64]*eventsv1.PublishStreamResponse {
	t.Helper()
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	answers, err := readAnswers(t, st)
	if err != nil {
		t.Fatal(err)
	}
	return answers
}

func readAnswers(t *testing.T, st grpc.BidiStreamingClient[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse]) (map[uint64]*eventsv1.PublishStreamResponse, error) {
	out := map[uint64]*eventsv1.PublishStreamResponse{}
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if out[r.GetIndex()] != nil {
			t.Errorf("event %d answered twice", r.GetIndex())
		}
		out[r.GetIndex()] = r
	}
}

// A backend that sends far more events than the bound without waiting
// finds at most PublishStreamInFlight of them at the gateway at once (the
// adapter reads no further), and every one answered once when they are.
func TestPublishStreamHoldsAtMostItsBound(t *testing.T) {
	t.Parallel()
	f := startStreamFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	st, err := f.client.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3 * adapter.PublishStreamInFlight
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			// Every event a different citizen: nothing holds them back
			// but the bound.
			if err := st.Send(&eventsv1.PublishStreamRequest{Event: addressChange(fmt.Sprintf("bound-%012d", i), fmt.Sprintf("B%d", 100000+i))}); err != nil {
				sent <- err
				return
			}
		}
		sent <- st.CloseSend()
	}()
	bustest.Eventually(t, time.Minute, func() error {
		return bustest.Check(f.gw.heldNow() == adapter.PublishStreamInFlight, fmt.Sprintf("the gateway holds %d publications, want the bound %d", f.gw.heldNow(), adapter.PublishStreamInFlight))
	})
	f.gw.releaseAll()
	answers, err := readAnswers(t, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if len(answers) != n {
		t.Fatalf("%d answers, want %d", len(answers), n)
	}
	for i := range uint64(n) {
		r := answers[i]
		if r == nil || r.GetCode() != 0 || r.GetDeliveries() != 1 || r.GetId() != fmt.Sprintf("bound-%012d", i) {
			t.Fatalf("event %d answered %v", i, r)
		}
	}
	f.gw.mu.Lock()
	defer f.gw.mu.Unlock()
	if f.gw.max > adapter.PublishStreamInFlight || f.gw.received != n {
		t.Fatalf("the gateway held up to %d at once (bound %d) and received %d of %d", f.gw.max, adapter.PublishStreamInFlight, f.gw.received, n)
	}
}

// A citizen's events on a stream reach the gateway one after another, in
// the order sent, however many the backend sends at once (a citizen
// flood); the other citizens' go at once beside them.
func TestPublishStreamKeepsEachCitizensOrder(t *testing.T) {
	t.Parallel()
	f := startStreamFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	st, err := f.client.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 200 events of one citizen, with one event each of 20 others
	// interleaved, then 100 more of 3 citizens in turn.
	var want []string
	eids := map[string]string{}
	send := func(id, eid string) {
		t.Helper()
		want = append(want, id)
		eids[id] = eid
		if err := st.Send(&eventsv1.PublishStreamRequest{Event: addressChange(id, eid)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		send(fmt.Sprintf("flood-%012d", i), "F1")
		if i%10 == 0 {
			send(fmt.Sprintf("other-%012d", i), fmt.Sprintf("O%d", i))
		}
	}
	for i := range 100 {
		send(fmt.Sprintf("turns-%012d", i), fmt.Sprintf("T%d", i%3))
	}
	// Held at the gateway: one event per citizen at once — the flood's
	// first, each other's, the turns' first three.
	bustest.Eventually(t, time.Minute, func() error {
		return bustest.Check(f.gw.heldNow() == 1+20+3, fmt.Sprintf("the gateway holds %d publications, want 24 (one per citizen)", f.gw.heldNow()))
	})
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	f.gw.releaseAll()
	answers, err := readAnswers(t, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(answers) != len(want) {
		t.Fatalf("%d answers, want %d", len(answers), len(want))
	}
	f.gw.mu.Lock()
	defer f.gw.mu.Unlock()
	if f.gw.maxCKey != 1 {
		t.Fatalf("the gateway held %d events of one citizen at once, want 1", f.gw.maxCKey)
	}
	// Each citizen's events arrived in the order sent.
	byEID := map[string][]string{}
	for _, id := range want {
		byEID[eids[id]] = append(byEID[eids[id]], id)
	}
	var got []string
	for _, ids := range f.gw.order {
		got = append(got, ids...)
	}
	if len(got) != len(want) {
		t.Fatalf("the gateway received %d events, want %d", len(got), len(want))
	}
	for _, ids := range f.gw.order {
		e := eids[ids[0]]
		if fmt.Sprint(ids) != fmt.Sprint(byEID[e]) {
			t.Fatalf("citizen %s's events arrived as %v, sent as %v", e, ids, byEID[e])
		}
	}
}

// Every check of Publish applies to each event of a stream, with the same
// status: a refused event is answered with Publish's code and message, and
// the stream goes on.
func TestPublishStreamChecksEachEventAsPublish(t *testing.T) {
	t.Parallel()
	f := startStreamFixture(t)
	f.gw.releaseAll()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	income := addressChange("income-0000000001", "AB1")
	income.Payload = &eventsv1.Event_IncomeDeclared{IncomeDeclared: &eventsv1.IncomeDeclared{Year: 2025}}
	noPayload := addressChange("nopayload-0000001", "AB1")
	noPayload.Payload = nil
	huge := addressChange("huge-000000000001", "AB1")
	huge.GetAddressChanged().Street = strings.Repeat("x", 2<<20) // over the bus's maximum payload, under gRPC's
	bad := []*eventsv1.Event{
		nil,
		addressChange("short", "AB1"),
		addressChange("bad id with spaces", "AB1"),
		noPayload,
		income, // a type the civil registry does not publish
		addressChange("badeid-0000000001", "not an eid"),
		huge,
	}
	st, err := f.client.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range bad {
		if err := st.Send(&eventsv1.PublishStreamRequest{Event: ev}); err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&eventsv1.PublishStreamRequest{Event: addressChange(fmt.Sprintf("good-%012d", i), "AB1")}); err != nil {
			t.Fatal(err)
		}
	}
	answers := closeAndRead(t, st)
	for i, ev := range bad {
		_, uerr := f.client.Publish(ctx, &eventsv1.PublishRequest{Event: ev})
		us := status.Convert(uerr)
		if us.Code() == codes.OK {
			t.Fatalf("Publish accepted bad event %d", i)
		}
		r := answers[uint64(2*i)]
		if r == nil || codes.Code(r.GetCode()) != us.Code() || r.GetMessage() != us.Message() || r.GetDeliveries() != 0 {
			t.Fatalf("bad event %d answered %v on the stream, Publish: %v", i, r, uerr)
		}
		if g := answers[uint64(2*i+1)]; g == nil || g.GetCode() != 0 || g.GetDeliveries() != 1 {
			t.Fatalf("the good event after bad event %d answered %v", i, g)
		}
	}
	if len(answers) != 2*len(bad) {
		t.Fatalf("%d answers, want %d", len(answers), 2*len(bad))
	}
}

// rawCodec sends bytes as they are: a backend that writes garbage on the
// stream.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

// A stream that sends what is not a PublishStreamRequest, or a message
// over gRPC's size limit, is ended at once with gRPC's own status (gRPC
// writes it when the read fails), as a Publish of the same bytes is
// refused; nothing sent after it is read. An event sent before it may be
// left unanswered: the backend publishes it again, same id.
func TestPublishStreamEndsOnGarbage(t *testing.T) {
	t.Parallel()
	f := startStreamFixture(t)
	f.gw.releaseAll()
	for name, tc := range map[string]struct {
		msg  []byte
		code codes.Code
	}{
		"garbage": {[]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01}, codes.Internal},
		"huge":    {append([]byte{0x0a, 0x80, 0x80, 0xc0, 0x02}, make([]byte, 5<<20)...), codes.ResourceExhausted},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		st, err := f.cc.NewStream(ctx, &eventsv1.EventPublisher_ServiceDesc.Streams[0], eventsv1.EventPublisher_PublishStream_FullMethodName, grpc.ForceCodec(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		before, _ := proto.Marshal(&eventsv1.PublishStreamRequest{Event: addressChange("before-"+name+"-0000000", "AB1")})
		after, _ := proto.Marshal(&eventsv1.PublishStreamRequest{Event: addressChange("after-"+name+"-00000000", "AB2")})
		for _, m := range [][]byte{before, tc.msg, after} {
			if err := st.SendMsg(m); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
		}
		_ = st.CloseSend()
		for {
			var b []byte
			err := st.RecvMsg(&b)
			if err == nil {
				r := &eventsv1.PublishStreamResponse{}
				if err := proto.Unmarshal(b, r); err != nil || r.GetIndex() != 0 {
					t.Fatalf("%s: answer %v (%v), want none but the first event's", name, r, err)
				}
				continue
			}
			if status.Code(err) != tc.code {
				t.Fatalf("%s: the stream ended with %v, want %v", name, err, tc.code)
			}
			break
		}
		// Publish of the same bytes: the same code.
		var out []byte
		err = f.cc.Invoke(ctx, eventsv1.EventPublisher_Publish_FullMethodName, tc.msg, &out, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) != tc.code {
			t.Fatalf("%s: Publish of the same bytes: %v, want %v", name, err, tc.code)
		}
	}
	f.gw.mu.Lock()
	defer f.gw.mu.Unlock()
	for _, ids := range f.gw.order {
		for _, id := range ids {
			if strings.HasPrefix(id, "after-") {
				t.Fatalf("the gateway received %s, sent after what ended the stream", id)
			}
		}
	}
}

// BenchmarkEventPublish: a backend's publications through the civil
// registry's adapter to a responder on the gateway's connection answering
// each at once — unary: a Publish call per event from as many callers;
// stream: one PublishStream with as many events in flight, each caller
// sending its event and waiting for its answer. cpu-ns/op is the CPU of
// the whole process (the backend, the adapter, NATS, the responder) per
// event.
func BenchmarkEventPublish(b *testing.B) {
	env := bustest.Start(b, bustest.WithoutJetStream())
	ctx := context.Background()
	gw := env.Connect(b, "gateway")
	reply, _ := proto.Marshal(&eventsv1.PublishResponse{Id: "an-event-id-of-16-or-more", Deliveries: 1})
	sub, err := gw.QueueSubscribe(subject.EventPrefix+".civil-registry.>", subject.GatewayQueue, func(m *nats.Msg) { _ = m.Respond(reply) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := gw.Flush(); err != nil {
		b.Fatal(err)
	}
	a, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(b, "civil-registry"), Log: bustest.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	srv := a.GRPCServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cc.Close() })
	client := eventsv1.NewEventPublisherClient(cc)
	var n atomic.Int64
	event := func() *eventsv1.Event {
		i := n.Add(1)
		return addressChange(fmt.Sprintf("bench-%012d", i), fmt.Sprintf("B%d", i%100000))
	}
	b.Run("unary", func(b *testing.B) {
		runParallel(b, func() error {
			_, err := client.Publish(ctx, &eventsv1.PublishRequest{Event: event()})
			return err
		})
	})
	b.Run("stream", func(b *testing.B) {
		st, err := client.PublishStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		var sendMu, mu sync.Mutex
		var next uint64
		wait := map[uint64]chan *eventsv1.PublishStreamResponse{}
		go func() {
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				mu.Lock()
				ch := wait[r.GetIndex()]
				delete(wait, r.GetIndex())
				mu.Unlock()
				ch <- r
			}
		}()
		runParallel(b, func() error {
			ch := make(chan *eventsv1.PublishStreamResponse, 1)
			sendMu.Lock()
			mu.Lock()
			wait[next] = ch
			next++
			mu.Unlock()
			err := st.Send(&eventsv1.PublishStreamRequest{Event: event()})
			sendMu.Unlock()
			if err != nil {
				return err
			}
			if r := <-ch; r.GetCode() != 0 {
				return fmt.Errorf("answered %v", r)
			}
			return nil
		})
		_ = st.CloseSend()
	})
}

// Many streams at once (a hostile or broken backend opening one stream
// after another) find at most PublishStreamsInFlight events at the gateway
// together: the bound of one stream does not multiply with the streams.
func TestPublishStreamsHoldAtMostTheAdaptersBound(t *testing.T) {
	t.Parallel()
	f := startStreamFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const streams = adapter.PublishStreamsInFlight/adapter.PublishStreamInFlight + 2
	sts := make([]grpc.BidiStreamingClient[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse], streams)
	sent := make(chan error, streams)
	for s := range sts {
		st, err := f.client.PublishStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sts[s] = st
		go func() {
			for i := range adapter.PublishStreamInFlight {
				if err := st.Send(&eventsv1.PublishStreamRequest{Event: addressChange(fmt.Sprintf("many-%03d-%08d", s, i), fmt.Sprintf("M%d", 100000+s*1000+i))}); err != nil {
					sent <- err
					return
				}
			}
			sent <- st.CloseSend()
		}()
	}
	bustest.Eventually(t, time.Minute, func() error {
		return bustest.Check(f.gw.heldNow() >= adapter.PublishStreamsInFlight, fmt.Sprintf("the gateway holds %d publications, want the adapter's bound %d", f.gw.heldNow(), adapter.PublishStreamsInFlight))
	})
	f.gw.mu.Lock()
	most := f.gw.max
	f.gw.mu.Unlock()
	if most > adapter.PublishStreamsInFlight {
		t.Errorf("the gateway held %d publications of %d streams at once, want at most the adapter's bound %d", most, streams, adapter.PublishStreamsInFlight)
	}
	f.gw.releaseAll()
	for _, st := range sts {
		answers, err := readAnswers(t, st)
		if err != nil {
			t.Fatal(err)
		}
		if len(answers) != adapter.PublishStreamInFlight {
			t.Fatalf("%d answers, want %d", len(answers), adapter.PublishStreamInFlight)
		}
	}
	for range streams {
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
	}
	f.gw.mu.Lock()
	defer f.gw.mu.Unlock()
	if f.gw.max > adapter.PublishStreamsInFlight || f.gw.received != streams*adapter.PublishStreamInFlight {
		t.Fatalf("the gateway held up to %d at once (adapter's bound %d) and received %d of %d", f.gw.max, adapter.PublishStreamsInFlight, f.gw.received, streams*adapter.PublishStreamInFlight)
	}
}

// A stream cancelled with its events in flight gives their share of the
// adapter's bound back: the streams after it publish the whole bound.
func TestACancelledStreamFreesItsShareOfTheAdaptersBound(t *testing.T) {
	t.Parallel()
	f := startStreamFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	send := func(st grpc.BidiStreamingClient[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse], s int) {
		go func() {
			for i := range adapter.PublishStreamInFlight {
				if st.Send(&eventsv1.PublishStreamRequest{Event: addressChange(fmt.Sprintf("cancel-%03d-%08d", s, i), fmt.Sprintf("C%d", 100000+s*1000+i))}) != nil {
					return
				}
			}
		}()
	}
	actx, acancel := context.WithCancel(ctx)
	a, err := f.client.PublishStream(actx)
	if err != nil {
		t.Fatal(err)
	}
	send(a, 0)
	bustest.Eventually(t, time.Minute, func() error {
		return bustest.Check(f.gw.heldNow() == adapter.PublishStreamInFlight, fmt.Sprintf("the gateway holds %d publications, want %d", f.gw.heldNow(), adapter.PublishStreamInFlight))
	})
	acancel() // the first stream's events stay unanswered at the gateway
	const streams = adapter.PublishStreamsInFlight / adapter.PublishStreamInFlight
	for s := 1; s <= streams; s++ {
		st, err := f.client.PublishStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		send(st, s)
	}
	want := adapter.PublishStreamInFlight + adapter.PublishStreamsInFlight
	bustest.Eventually(t, time.Minute, func() error {
		return bustest.Check(f.gw.heldNow() == want, fmt.Sprintf("the gateway holds %d publications, want %d (the cancelled stream's and the whole bound)", f.gw.heldNow(), want))
	})
}

// openAnswered opens n streams and publishes one event on each, reading
// its answer: each stream's handler is then running, waiting for the next
// event of an idle backend. The gateway must answer at once (releaseAll).
func openAnswered(t *testing.T, ctx context.Context, f *streamFixture, n int, prefix string) []grpc.BidiStreamingClient[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse] {
	t.Helper()
	sts := make([]grpc.BidiStreamingClient[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse], n)
	for s := range sts {
		st, err := f.client.PublishStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&eventsv1.PublishStreamRequest{Event: addressChange(fmt.Sprintf("%s-%012d", prefix, s), fmt.Sprintf("I%d", 100000+s))}); err != nil {
			t.Fatal(err)
		}
		if r, err := st.Recv(); err != nil || r.GetCode() != 0 {
			t.Fatalf("stream %d: answer %v, %v", s, r, err)
		}
		sts[s] = st
	}
	return sts
}

// Streams whose backend sends nothing for now (one per worker, say) hold
// no place among the adapter's events in flight: with as many idle
// streams as that bound, an event on another stream is still published.
// (Each stream used to take its place before waiting for its next event.)
func TestIdleStreamsHoldBackNoOtherStream(t *testing.T) {
	t.Parallel()
	f := startStreamFixture(t)
	f.gw.releaseAll()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	openAnswered(t, ctx, f, adapter.PublishStreamsInFlight, "idle")

	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	st, err := f.client.PublishStream(actx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&eventsv1.PublishStreamRequest{Event: addressChange("busy-0000000000000001", "B100001")}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.GetCode() != 0 {
		t.Fatalf("behind %d idle streams, the event's answer: %v, %v", adapter.PublishStreamsInFlight, r, err)
	}
}

// Streams beyond PublishStreamsOpen are refused with ResourceExhausted
// (each open stream may hold an event waiting for a place in flight); a
// stream that ends gives its place back.
func TestPublishStreamsBeyondTheLimitAreRefused(t *testing.T) {
	t.Parallel()
	f := startStreamFixture(t)
	f.gw.releaseAll()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	sts := openAnswered(t, ctx, f, adapter.PublishStreamsOpen, "open")

	extra, err := f.client.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := extra.Recv(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "PublishStreams open") {
		t.Fatalf("stream %d: %v, want ResourceExhausted", adapter.PublishStreamsOpen+1, err)
	}

	if err := sts[0].CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := sts[0].Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("a closed stream ends with %v, want EOF", err)
	}
	bustest.Eventually(t, time.Minute, func() error {
		st, err := f.client.PublishStream(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&eventsv1.PublishStreamRequest{Event: addressChange("again-0000000000000001", "A100001")}); err != nil {
			return err
		}
		r, err := st.Recv()
		if err != nil {
			return err // the place is given back once the ended stream's handler has returned
		}
		return bustest.Check(r.GetCode() == 0, fmt.Sprintf("answer %v", r))
	})
}

// An event over bus.MaxEventBytes (the gateway's limit) is refused at once, before it
// waits for a place or a lane, and the stream goes on.
func TestPublishStreamRefusesAnEventOverTheBusLimit(t *testing.T) {
	t.Parallel()
	f := startStreamFixture(t)
	f.gw.releaseAll()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := f.client.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	big := addressChange("big-00000000000000001", "G100001")
	big.GetAddressChanged().Street = strings.Repeat("x", 100<<10)
	for _, ev := range []*eventsv1.Event{big, addressChange("small-0000000000000001", "G100002")} {
		if err := st.Send(&eventsv1.PublishStreamRequest{Event: ev}); err != nil {
			t.Fatal(err)
		}
	}
	answers := closeAndRead(t, st)
	if a := answers[0]; codes.Code(a.GetCode()) != codes.InvalidArgument || !strings.Contains(a.GetMessage(), "over the limit of 65536") {
		t.Errorf("the big event's answer: %v, want InvalidArgument over the limit of 65536", a)
	}
	if a := answers[1]; a.GetCode() != 0 {
		t.Errorf("the next event's answer: %v, want OK", a)
	}
	f.gw.mu.Lock()
	defer f.gw.mu.Unlock()
	if f.gw.received != 1 {
		t.Errorf("the gateway received %d publications, want 1 (the small one)", f.gw.received)
	}
}
