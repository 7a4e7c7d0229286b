package natsserver_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
)

// A new federation version's NATS permissions apply to the connections
// already open, with no restart: the same server, the same connections. A
// consumer-only member (justice) that comes to provide a service may, on
// its open connection, take the operator's catalogue requests. When the
// next version takes the service away, a new subscription there is refused
// on a connection that stays open, and the connection that holds one is
// closed (its client reconnects, and the subscription is refused). When a
// version drops the member, its connections are closed.
func TestSetFederationReauthorizesOpenConnections(t *testing.T) {
	t.Parallel()
	base := bustest.FederationYAML()
	v0 := bytes.Replace(base, []byte("\nmembers:\n"), []byte("\nmembers:\n  - name: justice\n    title: Ministry of justice\n"), 1)
	v1 := bytes.Replace(v0, []byte("title: Ministry of justice\n"), []byte("title: Ministry of justice\n    provides: [jisr.justice.v1.CriminalRecord]\n"), 1)
	if bytes.Equal(v0, base) || bytes.Equal(v1, v0) {
		t.Fatal("no members: section to add justice to")
	}
	env := bustest.Start(t, bustest.WithFederation(v0), bustest.WithoutJetStream())
	ns, serverID := env.Server.NATS(), env.Server.NATS().ID()

	errs, errs2 := make(chan error, 64), make(chan error, 64)
	reconnected, closed := make(chan struct{}, 4), make(chan struct{})
	j := env.Connect(t, "justice", nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	// A second connection of justice's, which holds no subscription when
	// the service is taken away.
	j2 := env.Connect(t, "justice", nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs2 <- err }),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	op := env.Connect(t, subject.Operator)
	ping := subject.Discovery + ".PING." + subject.DiscoveryName("justice")

	refused := func(errs chan error, what string) {
		t.Helper()
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(err.Error(), "Permissions Violation") {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: not refused", what)
		}
	}
	noError := func(errs chan error, what string) {
		t.Helper()
		select {
		case err := <-errs:
			t.Fatalf("%s: %v", what, err)
		default:
		}
	}
	answered := func() error {
		_, err := op.Request(ping, nil, time.Second)
		return err
	}
	apply := func(yaml []byte) {
		t.Helper()
		fed, err := federation.Parse(yaml)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Server.SetFederation(fed); err != nil {
			t.Fatal(err)
		}
	}
	respond := func(m *nats.Msg) { _ = m.Respond([]byte("justice")) }

	// Version 0: justice only calls; the catalogue subject is not its own.
	if _, err := j.Subscribe(ping, respond); err != nil {
		t.Fatal(err)
	}
	refused(errs, "version 0: subscribing to the catalogue subject")

	// Version 1: justice provides a service. On the same connections it may
	// now subscribe there and answer the operator.
	apply(v1)
	if _, err := j.Subscribe(ping, respond); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 10*time.Second, answered)
	s2, err := j2.Subscribe(ping, respond)
	if err != nil {
		t.Fatal(err)
	}
	if err := j2.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s2.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := j2.Flush(); err != nil {
		t.Fatal(err)
	}
	noError(errs, "version 1")
	noError(errs2, "version 1, second connection")

	// Version 2: the service is taken away. The second connection stays
	// open and is refused a new subscription there; the first, which holds
	// one, is closed, reconnects, and its subscription is refused.
	apply(v0)
	if _, err := j2.Subscribe(ping, respond); err != nil {
		t.Fatal(err)
	}
	refused(errs2, "version 2: the open connection subscribing to the catalogue subject")
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("version 2: the connection holding the catalogue subscription was not closed")
	}
	refused(errs, "version 2: the catalogue subscription, again after the reconnect")
	if err := answered(); err == nil {
		t.Fatal("version 2: justice still answers on the catalogue subject")
	}

	// Nothing restarted: the same server; the second connection never left.
	if env.Server.NATS() != ns || ns.ID() != serverID || !j2.IsConnected() || j2.Stats().Reconnects != 0 || j2.ConnectedServerId() != serverID {
		t.Fatalf("restarted: connected %v, reconnects %d, server %s (was %s)", j2.IsConnected(), j2.Stats().Reconnects, j2.ConnectedServerId(), serverID)
	}
	if !op.IsConnected() || op.Stats().Reconnects != 0 {
		t.Fatal("the operator's connection, whose permissions did not change, did not stay")
	}

	// Version 3: justice leaves the federation; its connection is closed.
	apply(base)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection of a member the version dropped stays open")
	}
	if !op.IsConnected() || op.Stats().Reconnects != 0 {
		t.Fatal("the operator's connection did not stay")
	}
}
