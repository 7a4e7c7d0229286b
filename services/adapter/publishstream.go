package adapter

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/refusal"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
)

// PublishStreamInFlight is how many events of one PublishStream the adapter
// holds at once, read and not yet answered: with that many it reads no
// further from the stream (gRPC's flow control then holds the backend back)
// until one is answered — and an answer the backend does not read counts
// until gRPC has taken it.
const PublishStreamInFlight = 256

// PublishStreamsInFlight bounds the events of all the adapter's
// PublishStreams together, sent to the gateway and not yet answered (the
// gateway decides at most 1,024 events at once anyway): without it each
// stream a backend opens would add PublishStreamInFlight events, their
// payloads and their lanes' goroutines, without limit. A stream takes one
// once it has read an event, and reads no further until it has it: a
// stream waiting for its backend holds none, so idle streams never hold
// back the others. An answer the backend does not read holds its
// stream's slot, not one of these.
const PublishStreamsInFlight = 1024

// PublishStreamsOpen bounds the adapter's open PublishStreams: each may
// hold one event read and waiting for a place among
// PublishStreamsInFlight, so the events the adapter holds are at most
// PublishStreamsInFlight + PublishStreamsOpen, each within the bus's
// message size. A stream beyond it is refused (ResourceExhausted).
const PublishStreamsOpen = 2048

// PublishStream publishes the events of a stream without a gRPC call per
// event (docs/events.md): each is checked exactly as by Publish
// (checkEvent) and sent to the gateway exactly as by Publish (sendEvent);
// several at once, but a citizen's events one after another in the order
// sent (a lane per ckey). Each event is answered once, when the gateway
// answered it — OK only once every delivery is durable — or with the
// refusal Publish would have returned.
func (p publisher) PublishStream(stream grpc.BidiStreamingServer[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse]) error {
	return p.a.publishStream(stream, PublishStreamInFlight)
}

// pubStream is one PublishStream's state.
type pubStream struct {
	a   *Adapter
	ctx context.Context
	// slots holds one token per event read and not yet answered (taken
	// before each read: a full stream reads no further).
	slots chan struct{}
	// answers go to the one goroutine that sends them (a gRPC stream takes
	// one sender at a time); it frees an event's slot once sent.
	answers chan *eventsv1.PublishStreamResponse
	mu      sync.Mutex
	// lanes are the events waiting per citizen (ckey), the one being
	// published first: a lane in the map has a goroutine publishing it.
	lanes map[string][]pubEvent
	wg    sync.WaitGroup // the lanes' goroutines
}

type pubEvent struct {
	index uint64
	id    string
	ev    checkedEvent
}

func (a *Adapter) publishStream(stream grpc.BidiStreamingServer[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse], inFlight int) error {
	select {
	case a.openStreams <- struct{}{}:
		defer func() { <-a.openStreams }()
	default:
		return status.Errorf(codes.ResourceExhausted, "the adapter has %d PublishStreams open, its limit: send more events on each", PublishStreamsOpen)
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	s := &pubStream{a: a, ctx: ctx, slots: make(chan struct{}, inFlight),
		answers: make(chan *eventsv1.PublishStreamResponse, inFlight), lanes: map[string][]pubEvent{}}
	sent := make(chan error, 1)
	go func() { sent <- s.sendAnswers(stream, cancel) }()

	var readErr error
read:
	for index := uint64(0); ; index++ {
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			readErr = status.FromContextError(ctx.Err()).Err()
			break read
		}
		req, err := stream.Recv()
		if err != nil {
			<-s.slots
			if !errors.Is(err, io.EOF) {
				// Not a PublishStreamRequest, over gRPC's size limit, or
				// the stream broken: the stream ends with that status,
				// once the events read are answered.
				readErr = err
			}
			break
		}
		// Past this point only the id and the event's own encoding are
		// kept: what else the request held (unknown fields, up to gRPC's
		// 4 MiB) is not held while the event waits for a place.
		id := req.GetEvent().GetId()
		ev, err := a.checkEvent(req.GetEvent())
		req = nil
		if err != nil {
			s.answers <- answer(index, id, nil, err) // never blocks: a slot is ours
			continue
		}
		select {
		case a.streamEvents <- struct{}{}:
		case <-ctx.Done():
			readErr = status.FromContextError(ctx.Err()).Err()
			s.answers <- answer(index, id, nil, readErr) // not sent to the gateway
			break read
		}
		s.enqueue(pubEvent{index: index, id: id, ev: ev})
	}
	// Every event read is answered (or, the stream broken, dropped) before
	// the stream ends.
	s.wg.Wait()
	close(s.answers)
	if err := <-sent; err != nil && readErr == nil {
		readErr = err
	}
	return readErr
}

// enqueue hands an event to its citizen's lane, starting the lane when it
// has nothing waiting.
func (s *pubStream) enqueue(e pubEvent) {
	s.mu.Lock()
	q, running := s.lanes[e.ev.ckey]
	s.lanes[e.ev.ckey] = append(q, e)
	s.mu.Unlock()
	if !running {
		s.wg.Add(1)
		go s.lane(e.ev.ckey)
	}
}

// lane publishes a citizen's events one after another, in the order read,
// until none waits.
func (s *pubStream) lane(ck string) {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		e := s.lanes[ck][0]
		s.mu.Unlock()
		r := s.publish(e)
		<-s.a.streamEvents // answered by the gateway: the adapter holds only the answer
		s.answers <- r     // never blocks: the event holds a slot
		s.mu.Lock()
		q := s.lanes[ck]
		q[0] = pubEvent{}
		if len(q) == 1 {
			delete(s.lanes, ck)
			s.mu.Unlock()
			return
		}
		s.lanes[ck] = q[1:]
		s.mu.Unlock()
	}
}

// publish sends one event to the gateway as Publish does, with the
// adapter's default timeout (a stream's events have no deadline of their
// own; the stream's, if any, bounds them all).
func (s *pubStream) publish(e pubEvent) *eventsv1.PublishStreamResponse {
	if err := s.ctx.Err(); err != nil {
		// The stream is over: not sent, and the answer cannot be read.
		return answer(e.index, e.id, nil, status.FromContextError(err).Err())
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.a.cfg.DefaultTimeout)
	defer cancel()
	out, err := s.a.sendEvent(ctx, e.ev)
	return answer(e.index, e.id, out, err)
}

// sendAnswers sends the answers as they come, freeing each one's slot once
// gRPC has taken it. After a failed send (the backend gone) it sends no
// more, ends the stream's context (the lanes send nothing further) and
// still frees the slots, until the answers are closed.
func (s *pubStream) sendAnswers(stream grpc.BidiStreamingServer[eventsv1.PublishStreamRequest, eventsv1.PublishStreamResponse], cancel context.CancelFunc) error {
	var failed error
	for r := range s.answers {
		if failed == nil {
			if err := stream.Send(r); err != nil {
				failed = err
				cancel()
			}
		}
		<-s.slots
	}
	return failed
}

// answer is an event's answer on the stream: the deliveries, or the code,
// message and refusal reason with which Publish would have failed.
func answer(index uint64, id string, out *eventsv1.PublishResponse, err error) *eventsv1.PublishStreamResponse {
	if checkEventID(id) != nil {
		id = "" // not an id: the index names the event
	}
	r := &eventsv1.PublishStreamResponse{Index: index, Id: id}
	if err != nil {
		st := status.Convert(err)
		r.Code, r.Message, r.Reason = int32(st.Code()), st.Message(), refusal.OfStatus(st)
		return r
	}
	r.Deliveries = out.GetDeliveries()
	return r
}
