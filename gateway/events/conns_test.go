package events_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/events"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
)

// With three connections, a citizen's stores (its log entries and
// deliveries) all go through one of them, always the same, and the
// citizens spread over all three; each citizen's events, published at once
// with other citizens', are stored in every consumer's stream in the order
// sent. Stores picked per event rather than per citizen, or all on one
// connection, fail it.
func TestStoresSpreadOverTheConnectionsByCitizen(t *testing.T) {
	env := bustest.Start(t)
	more := []*nats.Conn{env.Connect(t, "gateway"), env.Connect(t, "gateway")}
	var conns []*nats.Conn
	f := startWith(t, env, func(c *events.Config) {
		c.MoreConns = more
		conns = append([]*nats.Conn{c.Conn}, more...)
	})
	out := func() []uint64 {
		var n []uint64
		for _, nc := range conns {
			n = append(n, nc.Stats().OutMsgs)
		}
		return n
	}
	// A first event looks the delivery streams up (on Conn): not counted.
	if _, err := f.publish(t, "civil-registry", died("warm-up-0000000000000000", "AB999"), ""); err != nil {
		t.Fatal(err)
	}

	// One citizen at a time: a death is three stores (the log, cnss,
	// health) and an answer on Conn.
	const citizens, each = 40, 2
	used := map[int]int{}
	for c := range citizens {
		before := out()
		for i := range each {
			if _, err := f.publish(t, "civil-registry", died(fmt.Sprintf("death-%08d%08d", c, i), fmt.Sprintf("AB%d", 1000+c)), ""); err != nil {
				t.Fatal(err)
			}
		}
		after := out()
		carried := -1
		for k := range conns {
			n := after[k] - before[k]
			if k == 0 {
				n -= each // the answers
			}
			switch n {
			case 0:
			case 3 * each:
				if carried >= 0 {
					t.Fatalf("citizen %d: stores on connections %d and %d", c, carried, k)
				}
				carried = k
			default:
				t.Fatalf("citizen %d: connection %d carried %d stores, want 0 or %d (all of them)", c, k, n, 3*each)
			}
		}
		if carried < 0 {
			t.Fatalf("citizen %d: no connection carried its stores", c)
		}
		used[carried]++
	}
	if len(used) != len(conns) {
		t.Fatalf("stores of %d citizens on connections %v, want all %d", citizens, used, len(conns))
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
