package gateway_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway"
)

// With further query connections, the gateway takes queries on each (one
// queue group), and forwards each on the connection it arrived on: the
// provider sees requests from the inboxes of both connections, and every
// query is answered.
func TestQueriesOnFurtherConnectionsAreForwardedOnTheirOwn(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	main, extra := env.Connect(t, "gateway"), env.Connect(t, "gateway")
	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: main, QueryConns: []*nats.Conn{extra},
		Consent: consents{}, Audit: &recorder{}, Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(ctx) })
	var mu sync.Mutex
	inboxes := map[string]int{} // the requesting connection's inbox prefix
	cr := env.Connect(t, "civil-registry")
	if _, err := cr.Subscribe("jisr.p.civil-registry.>", func(m *nats.Msg) {
		mu.Lock()
		inboxes[m.Reply[:strings.LastIndexByte(m.Reply, '.')]]++
		mu.Unlock()
		answer(m)
	}); err != nil {
		t.Fatal(err)
	}
	if err := cr.Flush(); err != nil {
		t.Fatal(err)
	}
	f := &fair{env: env}
	cnss := env.Connect(t, "cnss")
	const n = 40
	for range n {
		if err := call(cnss, f.getPerson(t, 0), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(inboxes) != 2 {
		t.Fatalf("the provider was asked from %d connection inboxes (%v), want 2: queries are not forwarded on the connection they arrived on", len(inboxes), inboxes)
	}
	if in := extra.Stats().InMsgs; in == 0 {
		t.Fatal("no query arrived on the further connection")
	}
}
