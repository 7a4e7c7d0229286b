package natsserver_test

import (
	"testing"

	"github.com/jisr-bus/jisr/bus/natsserver"
)

// The Raft timers FastFailover replaces are nats-server's own variables:
// read through the same link, they hold nats-server 2.15's defaults (no
// test of this package calls FastFailover; the cluster suite measures its
// effect on a node's kill).
func TestRaftTimersAreNATSServersOwn(t *testing.T) {
	if got, want := natsserver.RaftTimers(), "heartbeat 1s, election after 4s to 9s"; got != want {
		t.Fatalf("Raft timers %q, want nats-server's defaults %q", got, want)
	}
}
