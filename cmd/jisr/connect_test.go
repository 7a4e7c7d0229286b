package main

import (
	"net"
	"strings"
	"testing"

	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// When nothing listens at --nats, a command that connects says how to start
// the NATS server (nats.go reports a refused dial as nats.ErrNoServers, not
// with the words "connection refused").
func TestConnectRefusedSaysStartNATS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	f := &auditFed{g: &process.Env{FederationPath: "../../deploy/federation.yaml", CertsDir: t.TempDir(), DataDir: t.TempDir(), NATSURL: "tls://" + addr}}
	if _, stderr, err := f.cli("certs", "init"); err != nil {
		t.Fatalf("certs init: %v\n%s", err, stderr)
	}
	_, _, err = f.cli("nats", "init")
	if err == nil || !strings.Contains(err.Error(), "is the federation running?") || !strings.Contains(err.Error(), "make run") ||
		!strings.Contains(err.Error(), "var/demo.json") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("nats init with no server: %v, want the URL and the hint to start one (make run, var/demo.json)", err)
	}
}
