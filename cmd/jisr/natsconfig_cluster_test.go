package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// `jisr nats-config --cluster` writes one configuration per hub node, each
// with its own name, routes to every node, and the same users; a stock
// nats-server accepts each.
func TestNATSConfigCluster(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	run := func(args ...string) (string, error) {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--federation", "../testdata/federation.yaml", "--certs", certs, "--data", dir, "--log-level", "error"}, args...))
		err := root.Execute()
		return out.String(), err
	}
	if out, err := run("certs", "init"); err != nil {
		t.Fatalf("certs init: %v\n%s", err, out)
	}
	if _, err := run("nats-config", "--cluster", "a=10.0.0.1,b=10.0.0.2"); err == nil {
		t.Fatal("a hub of two nodes was rendered; R3 needs three")
	}
	out := filepath.Join(dir, "nats")
	if o, err := run("nats-config", "--cluster", "hub-1=10.0.0.1,hub-2=nats-2.example,hub-3=nats-3.example", "--out", out); err != nil {
		t.Fatalf("nats-config --cluster: %v\n%s", err, o)
	}
	for _, n := range []string{"hub-1", "hub-2", "hub-3"} {
		b, err := os.ReadFile(filepath.Join(out, n+".conf"))
		if err != nil {
			t.Fatal(err)
		}
		opts := &server.Options{}
		if err := opts.ProcessConfigString(string(b)); err != nil {
			t.Fatalf("%s.conf: %v", n, err)
		}
		if opts.ServerName != n || len(opts.Routes) != 3 || opts.Cluster.Port != 6222 || !opts.Cluster.TLSMap || opts.JetStreamDomain != "hub" {
			t.Fatalf("%s.conf: name %q routes %d cluster %+v domain %q", n, opts.ServerName, len(opts.Routes), opts.Cluster, opts.JetStreamDomain)
		}
		if !strings.Contains(string(b), "tls://nats-3.example:6222") || len(opts.Users) == 0 {
			t.Fatalf("%s.conf lacks the routes or the users", n)
		}
	}
}
