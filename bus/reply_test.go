package bus_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus"
)

// An answer goes to an inbox or nowhere: never to a JetStream API, key-value
// or federation subject, whoever chose the reply subject.
func TestRespondSendsNothingOutsideAnInbox(t *testing.T) {
	t.Parallel()
	for _, reply := range []string{
		"$JS.API.STREAM.DELETE.JISR_AUDIT", "$KV.jisr_usage.x", "jisr.audit.gw-1.x", "jisr.p.tax.s.m.k",
		"jisr.q.tax.civil-registry.s.m.k", "_INBOX.cnss", "_INBOX.cnss.*", "_INBOX.cnss.>", "_INBOX..x",
	} {
		// No connection: a refusal must come before any attempt to send.
		err := bus.RespondFrom(&nats.Msg{Subject: "jisr.q.cnss.x", Reply: reply}, []byte("data"), status.New(codes.OK, ""), "gw-1")
		if !errors.Is(err, bus.ErrBadReply) {
			t.Errorf("reply %q: %v, want ErrBadReply", reply, err)
		}
	}
	if err := bus.ReplyTo(&nats.Msg{Reply: "_INBOX.cnss.abc"}, "cnss"); err != nil {
		t.Fatal(err)
	}
	if err := bus.ReplyTo(&nats.Msg{Reply: "_INBOX.tax.abc"}, "cnss"); !errors.Is(err, bus.ErrBadReply) {
		t.Fatalf("another identity's inbox: %v", err)
	}
}
