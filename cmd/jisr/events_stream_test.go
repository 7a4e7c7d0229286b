package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/refusal"
	"github.com/jisr-bus/jisr/bus/subject"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// A backend publishing through PublishStream, with the real gateway: every
// event is answered once, OK with its delivery once it is in tax's stream;
// a citizen's events are stored in the order sent, however many the
// backend sends at once (a flood of one citizen among others); an event the
// gateway refuses is answered with Publish's code, message and reason, and
// the stream goes on; the same event twice on a stream is stored once.
func TestPublishStreamThroughTheGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("-short (make test-short): runs a gateway and an adapter; make test and CI run it")
	}
	dir := t.TempDir()
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	g, _, civil := startEventHub(ctx, t, "../testdata/federation.yaml", dir, logs)
	cc, err := grpc.NewClient(civil.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	pub := eventsv1.NewEventPublisherClient(cc)

	ev := func(id string, i int) *eventsv1.Event {
		return &eventsv1.Event{Id: id, Time: timestamppb.Now(), Eid: eidN(i),
			Payload: &eventsv1.Event_AddressChanged{AddressChanged: &eventsv1.AddressChanged{
				Place: &jisrv1.Place{Commune: "Agdal-Ryad", Province: "Rabat", Country: "MA"}, Street: fmt.Sprintf("%d avenue de France", i)}}}
	}
	st, err := pub.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sent []*eventsv1.Event
	send := func(e *eventsv1.Event) {
		t.Helper()
		sent = append(sent, e)
		if err := st.Send(&eventsv1.PublishStreamRequest{Event: e}); err != nil {
			t.Fatal(err)
		}
	}
	// A flood of 300 events of citizen 1, and 10 events each of 30 others,
	// interleaved; one event the gateway refuses (its time in the future);
	// one event sent twice.
	future := ev("stream-future-0001", 40)
	future.Time = timestamppb.New(time.Now().Add(time.Hour))
	for i := range 300 {
		send(ev(fmt.Sprintf("stream-flood-%06d", i), 1))
		send(ev(fmt.Sprintf("stream-c%02d-%06d", 2+i%30, i/30), 2+i%30))
		if i == 150 {
			send(future)
			send(sent[0])
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	answers := map[uint64]*eventsv1.PublishStreamResponse{}
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream: %v\n%s", err, logs.String())
		}
		if answers[r.GetIndex()] != nil {
			t.Fatalf("event %d answered twice", r.GetIndex())
		}
		answers[r.GetIndex()] = r
	}
	if len(answers) != len(sent) {
		t.Fatalf("%d answers for %d events", len(answers), len(sent))
	}
	for i, e := range sent {
		r := answers[uint64(i)]
		if r.GetId() != e.GetId() {
			t.Fatalf("event %d (%s) answered as %s", i, e.GetId(), r.GetId())
		}
		if e == future {
			// The gateway's refusal, exactly as Publish reports it.
			_, uerr := pub.Publish(ctx, &eventsv1.PublishRequest{Event: e})
			us := status.Convert(uerr)
			if us.Code() != codes.InvalidArgument || codes.Code(r.GetCode()) != us.Code() || r.GetMessage() != us.Message() ||
				r.GetReason() != refusal.OfStatus(us) || r.GetReason() == "" || r.GetDeliveries() != 0 {
				t.Fatalf("an event in the future: answered %v on the stream, Publish: %v (%s)", r, uerr, refusal.OfStatus(us))
			}
			continue
		}
		if r.GetCode() != 0 || r.GetDeliveries() != 1 {
			t.Fatalf("event %d (%s) answered %v\n%s", i, e.GetId(), r, logs.String())
		}
	}

	// Tax's stream: each citizen's events in the order sent, each once.
	op, src, err := g.Connect(ctx, subject.Operator)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { op.Close(); src.Close() }()
	js, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, subject.EventStream("tax"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string][]string{}
	seen := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		e := &eventsv1.Event{}
		if err := proto.Unmarshal(m.Data, e); err != nil {
			t.Fatal(err)
		}
		if seen[e.GetId()] {
			t.Fatalf("%s stored twice in tax's stream", e.GetId())
		}
		seen[e.GetId()] = true
		stored[e.GetEid()] = append(stored[e.GetEid()], e.GetId())
	}
	want := map[string][]string{}
	for _, e := range sent {
		if e != future && !(e == sent[0] && len(want[e.GetEid()]) > 0) {
			want[e.GetEid()] = append(want[e.GetEid()], e.GetId())
		}
	}
	if len(stored) != len(want) {
		t.Fatalf("tax's stream has events of %d citizens, want %d", len(stored), len(want))
	}
	for eid, ids := range want {
		if fmt.Sprint(stored[eid]) != fmt.Sprint(ids) {
			t.Fatalf("citizen %s: stored %v, sent %v", eid, stored[eid], ids)
		}
	}
}
