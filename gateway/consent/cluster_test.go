//go:build cluster

package consent_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// hub is three embedded NATS nodes in one JetStream cluster, holding the
// consent buckets with three replicas.
type hub struct {
	env   *bustest.Env
	nodes []*natsserver.Server
	op    jetstream.JetStream
}

func startHub(t *testing.T) *hub {
	t.Helper()
	env := bustest.Start(t, bustest.WithoutJetStream()) // the certificates and the federation
	natsID := env.ID("nats")
	cert, key := svid.Paths(env.Dir, natsID)
	ports := make([]int, 3)
	var routes []string
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
		routes = append(routes, "tls://127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	h := &hub{env: env}
	for i := range 3 {
		cfg := natsconf.Config{
			Federation: env.Fed, ServerName: fmt.Sprintf("n%d", i+1), Port: -1,
			CertFile: cert, KeyFile: key, CAFile: svid.BundlePath(env.Dir),
			StoreDir: filepath.Join(t.TempDir(), "js"),
			Cluster:  &natsconf.Cluster{Port: ports[i], Routes: routes},
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		s, err := natsserver.Start(ctx, cfg, env.Source(t, natsID), env.Log)
		cancel()
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		t.Cleanup(s.Shutdown)
		h.nodes = append(h.nodes, s)
	}
	var urls []string
	for _, n := range h.nodes {
		urls = append(urls, n.ClientURL())
	}
	env.URL = strings.Join(urls, ",")
	js, err := jetstream.New(h.connect(t, "operator", h.nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	h.op = js
	specs := natsstate.Buckets()
	for i := range specs {
		specs[i].Config.Replicas = 3
	}
	bustest.Eventually(t, 60*time.Second, func() error { // the meta leader is elected
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := natsstate.InitSpecs(ctx, h.op.Conn(), specs)
		return err
	})
	return h
}

// connect connects as identity to node first, reconnecting to the other
// nodes when it goes away (as a component does, bus.Connect).
func (h *hub) connect(t *testing.T, identity string, first *natsserver.Server) *nats.Conn {
	t.Helper()
	urls := []string{first.ClientURL()}
	for _, n := range h.nodes {
		if n != first {
			urls = append(urls, n.ClientURL())
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.Config{URL: strings.Join(urls, ","), Identity: identity, Source: h.env.Source(t, h.env.ID(identity)), ServerID: h.env.Fed.ID("nats")},
		bus.WithLogger(h.env.Log), bus.WithNATSOptions(nats.DontRandomize()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// leaderOf is the node that leads stream.
func (h *hub) leaderOf(t *testing.T, stream string) *natsserver.Server {
	t.Helper()
	var leader *natsserver.Server
	bustest.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		s, err := h.op.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		for _, n := range h.nodes {
			if info.Cluster != nil && info.Cluster.Leader == n.NATS().Name() {
				leader = n
				return nil
			}
		}
		return fmt.Errorf("%s has no leader yet", stream)
	})
	return leader
}

// A gateway replica's revocation watch survives losing the node that leads
// the revocation bucket (and holds the watch's consumer) while it was
// connected to it: once the bucket has a new leader, the watch is in step
// again by itself, and a revocation written meanwhile is enforced.
func TestTheRevocationWatchRecoversFromLosingItsNode(t *testing.T) {
	h := startHub(t)
	leader := h.leaderOf(t, subject.BucketStream(subject.RevocationBucket))
	var other *natsserver.Server
	for _, n := range h.nodes {
		if n != leader {
			other = n
		}
	}
	ctx := t.Context()
	svc, err := consent.OpenStore(ctx, h.connect(t, "consent", other))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := consent.OpenStore(ctx, h.connect(t, "gateway", leader), consent.WithStoreLogger(h.env.Log))
	if err != nil {
		t.Fatal(err)
	}
	gw.WatchEvery = 250 * time.Millisecond
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := gw.WatchRevocations(wctx); err != nil {
		t.Fatal(err)
	}
	before, after := strings.Repeat("b", 20), strings.Repeat("a", 20)
	if _, err := svc.Revoke(ctx, before); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 20*time.Second, func() error {
		return bustest.Check(gw.Ready() == nil && gw.Revoked(before), "the watch is in step and has the first revocation")
	})

	leader.Shutdown()
	bustest.Eventually(t, 60*time.Second, func() error { // the bucket elects a new leader
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := svc.Revoke(rctx, after)
		return err
	})
	bustest.Eventually(t, 90*time.Second, func() error {
		if err := gw.Ready(); err != nil {
			return err
		}
		return bustest.Check(gw.Revoked(after) && gw.Revoked(before), "the watch has both revocations")
	})
}
