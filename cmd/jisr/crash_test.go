package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// The test binary doubles as the jisr binary: with JISR_TEST_MAIN set it
// runs the command line instead of the tests, so a test can start a real
// `jisr dev` process and kill it.
func TestMain(m *testing.M) {
	if os.Getenv("JISR_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	if os.Getenv("JISR_AUDIT_SEEN_DIR") == "" { // `audit verify` in tests keeps its seen checkpoints here, not in $HOME
		dir, err := os.MkdirTemp("", "jisr-audit-seen-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		os.Setenv("JISR_AUDIT_SEEN_DIR", dir)
	}
	os.Exit(m.Run())
}

// TestKill9UnderLoadLosesNoAcknowledgedRecord runs the whole federation as
// one `jisr dev` process, drives queries at it from 16 clients, and kills it
// with SIGKILL mid-run — NATS, gateway and all. After a restart on the same
// data directory every reply the clients received must have its record,
// and the log must still verify.
func TestKill9UnderLoadLosesNoAcknowledgedRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("-short (make test-short): starts a whole jisr dev process and kills it under load; make test and CI run it")
	}
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	fedPath := "../testdata/federation.yaml"
	proc := exec.Command(os.Args[0], "dev", "--any-port", "--citizens", "3000",
		"--federation", fedPath, "--certs", certs, "--data", dir, "--log-level", "warn")
	proc.Env = append(os.Environ(), "JISR_TEST_MAIN=1")
	logs := &syncBuffer{}
	proc.Stdout, proc.Stderr = logs, logs
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = proc.Wait(); close(exited) }()
	t.Cleanup(func() { _ = proc.Process.Kill(); <-exited })

	var demo dev.File
	bustest.Eventually(t, 90*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(dir, "demo.json"))
		if err == nil && json.Unmarshal(b, &demo) == nil {
			return nil
		}
		select {
		case <-exited:
			t.Fatalf("jisr dev exited early:\n%s", logs.String())
		default:
		}
		return fmt.Errorf("jisr dev not ready:\n%s", logs.String())
	})
	cc, err := grpc.NewClient(demo.Endpoints["adapter/cnss"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := civilv1.NewCivilRegistryClient(cc)

	// Each query asks about a different citizen, so a record's ckey names
	// the query it belongs to.
	var (
		next     atomic.Int64
		mu       sync.Mutex
		answered []int
		wg       sync.WaitGroup
	)
	ctx, stop := context.WithCancel(context.Background())
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1))
				if i >= 3000 {
					return
				}
				cctx, cancel := context.WithTimeout(md(ctx, "jisr-purpose", "pension-continuity"), 5*time.Second)
				_, err := client.IsAlive(cctx, &civilv1.IsAliveRequest{Eid: eidN(i)})
				cancel()
				if err == nil {
					mu.Lock()
					answered = append(answered, i)
					mu.Unlock()
				}
			}
		}()
	}
	// Kill once the load is well under way.
	for {
		mu.Lock()
		n := len(answered)
		mu.Unlock()
		if n >= 300 {
			break
		}
		select {
		case <-exited:
			stop()
			t.Fatalf("jisr dev exited under load:\n%s", logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	stop()
	wg.Wait()
	t.Logf("%d replies received before SIGKILL", len(answered))

	// Bring the store back with a fresh NATS server on the same directory
	// and read the records as the auditor.
	g := &process.Env{FederationPath: fedPath, CertsDir: certs, DataDir: dir,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	ns, err := process.StartNATS(context.Background(), g, process.NATSOptions{Listen: "127.0.0.1:-1", Sync: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	g.NATSURL = ns.ClientURL()
	rctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	records, closeFn, err := auditorRecords(rctx, g)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	allowed := map[string]int{}
	if err := stream.Scan(rctx, records, stream.ScanOptions{}, func(m stream.Msg) error {
		for _, m := range recordsOf(m) {
			r, err := record.Parse(m.Data)
			if err != nil {
				return err
			}
			if r.GetDecision() == auditv1.Decision_DECISION_ALLOWED {
				allowed[r.GetCkey()]++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	keyer, err := g.Keyer()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range answered {
		if allowed[keyer.CKey(eidN(i))] == 0 {
			t.Fatalf("citizen %d got a reply before the crash but has no record (of %d replies, %d records)", i, len(answered), len(allowed))
		}
	}
	t.Logf("%d allowed records on disk cover all %d replies", len(allowed), len(answered))

	t.Setenv("JISR_AUDIT_SEEN_DIR", filepath.Join(t.TempDir(), "seen")) // this federation's keys, this auditor's memory
	root := newRootCmd()
	var out syncBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"--federation", fedPath, "--certs", certs, "--data", dir, "--nats", g.NATSURL,
		"--log-level", "error", "audit", "verify"})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("audit verify after the crash: %v\n%s", err, out.String())
	}
}
