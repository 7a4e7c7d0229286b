package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// syncBuffer collects logs from every part of the federation.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// devFixture runs `jisr dev` in-process, as `make run` does, on free ports.
type devFixture struct {
	demo   dev.File
	logs   *syncBuffer
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
	g      *process.Env
}

func startDev(t *testing.T) *devFixture {
	t.Helper()
	return startDevWith(t, nil)
}

// startDevWith lets the test adjust the process.Env (telemetry, logging) first.
// Options may adjust dev's Options too.
func startDevWith(t *testing.T, adjust func(*process.Env), options ...func(*dev.Options)) *devFixture {
	t.Helper()
	dir := t.TempDir()
	f := &devFixture{logs: &syncBuffer{}, out: &syncBuffer{}, done: make(chan error, 1)}
	f.g = &process.Env{
		FederationPath: "../testdata/federation.yaml",
		CertsDir:       filepath.Join(dir, "certs"),
		DataDir:        dir,
		Log:            slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if adjust != nil {
		adjust(f.g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	o := dev.Options{Citizens: 500, AnyPort: true, ConsoleAddr: "127.0.0.1:0", NATS: process.NATSOptions{Sync: "1s"}}
	for _, opt := range options {
		opt(&o)
	}
	go func() {
		f.done <- dev.Run(ctx, f.g, o, f.out)
	}()
	t.Cleanup(func() { f.stop(t) })
	bustest.Eventually(t, 60*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(dir, "demo.json"))
		if err == nil && json.Unmarshal(b, &f.demo) == nil {
			return nil
		}
		select {
		case err := <-f.done:
			t.Fatalf("jisr dev stopped: %v\n%s", err, f.logs.String())
		default:
		}
		return fmt.Errorf("jisr dev not ready\n%s", f.logs.String())
	})
	return f
}

func (f *devFixture) stop(t *testing.T) {
	if f.cancel == nil {
		return
	}
	f.cancel()
	f.cancel = nil
	select {
	case err := <-f.done:
		if err != nil {
			t.Errorf("jisr dev shut down with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("jisr dev did not shut down within 30s")
	}
}

func (f *devFixture) dial(t *testing.T, member string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(f.demo.Endpoints["adapter/"+member], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestDevFederationAnswersThePrintedCall(t *testing.T) {
	f := startDev(t)
	if !strings.Contains(f.out.String(), "grpcurl -plaintext") || f.demo.Try == "" {
		t.Fatalf("no grpcurl command printed:\n%s", f.out.String())
	}
	var tok *dev.Token
	for i := range f.demo.Tokens {
		d := &f.demo.Tokens[i]
		if d.Consumer == "cnss" && d.Provider == "civil-registry" && slices.Contains(d.Methods, "GetPerson") {
			tok = d
			break
		}
	}
	if tok == nil {
		t.Fatalf("demo.json has no cnss → civil-registry GetPerson token: %+v", f.demo.Tokens)
	}
	if !strings.Contains(f.demo.Try, tok.Token) || !strings.Contains(f.demo.Try, tok.Citizen) {
		t.Fatal("the printed command does not carry the demo token and citizen")
	}
	cc := f.dial(t, "cnss")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	withMD := func(kv ...string) context.Context { return metadata.NewOutgoingContext(ctx, metadata.Pairs(kv...)) }
	client := civilv1.NewCivilRegistryClient(cc)

	resp, err := client.GetPerson(withMD("jisr-purpose", tok.Purpose, "jisr-consent", tok.Token), &civilv1.GetPersonRequest{Eid: tok.Citizen})
	if err != nil {
		t.Fatalf("the demo call failed: %v", err)
	}
	p := resp.GetPerson()
	if p.GetEid() != tok.Citizen || p.GetNames().GetLatin().GetFamily() == "" {
		t.Fatalf("person %v", p)
	}
	if p.GetFatherName() != "" || p.GetMotherName() != "" {
		t.Fatalf("fields outside the rule were released: %v", p)
	}

	_, err = client.GetPerson(withMD("jisr-purpose", tok.Purpose), &civilv1.GetPersonRequest{Eid: tok.Citizen})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without a token: %v", err)
	}
	// The same token from another member's adapter is refused.
	_, err = civilv1.NewCivilRegistryClient(f.dial(t, "tax")).GetPerson(withMD("jisr-purpose", "tax-clearance", "jisr-consent", tok.Token), &civilv1.GetPersonRequest{Eid: tok.Citizen})
	if c := status.Code(err); c != codes.PermissionDenied && c != codes.Unauthenticated {
		t.Fatalf("another member's token: %v", err)
	}
	// A mandate needs no token.
	alive, err := client.IsAlive(withMD("jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: tok.Citizen})
	if err != nil {
		t.Fatalf("mandate call: %v", err)
	}
	_ = alive

	// No demo eID appears in any log line of the whole federation, and no
	// part was refused a subject it needed (each holds only what it uses).
	f.stop(t)
	logs := f.logs.String()
	if strings.Contains(strings.ToLower(logs), "permissions violation") {
		t.Fatalf("a part of the federation was refused a subject:\n%s", logs)
	}
	for _, c := range f.demo.Citizens {
		if strings.Contains(logs, c.EID) {
			t.Fatalf("logs contain the eID %s", c.EID)
		}
	}
}

func TestDevRestartsFastWithExistingData(t *testing.T) {
	if testing.Short() {
		t.Skip("-short (make test-short): starts the dev federation twice to time the restart; make test and CI run it")
	}
	f := startDev(t)
	dir := f.g.DataDir
	f.stop(t)
	begin := time.Now()
	g2 := *f.g
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	os.Remove(filepath.Join(dir, "demo.json"))
	go func() {
		done <- dev.Run(ctx, &g2, dev.Options{Citizens: 500, AnyPort: true, ConsoleAddr: "127.0.0.1:0", NATS: process.NATSOptions{Sync: "1s"}}, io.Discard)
	}()
	bustest.Eventually(t, 60*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(dir, "demo.json")); err != nil {
			select {
			case err := <-done:
				t.Fatalf("restart failed: %v", err)
			default:
			}
			return fmt.Errorf("restart not ready: %w", err)
		}
		return nil
	})
	t.Logf("restart with existing data ready in %s", time.Since(begin))
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// getPersonToken is the demo token for CNSS asking the civil registry for a
// person (the scenario of the printed grpcurl call).
func (f *devFixture) getPersonToken(t *testing.T) *dev.Token {
	t.Helper()
	for i := range f.demo.Tokens {
		if d := &f.demo.Tokens[i]; d.Consumer == "cnss" && d.Provider == "civil-registry" && slices.Contains(d.Methods, "GetPerson") {
			return d
		}
	}
	t.Fatalf("demo.json has no cnss → civil-registry GetPerson token: %+v", f.demo.Tokens)
	return nil
}

// startDevWithOptions lets the test set jisr dev's options (opts may be nil).
func startDevWithOptions(t *testing.T, adjust func(*process.Env), opts func(*dev.Options)) *devFixture {
	t.Helper()
	if opts == nil {
		return startDevWith(t, adjust)
	}
	return startDevWith(t, adjust, opts)
}
