//go:build cluster

package consent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// hub is three NATS nodes in one JetStream cluster, each a child process
// (this test binary, see TestMain) that can be killed with SIGKILL: its
// peers are not told it is gone, as after a crash.
type hub struct {
	env   *bustest.Env
	nodes []*node
	op    jetstream.JetStream
}

type node struct {
	Name, URL string
	cmd       *exec.Cmd
}

// nodeEnv names the environment variable that makes this test binary a
// NATS node (nodeSpec as JSON) instead of running tests.
const nodeEnv = "JISR_CONSENT_TEST_NODE"

type nodeSpec struct {
	Dir, Name, StoreDir string
	Port, ClusterPort   int
	Routes              []string
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(nodeEnv); spec != "" {
		if err := runNode(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// runNode serves as one node until killed.
func runNode(spec string) error {
	var ns nodeSpec
	if err := json.Unmarshal([]byte(spec), &ns); err != nil {
		return err
	}
	fed, err := federation.Parse(bustest.FederationYAML())
	if err != nil {
		return err
	}
	ca, err := devca.Load(ns.Dir)
	if err != nil {
		return err
	}
	natsID := fed.ID("nats")
	cert, key := svid.Paths(ns.Dir, natsID)
	s, err := x509svid.Load(cert, key)
	if err != nil {
		return err
	}
	cfg := natsconf.Config{
		Federation: fed, ServerName: ns.Name, Port: ns.Port,
		CertFile: cert, KeyFile: key, CAFile: svid.BundlePath(ns.Dir),
		StoreDir: ns.StoreDir,
		Cluster:  &natsconf.Cluster{Port: ns.ClusterPort, Routes: ns.Routes},
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	parent := os.Getppid()
	if _, err := natsserver.Start(context.Background(), cfg, svid.NewStatic(s, ca.Bundle()), log); err != nil {
		return err
	}
	for os.Getppid() == parent { // until killed, or the test is gone
		time.Sleep(time.Second)
	}
	os.Exit(0)
	return nil
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func startHub(t *testing.T) *hub {
	t.Helper()
	env := bustest.Start(t, bustest.WithoutJetStream()) // the certificates and the federation
	ports := freePorts(t, 6)
	var routes []string
	for i := range 3 {
		routes = append(routes, "tls://127.0.0.1:"+strconv.Itoa(ports[3+i]))
	}
	h := &hub{env: env}
	for i := range 3 {
		spec, err := json.Marshal(nodeSpec{Dir: env.Dir, Name: fmt.Sprintf("n%d", i+1), StoreDir: filepath.Join(t.TempDir(), "js"),
			Port: ports[i], ClusterPort: ports[3+i], Routes: routes})
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), nodeEnv+"="+string(spec))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		h.nodes = append(h.nodes, &node{Name: fmt.Sprintf("n%d", i+1), URL: "tls://127.0.0.1:" + strconv.Itoa(ports[i]), cmd: cmd})
	}
	var nc *nats.Conn
	bustest.Eventually(t, 60*time.Second, func() (err error) {
		nc, err = h.dial(t, "operator", h.nodes[0])
		return err
	})
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	h.op = js
	specs := natsstate.Buckets()
	for i := range specs {
		specs[i].Config.Replicas = 3
	}
	bustest.Eventually(t, 60*time.Second, func() error { // the routes are up, the meta leader is elected
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := natsstate.InitSpecs(ctx, nc, specs)
		return err
	})
	return h
}

// dial connects as identity to node first, reconnecting to the other nodes
// when it goes away (as a component does, bus.Connect).
func (h *hub) dial(t *testing.T, identity string, first *node) (*nats.Conn, error) {
	t.Helper()
	urls := []string{first.URL}
	for _, n := range h.nodes {
		if n != first {
			urls = append(urls, n.URL)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return bus.Connect(ctx, bus.Config{URL: strings.Join(urls, ","), Identity: identity, Source: h.env.Source(t, h.env.ID(identity)), ServerID: h.env.Fed.ID("nats")},
		bus.WithLogger(h.env.Log), bus.WithNATSOptions(nats.DontRandomize()))
}

func (h *hub) connect(t *testing.T, identity string, first *node) *nats.Conn {
	t.Helper()
	nc, err := h.dial(t, identity, first)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// leaderOf is the node that leads stream.
func (h *hub) leaderOf(t *testing.T, stream string) *node {
	t.Helper()
	var leader *node
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
			if info.Cluster != nil && info.Cluster.Leader == n.Name {
				leader = n
				return nil
			}
		}
		return fmt.Errorf("%s has no leader yet", stream)
	})
	return leader
}

// A gateway replica's revocation watch survives losing the node that leads
// the revocation bucket (kill -9) while it was connected to it: once the bucket has a new leader, the watch is in step
// again by itself, and a revocation written meanwhile is enforced.
func TestTheRevocationWatchRecoversFromLosingItsNode(t *testing.T) {
	h := startHub(t)
	leader := h.leaderOf(t, subject.BucketStream(subject.RevocationBucket))
	var other *node
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

	if err := leader.cmd.Process.Kill(); err != nil { // kill -9
		t.Fatal(err)
	}
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
