package natsserver_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/certs/svid"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Three embedded servers rendered as hub nodes form a JetStream cluster
// over mutually authenticated routes, and hold a stream with three
// replicas. A member's SVID, valid in the trust domain, cannot open a route:
// a route sees every message of the cluster.
func TestHubClusterRoutesOnlyTheServerIdentity(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bustest.WithoutJetStream())
	natsID := env.ID("nats")
	cert, key := svid.Paths(env.Dir, natsID)
	ports := make([]int, 3)
	var routes []string
	for i := range ports {
		ports[i] = freePort(t)
		routes = append(routes, "tls://127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	var nodes []*natsserver.Server
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
		nodes = append(nodes, s)
	}
	bustest.Eventually(t, 30*time.Second, func() error {
		for i, s := range nodes {
			if n := s.NATS().NumRoutes(); n < 2 {
				return fmt.Errorf("node %d has %d routes", i+1, n)
			}
		}
		return nil
	})

	env.URL = nodes[0].ClientURL()
	op := env.Connect(t, "operator")
	js, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.StreamInfo
	bustest.Eventually(t, 30*time.Second, func() error { // the meta leader is elected
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3, Storage: jetstream.FileStorage})
		if err != nil {
			return err
		}
		info = s.CachedInfo()
		return nil
	})
	if info.Cluster == nil || info.Cluster.Name != natsconf.DefaultClusterName || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream cluster info %+v: want a leader and 2 replicas in %s", info.Cluster, natsconf.DefaultClusterName)
	}

	// At a route port, the server's own SVID gets the route's INFO; a
	// member's SVID, valid in the trust domain, is refused at the handshake.
	routeDial := func(identity string) error {
		s, err := env.Source(t, env.ID(identity)).GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		tc := &tls.Config{
			MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, // the caller does not check who the server is
			Certificates: []tls.Certificate{{Certificate: [][]byte{s.Certificates[0].Raw}, PrivateKey: s.PrivateKey}},
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", "127.0.0.1:"+strconv.Itoa(ports[0]), tc)
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3: the server's verdict on the client certificate arrives with the first read.
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != "INFO " {
			return fmt.Errorf("route answered %q", buf)
		}
		return nil
	}
	if err := routeDial("nats"); err != nil {
		t.Fatalf("the server's own SVID at the route port: %v", err)
	}
	if err := routeDial("cnss"); err == nil {
		t.Fatal("a member's SVID was accepted at the route port")
	} else {
		t.Logf("member SVID at the route port: %v", err)
	}
	for i, n := range nodes {
		if n.NATS().NumRoutes() < 2 {
			t.Fatalf("node %d lost a route", i+1)
		}
	}
}

// Under SPIRE (WorkloadAPI) the hub nodes' configurations name no
// certificate file, routes included: each node takes its routes' TLS (its
// SVID, the bundle) from its SVID source, and the three still form a
// JetStream cluster that holds a stream with three replicas.
func TestHubClusterFromTheSVIDSourceAlone(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bustest.WithoutJetStream())
	natsID := env.ID("nats")
	ports := make([]int, 3)
	var routes []string
	for i := range ports {
		ports[i] = freePort(t)
		routes = append(routes, "tls://127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	var nodes []*natsserver.Server
	for i := range 3 {
		cfg := natsconf.Config{
			Federation: env.Fed, ServerName: fmt.Sprintf("w%d", i+1), Port: -1, WorkloadAPI: true,
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
		nodes = append(nodes, s)
		text, err := os.ReadFile(s.ConfigPath())
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"cert_file", "key_file", "ca_file"} {
			if strings.Contains(string(text), k) {
				t.Fatalf("node %d's configuration names %s:\n%s", i+1, k, text)
			}
		}
	}
	bustest.Eventually(t, 30*time.Second, func() error {
		for i, s := range nodes {
			if n := s.NATS().NumRoutes(); n < 2 {
				return fmt.Errorf("node %d has %d routes", i+1, n)
			}
		}
		return nil
	})
	env.URL = nodes[1].ClientURL()
	js, err := jetstream.New(env.Connect(t, "operator"))
	if err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3, Storage: jetstream.FileStorage})
		if err != nil {
			return err
		}
		if c := s.CachedInfo().Cluster; c == nil || len(c.Replicas) != 2 {
			return fmt.Errorf("stream cluster info %+v: want a leader and 2 replicas", c)
		}
		return nil
	})
}
