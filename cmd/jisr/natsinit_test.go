package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// Before `jisr nats init` nothing starts, and each refusal names what is
// missing and what to run; the operator's init creates every stream and
// bucket once, and a second run only checks them.
func TestNothingStartsBeforeNATSInit(t *testing.T) {
	dir := t.TempDir()
	logs := &syncBuffer{}
	g := &process.Env{
		FederationPath: "../testdata/federation.yaml",
		CertsDir:       filepath.Join(dir, "certs"),
		DataDir:        dir,
		Log:            slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	fed, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(g, fed); err != nil {
		t.Fatal(err)
	}
	ns, err := process.StartNATS(context.Background(), g, process.NATSOptions{Listen: "127.0.0.1:-1", Sync: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	g.NATSURL = ns.ClientURL()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	if _, err := process.StartGateway(ctx, g, process.GatewayOptions{HTTPAddr: "127.0.0.1:0", Instance: "gw-1"}); err == nil ||
		!strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "jisr nats init") {
		t.Fatalf("the gateway started, or did not say why: %v", err)
	}
	f := &auditFed{g: g}
	if _, _, err := f.cli("consent", "list", "--citizen", eidN(1)); err == nil || !strings.Contains(err.Error(), "jisr nats init") {
		t.Fatalf("jisr consent list: %v", err)
	}
	if _, _, err := f.cli("audit", "query", "--consumer", "cnss"); err == nil || !strings.Contains(err.Error(), "jisr nats init") {
		t.Fatalf("jisr audit query: %v", err)
	}

	specs, err := natsstate.All(stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fed, err = g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	specs = append(specs, natsstate.EventSpecs(fed, 1)...)
	for _, want := range []string{"created", "ok"} {
		var out bytes.Buffer
		if err := process.NATSInit(ctx, g, &out); err != nil {
			t.Fatal(err)
		}
		for _, sp := range specs {
			if !strings.Contains(out.String(), sp.Name()) || strings.Count(out.String(), want) != len(specs) {
				t.Fatalf("jisr nats init printed:\n%s\nwant every stream and bucket %s", out.String(), want)
			}
		}
	}
	n, err := process.StartGateway(ctx, g, process.GatewayOptions{HTTPAddr: "127.0.0.1:0", Instance: "gw-1"})
	if err != nil {
		t.Fatalf("the gateway after init: %v\n%s", err, logs.String())
	}
	sctx, scancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer scancel()
	if err := n.Stop(sctx); err != nil {
		t.Fatal(err)
	}
}
