package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// A standalone `jisr nats-server` applies the NATS permissions of a new
// signed federation version without a restart. Justice is a consumer only
// in the file the server started with; version 1 makes it a provider, and
// on its connection already open it may then take the operator's
// catalogue requests; version 2 takes the service away again, and a
// subscription there is refused on a connection that stays open. The
// server is the same throughout.
func TestStandaloneNATSServerAppliesSignedVersionsWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	base := mustReadFile(t, "../testdata/federation.yaml")
	copyDescriptorSets(t, "../testdata/federation.yaml", dir)
	v0 := bytes.Replace(base, []byte("\nmembers:\n"), []byte("\nmembers:\n  - name: justice\n    title: Ministry of justice\n"), 1)
	set := mustReadFile(t, "../../deploy/members/justice/justice.binpb")
	v1 := bytes.Replace(v0, []byte("title: Ministry of justice\n"), []byte("title: Ministry of justice\n    provides: [jisr.justice.v1.CriminalRecord]\n"), 1)
	v1 = bytes.Replace(v1, []byte("\ndescriptor_sets:\n"), []byte("\ndescriptor_sets:\n  - file: justice.binpb\n    sha256: "+descset.Digest(set)+"\n"), 1)
	if bytes.Equal(v0, base) || bytes.Count(v1, []byte("justice")) != bytes.Count(v0, []byte("justice"))+2 {
		t.Fatal("could not add justice to the federation file")
	}
	fedPath, v1Path := filepath.Join(dir, "federation.yaml"), filepath.Join(dir, "federation-v1.yaml")
	for p, b := range map[string][]byte{fedPath: v0, v1Path: v1, filepath.Join(dir, "justice.binpb"): set} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	addr := loopbackAddr(t)
	g := &process.Env{FederationPath: fedPath, CertsDir: filepath.Join(dir, "certs"), DataDir: dir, NATSURL: "tls://" + addr,
		Log: slog.New(slog.DiscardHandler)}
	fed, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(g, fed); err != nil {
		t.Fatal(err)
	}
	cli := func(fedPath string, args ...string) {
		t.Helper()
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--federation", fedPath, "--certs", g.CertsDir, "--data", dir, "--nats", g.NATSURL, "--log-level", "error"}, args...))
		if err := root.ExecuteContext(t.Context()); err != nil {
			t.Fatalf("jisr %v: %v\n%s", args, err, out.String())
		}
	}

	// The server, as its command runs it, started once.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	server := newRootCmd()
	server.SetOut(io.Discard)
	server.SetErr(io.Discard)
	server.SetArgs([]string{"--federation", fedPath, "--certs", g.CertsDir, "--data", dir, "--log-level", "error", "nats-server", "--listen", addr})
	go func() { done <- server.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("jisr nats-server: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("jisr nats-server did not stop")
		}
	})
	bustest.Eventually(t, 30*time.Second, func() error {
		ictx, icancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer icancel()
		return process.NATSInit(ictx, g, io.Discard)
	})

	connect := func(identity string, opts ...nats.Option) *nats.Conn {
		t.Helper()
		cctx, ccancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer ccancel()
		nc, src, err := g.Connect(cctx, identity, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close(); src.Close() })
		return nc
	}
	errs, errs2 := make(chan error, 256), make(chan error, 256)
	j := connect("justice", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	j2 := connect("justice", nats.MaxReconnects(0), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs2 <- err }))
	op := connect(subject.Operator)
	serverID := j2.ConnectedServerId()
	ping := subject.Discovery + ".PING." + subject.DiscoveryName("justice")
	respond := func(m *nats.Msg) { _ = m.Respond([]byte("justice")) }
	refused := func(errs chan error, what string) {
		t.Helper()
		for {
			select {
			case err := <-errs:
				if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: not refused", what)
			}
		}
	}

	// Version 0 (the file): justice may not subscribe to its catalogue subject.
	if _, err := j.Subscribe(ping, respond); err != nil {
		t.Fatal(err)
	}
	refused(errs, "the file's version: justice subscribing to its catalogue subject")

	// Version 1, signed and published: on its open connection, justice now
	// answers the operator there.
	cli(v1Path, "federation", "sign", "--version", "1", "-o", filepath.Join(dir, "v1.json"))
	cli(fedPath, "federation", "publish", filepath.Join(dir, "v1.json"))
	bustest.Eventually(t, 30*time.Second, func() error {
		sub, err := j.Subscribe(ping, respond)
		if err != nil {
			return err
		}
		if _, err := op.Request(ping, nil, time.Second); err != nil {
			_ = sub.Unsubscribe()
			return err
		}
		return nil
	})

	// Version 2: the service taken away. A new subscription there is
	// refused on the connection that stayed open, and the operator's
	// request is no longer answered.
	cli(fedPath, "federation", "sign", "--version", "2", "-o", filepath.Join(dir, "v2.json"))
	cli(fedPath, "federation", "publish", filepath.Join(dir, "v2.json"))
	bustest.Eventually(t, 30*time.Second, func() error {
		if _, err := op.Request(ping, nil, time.Second); err == nil {
			return errors.New("justice still answers on its catalogue subject")
		}
		return nil
	})
	if _, err := j2.Subscribe(ping, respond); err != nil {
		t.Fatal(err)
	}
	refused(errs2, "version 2: subscribing to the catalogue subject on the open connection")

	// Nothing restarted: the same server, the connection never left it.
	if !j2.IsConnected() || j2.Stats().Reconnects != 0 || j2.ConnectedServerId() != serverID || op.Stats().Reconnects != 0 {
		t.Fatalf("restarted: connected %v, reconnects %d, server %s (was %s)", j2.IsConnected(), j2.Stats().Reconnects, j2.ConnectedServerId(), serverID)
	}
	select {
	case err := <-done:
		t.Fatalf("jisr nats-server stopped: %v", err)
	default:
	}
}
