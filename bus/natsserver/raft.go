package natsserver

import (
	"fmt"
	"sync"
	"time"
	_ "unsafe" // go:linkname: nats-server 2.15 has no setting for its Raft timers

	_ "github.com/nats-io/nats-server/v2/server"
)

// nats-server's Raft timers (server/raft.go). They are package variables,
// the same for every server and every Raft group of a process, with no
// configuration setting in nats-server 2.15; its own JetStream cluster
// tests set them this way too. Were they renamed by a nats-server
// upgrade, these would link to nothing and read zero:
// TestRaftTimersAreNATSServersOwn fails then.
//
//go:linkname raftHeartbeat github.com/nats-io/nats-server/v2/server.hbInterval
var raftHeartbeat time.Duration

//go:linkname raftMinElection github.com/nats-io/nats-server/v2/server.minElectionTimeout
var raftMinElection time.Duration

//go:linkname raftMaxElection github.com/nats-io/nats-server/v2/server.maxElectionTimeout
var raftMaxElection time.Duration

// Fast failover's Raft timers: a heartbeat every 500 ms (nats-server's
// default: 1 s) and an election after 1.5 to 3.5 s without one (default: 4
// to 9 s), the election timeouts nats-server's own JetStream cluster tests
// run with. A follower calls an election after missing at least three
// heartbeats.
const (
	FastHeartbeat   = 500 * time.Millisecond
	FastMinElection = 1500 * time.Millisecond
	FastMaxElection = 3500 * time.Millisecond
)

var raftMu sync.Mutex

// FastFailover sets this process's Raft timers to FastHeartbeat and
// FastMinElection–FastMaxElection, before any server of the process
// starts: a stream or bucket whose leader's node dies elects a new leader
// 1.5 to 4 s after, instead of 4 to 10 s. Raft's safety does not depend on
// its timers (a leader still needs a quorum's votes, an entry a quorum's
// acknowledgements): what shorter timers cost is an election a slow
// follower may call without need, which pauses the group's writes for
// about a second. It returns the timers it replaced.
func FastFailover() (was string) {
	raftMu.Lock()
	defer raftMu.Unlock()
	was = RaftTimers()
	raftHeartbeat, raftMinElection, raftMaxElection = FastHeartbeat, FastMinElection, FastMaxElection
	return was
}

// RaftTimers describes this process's Raft timers.
func RaftTimers() string {
	return fmt.Sprintf("heartbeat %s, election after %s to %s", raftHeartbeat, raftMinElection, raftMaxElection)
}
