package events_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/events"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
)

// With three connections, publications are taken on each (one queue
// group) and each is answered on the one it arrived on; a citizen's stores
// (its log entries and deliveries) all go through one of them, always the
// same, and the citizens spread over all three; each citizen's events,
// published at once with other citizens', are stored in every consumer's
// stream in the order sent. Publications taken on the main connection
// only, answers sent on another connection than the request's, stores
// picked per event rather than per citizen, or all on one connection,
// fail it.
func TestStoresSpreadOverTheConnectionsByCitizen(t *testing.T) {
	env := bustest.Start(t)
	more := []*nats.Conn{env.Connect(t, "gateway"), env.Connect(t, "gateway")}
	var conns []*nats.Conn
	f := startWith(t, env, func(c *events.Config) {
		c.MoreConns = more
		conns = append([]*nats.Conn{c.Conn}, more...)
	})
	stats := func() (in, out []uint64) {
		for _, nc := range conns {
			st := nc.Stats()
			in, out = append(in, st.InMsgs), append(out, st.OutMsgs)
		}
		return in, out
	}
	// A first event looks the delivery streams up (on Conn): not counted.
	if _, err := f.publish(t, "civil-registry", died("warm-up-0000000000000000", "AB999"), ""); err != nil {
		t.Fatal(err)
	}

	// One citizen at a time: a death is three stores (the log, cnss,
	// health), each acked back on the connection that stored it, and an
	// answer on the connection that received it — so a connection sends
	// as many messages as it receives, and the stores' (3 per event) tell
	// apart from the answers (1 per event at most).
	const citizens, each = 40, 2
	used := map[int]int{}     // connection → citizens whose stores it carried
	received := map[int]int{} // connection → publications it took
	for c := range citizens {
		inBefore, outBefore := stats()
		for i := range each {
			if _, err := f.publish(t, "civil-registry", died(fmt.Sprintf("death-%08d%08d", c, i), fmt.Sprintf("AB%d", 1000+c)), ""); err != nil {
				t.Fatal(err)
			}
		}
		inAfter, outAfter := stats()
		carried, answered := -1, 0
		for k := range conns {
			in, out := inAfter[k]-inBefore[k], outAfter[k]-outBefore[k]
			if in != out {
				t.Fatalf("citizen %d: connection %d received %d messages and sent %d: a publication answered on another connection", c, k, in, out)
			}
			if out >= 3*each {
				if carried >= 0 {
					t.Fatalf("citizen %d: stores on connections %d and %d", c, carried, k)
				}
				carried, out = k, out-3*each
			}
			if out > each {
				t.Fatalf("citizen %d: connection %d sent %d messages, neither all of its stores nor answers only", c, k, outAfter[k]-outBefore[k])
			}
			if out > 0 {
				answered += int(out)
				received[k] += int(out)
			}
		}
		if carried < 0 {
			t.Fatalf("citizen %d: no connection carried its stores", c)
		}
		if answered != each {
			t.Fatalf("citizen %d: %d answers, want %d", c, answered, each)
		}
		used[carried]++
	}
	if len(used) != len(conns) {
		t.Fatalf("stores of %d citizens on connections %v, want all %d", citizens, used, len(conns))
	}
	if len(received) < 2 {
		t.Fatalf("publications taken per connection: %v, want more than one connection", received)
	}

	// Many citizens at once, each one's events in turn (as the adapter's
	// lanes send them): each consumer's stream holds them in that order.
	const many, per = 30, 6
	sent := map[string][]string{} // ckey → ids in order
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c := range many {
		eid := fmt.Sprintf("CD%d", 2000+c)
		wg.Go(func() {
			var ids []string
			for i := range per {
				ev := died(fmt.Sprintf("order-%08d%08d", c, i), eid)
				if _, err := f.publish(t, "civil-registry", ev, ""); err != nil {
					t.Error(err)
					return
				}
				ids = append(ids, ev.GetId())
			}
			mu.Lock()
			sent[f.env.Keyer.CKey(eid)] = ids
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, m := range []string{"cnss", "health"} {
		got := map[string][]string{}
		for _, msg := range f.read(t, m) {
			ck := msg.Subject()[strings.LastIndexByte(msg.Subject(), '.')+1:]
			if _, ok := sent[ck]; !ok {
				continue // the first phase's
			}
			ev := &eventsv1.Event{}
			if err := proto.Unmarshal(msg.Data(), ev); err != nil {
				t.Fatal(err)
			}
			got[ck] = append(got[ck], ev.GetId())
		}
		for ck, ids := range sent {
			if fmt.Sprint(got[ck]) != fmt.Sprint(ids) {
				t.Fatalf("%s holds citizen %s's events as %v, sent %v", m, ck, got[ck], ids)
			}
		}
	}
}

// Stop ends the subscriptions on every connection: a publication then
// finds no responder, whichever connection the server would have picked.
func TestStopUnsubscribesEveryConnection(t *testing.T) {
	env := bustest.Start(t)
	f := startWith(t, env, func(c *events.Config) {
		c.MoreConns = []*nats.Conn{env.Connect(t, "gateway"), env.Connect(t, "gateway")}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := f.ev.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	subj, err := subject.Event{Publisher: "civil-registry", Type: "PersonDied", CKey: env.Keyer.CKey("AB123")}.Subject()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := proto.Marshal(died("after-stop-00000000000000", "AB123"))
	nc := env.Connect(t, "civil-registry")
	for range 20 {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := nc.RequestWithContext(rctx, subj, data)
		rcancel()
		if !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("a publication after Stop: %v, want no responders", err)
		}
	}
}
