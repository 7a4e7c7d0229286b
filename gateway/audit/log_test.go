package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/tree"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

const td = "jisr.internal"

// fixture is a real bus and a key directory for the audit logs.
type fixture struct {
	env  *bustest.Env
	keys string
}

// newFixture starts a bus whose streams and buckets the operator created.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := newBareFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := natsstate.Init(ctx, f.env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	return f
}

// newBareFixture starts a bus with no stream or bucket.
func newBareFixture(t testing.TB) *fixture {
	t.Helper()
	return &fixture{env: bustest.Start(t), keys: t.TempDir()}
}

func (f *fixture) key(t testing.TB, id string) *checkpoint.KeyPair {
	t.Helper()
	kp, _, err := checkpoint.EnsureKey(f.keys, id, checkpoint.Origin(td, id))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func (f *fixture) open(t testing.TB, nc *nats.Conn, id string, opts ...audit.Option) *audit.Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts = append([]audit.Option{audit.WithLogger(bustest.Logger(t))}, opts...)
	l, err := audit.Open(ctx, audit.Config{Conn: nc, TrustDomain: td, LogID: id, Key: f.key(t, id)}, opts...)
	if err != nil {
		t.Fatalf("open log %s: %v", id, err)
	}
	return l
}

func decisionN(f *fixture, i int) *decision.Decision {
	eid := fmt.Sprintf("AB%06d", i%1000000)
	allowed := i%3 != 0
	d := &decision.Decision{
		Time:     time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		Consumer: "cnss", Provider: "civil-registry",
		Service: "jisr.civilregistry.v1.CivilRegistry", Method: "GetPerson",
		CKey: f.env.Keyer.CKey(eid), Purpose: "amo-enrolment",
		LegalBasis: "consent", Rule: "cnss-civil-status", TokenID: fmt.Sprintf("jti-%d", i),
		Allowed: allowed, Reason: decision.ReasonAllowed, Fields: []string{"person.names"},
		Code: codes.OK, Latency: time.Millisecond, TraceID: fmt.Sprintf("%032x", i+1),
	}
	if !allowed {
		d.Reason, d.Code, d.Fields = "CONSENT_INVALID", codes.Unauthenticated, nil
	}
	return d
}

func appendN(t testing.TB, f *fixture, l *audit.Log, from, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := from; i < from+n; i++ {
		wg.Go(func() {
			if err := l.Append(context.Background(), decisionN(f, i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
}

type storedRecord struct {
	seq     uint64
	subject string
	data    []byte
	rec     *auditv1.Record
}

// readLog reads every record of a log, as the auditor.
func readLog(t testing.TB, f *fixture, id string) []storedRecord {
	t.Helper()
	js, err := jetstream.New(f.env.Connect(t, "auditor"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, subject.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedRecord
	err = stream.Scan(ctx, s, stream.ScanOptions{Filters: []string{record.LogFilter(id)}}, func(m stream.Msg) error {
		_, _, batch, recs, err := record.Stored(m.Subject, m.Header, m.Data)
		if err != nil {
			return err
		}
		for i, data := range recs {
			r, err := record.Parse(data)
			if err != nil {
				return err
			}
			if batch && (i == 0 && m.Header.Get(record.HeaderFirstLeaf) != strconv.FormatUint(r.GetLeafIndex(), 10) || m.Header.Get(record.HeaderFormat) != "2") {
				return fmt.Errorf("batch at sequence %d: headers %v, first record is leaf %d", m.Seq, m.Header, r.GetLeafIndex())
			}
			out = append(out, storedRecord{seq: m.Seq, subject: m.Subject, data: data, rec: r})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkChain checks that recs are leaves 0..n-1 of one log, each chained to
// the one before, and returns the root of the tree they make.
func checkChain(t testing.TB, recs []storedRecord) []byte {
	t.Helper()
	r := tree.NewEmptyRange(0)
	var prev []byte
	for i, s := range recs {
		if s.rec.GetLeafIndex() != uint64(i) {
			t.Fatalf("record %d (seq %d) is leaf %d", i, s.seq, s.rec.GetLeafIndex())
		}
		if !bytes.Equal(s.rec.GetPrevLeafHash(), prev) {
			t.Fatalf("leaf %d does not chain to leaf %d", i, i-1)
		}
		prev = tree.LeafHash(s.data)
		if err := r.Append(prev, nil); err != nil {
			t.Fatal(err)
		}
	}
	root, err := tree.Root(r)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// lastCheckpoint reads and verifies the last checkpoint of a log.
func lastCheckpoint(t testing.TB, f *fixture, id string) (checkpoint.Checkpoint, *auditv1.CheckpointState) {
	t.Helper()
	js, err := jetstream.New(f.env.Connect(t, "auditor"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, subject.CheckpointStream)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := record.CheckpointSubject(id)
	m, err := s.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		t.Fatalf("last checkpoint of %s: %v", id, err)
	}
	st := &auditv1.CheckpointState{}
	if err := proto.Unmarshal(m.Data, st); err != nil {
		t.Fatal(err)
	}
	c, err := checkpoint.Open(st.GetCheckpoint(), note.VerifierList(f.key(t, id).Verifier))
	if err != nil {
		t.Fatal(err)
	}
	return c, st
}

func TestAppendIsStoredChainedAndCheckpointed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := f.open(t, f.env.Connect(t, "gateway"), "gw-1")
	appendN(t, f, l, 0, 500)
	if size, _ := l.Size(); size != 500 {
		t.Fatalf("size %d, want 500", size)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs := readLog(t, f, "gw-1")
	if len(recs) != 500 {
		t.Fatalf("%d records stored, want 500", len(recs))
	}
	root := checkChain(t, recs)
	traces := map[string]bool{}
	msgs := map[uint64]bool{}
	for _, s := range recs {
		id, _, batch, err := record.ParseStoredSubject(s.subject)
		if err != nil || id != "gw-1" || !batch {
			t.Fatalf("record leaf %d on subject %s, want a batch of gw-1", s.rec.GetLeafIndex(), s.subject)
		}
		traces[s.rec.GetTraceId()] = true
		msgs[s.seq] = true
	}
	t.Logf("500 records in %d messages", len(msgs))
	if len(traces) != 500 {
		t.Fatalf("%d distinct decisions stored, want 500 (one record per decision)", len(traces))
	}
	// The final checkpoint covers every record.
	c, st := lastCheckpoint(t, f, "gw-1")
	if c.Size != 500 || !bytes.Equal(c.Root, root) {
		t.Fatalf("final checkpoint size %d root %x, want 500 %x", c.Size, c.Root, root)
	}
	if st.GetLastSequence() != recs[499].seq || !bytes.Equal(st.GetLastLeafHash(), tree.LeafHash(recs[499].data)) {
		t.Fatal("the checkpoint does not name its last record")
	}
	if err := l.Append(context.Background(), decisionN(f, 1)); !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("append after close: %v, want ErrClosed", err)
	}
}

func TestReopenResumesTheLog(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	nc := f.env.Connect(t, "gateway")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// A clean stop: resumed from its final checkpoint.
	l := f.open(t, nc, "gw-1")
	appendN(t, f, l, 0, 40)
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	l = f.open(t, nc, "gw-1")
	if size, ckpt := l.Size(); size != 40 || ckpt != 40 {
		t.Fatalf("reopened at size %d checkpoint %d, want 40 40", size, ckpt)
	}
	appendN(t, f, l, 40, 30)

	// A crash: the log is abandoned without Close, with records after its
	// last checkpoint; the next process adopts them from the stream.
	l2 := f.open(t, nc, "gw-1", audit.WithCheckpointEvery(time.Hour))
	if size, ckpt := l2.Size(); size != 70 {
		t.Fatalf("after a crash, reopened at size %d (checkpoint %d), want 70", size, ckpt)
	}
	appendN(t, f, l2, 70, 5)
	if err := l2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs := readLog(t, f, "gw-1")
	if len(recs) != 75 {
		t.Fatalf("%d records, want 75", len(recs))
	}
	root := checkChain(t, recs)
	if c, _ := lastCheckpoint(t, f, "gw-1"); c.Size != 75 || !bytes.Equal(c.Root, root) {
		t.Fatalf("checkpoint size %d, want 75 with the recomputed root", c.Size)
	}
	_ = l // abandoned on purpose (the "crashed" process)
}

func TestLogsOfTwoInstancesAreSeparate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	nc := f.env.Connect(t, "gateway")
	a, b := f.open(t, nc, "gw-1"), f.open(t, nc, "gw-2")
	var wg sync.WaitGroup
	wg.Go(func() { appendN(t, f, a, 0, 60) })
	wg.Go(func() { appendN(t, f, b, 1000, 40) })
	wg.Wait()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, l := range []*audit.Log{a, b} {
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(readLog(t, f, "gw-1")); n != 60 {
		t.Fatalf("gw-1 has %d records", n)
	}
	checkChain(t, readLog(t, f, "gw-1"))
	checkChain(t, readLog(t, f, "gw-2"))
}

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	nc := f.env.Connect(t, "gateway")
	ctx := t.Context()
	if _, err := audit.Open(ctx, audit.Config{Conn: nc, TrustDomain: td, LogID: "gw.1", Key: f.key(t, "gw-1")}); !errors.Is(err, audit.ErrConfig) {
		t.Errorf("unsafe instance name: %v", err)
	}
	if _, err := audit.Open(ctx, audit.Config{Conn: nc, TrustDomain: td, LogID: "gw-2", Key: f.key(t, "gw-1")}); !errors.Is(err, audit.ErrConfig) {
		t.Errorf("another log's key: %v", err)
	}
	if _, err := audit.Open(ctx, audit.Config{Conn: nil, TrustDomain: td, LogID: "gw-1", Key: f.key(t, "gw-1")}); !errors.Is(err, audit.ErrConfig) {
		t.Errorf("no connection: %v", err)
	}
	// A member may not create or read the audit streams.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := audit.Open(cctx, audit.Config{Conn: f.env.Connect(t, "cnss"), TrustDomain: td, LogID: "gw-1", Key: f.key(t, "gw-1")}); err == nil {
		t.Error("a member opened the audit log")
	}
}

func TestOpenRefusesAStreamThatAllowsDeletes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		modify func(*jetstream.StreamConfig)
	}{
		{"deletes", func(c *jetstream.StreamConfig) { c.DenyDelete = false }},
		{"purges", func(c *jetstream.StreamConfig) { c.DenyPurge = false }},
		{"discard old", func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld; c.MaxBytes = 1 << 30 }},
		{"async persistence", func(c *jetstream.StreamConfig) { c.PersistMode = jetstream.AsyncPersistMode }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newBareFixture(t)
			nc := f.env.Connect(t, "gateway")
			js, _ := jetstream.New(f.env.Connect(t, "operator"))
			cfg, _, err := stream.StreamConfigs(stream.Config{})
			if err != nil {
				t.Fatal(err)
			}
			c.modify(&cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			if _, err := audit.Open(ctx, audit.Config{Conn: nc, TrustDomain: td, LogID: "gw-1", Key: f.key(t, "gw-1")}); !errors.Is(err, stream.ErrUnsafeStream) {
				t.Fatalf("opened on a stream that allows %s: %v", c.name, err)
			}
		})
	}
}

// restartable is a bus whose NATS server can be stopped and started again
// on the same port and JetStream store.
type restartable struct {
	*fixture
	cfg natsconf.Config
}

func newRestartable(t *testing.T) *restartable {
	t.Helper()
	f := newFixture(t)
	u, err := url.Parse(f.env.URL)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	fmt.Sscanf(u.Port(), "%d", &port)
	nats := f.env.Fed.ID("nats")
	cert, key := svid.Paths(f.env.Dir, nats)
	return &restartable{fixture: f, cfg: natsconf.Config{
		Federation: f.env.Fed, Port: port, CertFile: cert, KeyFile: key, CAFile: svid.BundlePath(f.env.Dir),
		StoreDir: f.env.Server.NATS().JetStreamConfig().StoreDir,
	}}
}

func (r *restartable) stop() { r.env.Server.Shutdown() }

func (r *restartable) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := natsserver.Start(ctx, r.cfg, r.env.Source(t, r.env.Fed.ID("nats")), nil)
	if err != nil {
		t.Fatal(err)
	}
	r.env.Server = s
	t.Cleanup(s.Shutdown)
}

func TestJetStreamDownFailsAppendsAndTheLogResumes(t *testing.T) {
	t.Parallel()
	r := newRestartable(t)
	nc := r.env.Connect(t, "gateway", nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	l := r.open(t, nc, "gw-1", audit.WithAckTimeout(time.Second), audit.WithRetryEvery(10*time.Millisecond))
	appendN(t, r.fixture, l, 0, 20)

	// JetStream off, server up: no responders.
	r.env.Server.NATS().DisableJetStream()
	for i := range 5 {
		if err := l.Append(context.Background(), decisionN(r.fixture, 100+i)); !errors.Is(err, audit.ErrUnavailable) {
			t.Fatalf("append with JetStream disabled: %v, want ErrUnavailable", err)
		}
	}
	// The whole server down.
	r.stop()
	if err := l.Append(context.Background(), decisionN(r.fixture, 200)); !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("append with NATS down: %v, want ErrUnavailable", err)
	}
	r.start(t)
	// Appends resume once the client has reconnected and the tail is re-read.
	bustest.Eventually(t, 20*time.Second, func() error {
		if err := l.Append(context.Background(), decisionN(r.fixture, 300)); err != nil {
			return fmt.Errorf("appends did not resume: %w", err)
		}
		return nil
	})
	appendN(t, r.fixture, l, 400, 20)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs := readLog(t, r.fixture, "gw-1")
	root := checkChain(t, recs)
	c, _ := lastCheckpoint(t, r.fixture, "gw-1")
	if c.Size != uint64(len(recs)) || !bytes.Equal(c.Root, root) {
		t.Fatalf("checkpoint %d, %d records", c.Size, len(recs))
	}
	// Every failed append may or may not have left a record (a record without
	// a reply is allowed); every successful one must have.
	ok := map[string]bool{}
	for _, s := range recs {
		ok[s.rec.GetTraceId()] = true
	}
	for i := range 20 {
		if !ok[fmt.Sprintf("%032x", i+1)] || !ok[fmt.Sprintf("%032x", 400+i+1)] {
			t.Fatalf("an acknowledged record is missing")
		}
	}
}

func TestFullStreamFailsAppends(t *testing.T) {
	t.Parallel()
	f := newBareFixture(t)
	small := stream.Config{MaxBytes: 16 << 10}
	if _, err := natsstate.Init(context.Background(), f.env.Connect(t, "operator"), small); err != nil {
		t.Fatal(err)
	}
	nc := f.env.Connect(t, "gateway")
	l := f.open(t, nc, "gw-1", audit.WithStream(small), audit.WithRetryEvery(time.Millisecond))
	var err error
	n := 0
	for ; n < 10000; n++ {
		if err = l.Append(context.Background(), decisionN(f, n)); err != nil {
			break
		}
	}
	if !errors.Is(err, audit.ErrUnavailable) || n == 0 {
		t.Fatalf("after %d appends: %v, want ErrUnavailable once the stream is full", n, err)
	}
	if err := l.Append(context.Background(), decisionN(f, n+1)); !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("append to a full stream: %v", err)
	}
	// Nothing was dropped to make room.
	recs := readLog(t, f, "gw-1")
	if len(recs) < n {
		t.Fatalf("%d records stored, %d acknowledged", len(recs), n)
	}
	checkChain(t, recs)
	if recs[0].rec.GetLeafIndex() != 0 {
		t.Fatal("the oldest record was dropped")
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, par := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("goroutines=%d", par), func(b *testing.B) {
			f := newFixture(b)
			l := f.open(b, f.env.Connect(b, "gateway"), "gw-1")
			b.SetParallelism(max(1, par/runtime.GOMAXPROCS(0))) // RunParallel starts parallelism×GOMAXPROCS goroutines
			d := decisionN(f, 1)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := l.Append(context.Background(), d); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
			defer cancel()
			_ = l.Close(ctx)
		})
	}
}

// insider connects with the identity that may create streams: the operator
// once the federation has one, else the gateway.
func insider(t *testing.T, env *bustest.Env) jetstream.JetStream {
	t.Helper()
	for _, id := range []string{"operator", "gateway"} {
		nc, err := env.Dial(id, env.Source(t, env.ID(id)))
		if err != nil {
			continue
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	t.Fatal("no identity may manage streams")
	return nil
}

// eraseStreams is an insider with the server's disk: it stops NATS, removes
// the audit and checkpoint streams from the JetStream store, starts NATS
// again and creates both streams again, empty.
func (r *restartable) eraseStreams(t *testing.T) {
	t.Helper()
	r.stop()
	n := 0
	err := filepath.WalkDir(r.cfg.StoreDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && filepath.Base(filepath.Dir(p)) == "streams" && (d.Name() == subject.AuditStream || d.Name() == subject.CheckpointStream) {
			n++
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil || n != 2 {
		t.Fatalf("erased %d streams: %v", n, err)
	}
	r.start(t)
	recreateStreams(t, r.env)
}

func recreateStreams(t *testing.T, env *bustest.Env) {
	t.Helper()
	js := insider(t, env)
	acfg, ccfg, err := stream.StreamConfigs(stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []jetstream.StreamConfig{acfg, ccfg} {
		if _, err := js.CreateStream(ctx, c); err != nil {
			t.Fatalf("recreate %s: %v", c.Name, err)
		}
	}
}

func TestALogThatNoLongerExtendsItsTrustedCheckpointIsRefused(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		// after the streams are erased and recreated empty
		refill func(t *testing.T, r *restartable, nc *nats.Conn)
		want   string
	}{
		{"erased", func(*testing.T, *restartable, *nats.Conn) {}, "covers 9 records, the stored log holds 0: records 0 to 8 are missing"},
		{"replaced by a shorter log", func(t *testing.T, r *restartable, nc *nats.Conn) {
			l := r.open(t, nc, "gw-1")
			appendN(t, r.fixture, l, 100, 4)
			closeLog(t, l)
		}, "covers 9 records, the stored log holds 4: records 4 to 8 are missing"},
		{"replaced by another log as long", func(t *testing.T, r *restartable, nc *nats.Conn) {
			l := r.open(t, nc, "gw-1")
			appendN(t, r.fixture, l, 100, 12)
			closeLog(t, l)
		}, "covers 9 records, and the stored log of 12 records has another root at that size"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRestartable(t)
			trusted := filepath.Join(t.TempDir(), "gw-1.checkpoint")
			nc := r.env.Connect(t, "gateway", nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
			l := r.open(t, nc, "gw-1", audit.WithTrustedCheckpoint(trusted))
			for i := range 9 { // one at a time: one decision, one record
				appendN(t, r.fixture, l, i, 1)
			}
			closeLog(t, l)
			kept, _, err := checkpoint.ReadFile(trusted, note.VerifierList(r.key(t, "gw-1").Verifier))
			if err != nil || kept.Size != 9 {
				t.Fatalf("trusted checkpoint on disk: size %d, %v", kept.Size, err)
			}

			r.eraseStreams(t)
			nc = r.env.Connect(t, "gateway")
			c.refill(t, r, nc)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			_, err = audit.Open(ctx, audit.Config{Conn: nc, TrustDomain: td, LogID: "gw-1", Key: r.key(t, "gw-1")}, audit.WithTrustedCheckpoint(trusted),
				audit.WithLogger(bustest.Logger(t)))
			if !errors.Is(err, audit.ErrNotExtended) {
				t.Fatalf("open on a log that no longer extends its trusted checkpoint: %v, want ErrNotExtended", err)
			}
			if !strings.Contains(err.Error(), "log gw-1") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("the error does not name the log and the sizes: %v", err)
			}
			// The file is left as it was: the evidence stays.
			if again, _, err := checkpoint.ReadFile(trusted, note.VerifierList(r.key(t, "gw-1").Verifier)); err != nil || again.Size != 9 {
				t.Fatalf("the trusted checkpoint changed: %d %v", again.Size, err)
			}
		})
	}
}

func closeLog(t *testing.T, l *audit.Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTrustedCheckpointBehindTheStreamIsCaughtUp(t *testing.T) {
	t.Parallel()
	// A crash after a checkpoint was published but before the file was
	// rewritten leaves the file behind the stream: the log still extends it.
	f := newFixture(t)
	trusted := filepath.Join(t.TempDir(), "gw-1.checkpoint")
	nc := f.env.Connect(t, "gateway")
	l := f.open(t, nc, "gw-1", audit.WithTrustedCheckpoint(trusted))
	appendN(t, f, l, 0, 5)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	old := mustReadFile(t, trusted)
	appendN(t, f, l, 5, 3)
	if err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	appendN(t, f, l, 8, 4)
	closeLog(t, l)
	if err := checkpoint.WriteFile(trusted, string(old)); err != nil {
		t.Fatal(err)
	}
	l = f.open(t, nc, "gw-1", audit.WithTrustedCheckpoint(trusted))
	if size, _ := l.Size(); size != 12 {
		t.Fatalf("reopened at %d, want 12", size)
	}
	kept, _, err := checkpoint.ReadFile(trusted, note.VerifierList(f.key(t, "gw-1").Verifier))
	if err != nil || kept.Size != 12 {
		t.Fatalf("the trusted checkpoint was not caught up: %d %v", kept.Size, err)
	}
	closeLog(t, l)
}

func TestANonRecordOnTheAuditSubjectDoesNotStopTheLog(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	nc := f.env.Connect(t, "gateway")
	l := f.open(t, nc, "gw-1", audit.WithCheckpointEvery(time.Hour))
	appendN(t, f, l, 0, 3)
	// Someone (here with the gateway's own rights) publishes junk on the
	// log's subjects: bytes that are not a record, a record of another log,
	// a record that claims the next leaf without chaining to it.
	ck := f.env.Keyer.CKey("AB000001")
	subj, _ := record.Subject("gw-1", ck)
	next := record.FromDecision(decisionN(f, 50))
	next.LogId, next.LeafIndex, next.PrevLeafHash = "gw-1", 3, tree.LeafHash([]byte("not the tail"))
	nextData, _ := record.Marshal(next)
	other := record.FromDecision(decisionN(f, 51))
	other.LogId = "gw-9"
	otherData, _ := record.Marshal(other)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var junk []uint64
	for _, data := range [][]byte{[]byte("{\"person\":\"forged\"}"), otherData, nextData} {
		ack, err := js.Publish(ctx, subj, data)
		if err != nil {
			t.Fatal(err)
		}
		junk = append(junk, ack.Sequence)
	}
	// A restart reads the tail back: the junk is logged and skipped.
	var logs syncBuf
	l2, err := audit.Open(ctx, audit.Config{Conn: nc, TrustDomain: td, LogID: "gw-1", Key: f.key(t, "gw-1")}, audit.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatalf("a forged message stopped the log from opening: %v", err)
	}
	if size, _ := l2.Size(); size != 3 {
		t.Fatalf("reopened at %d, want 3", size)
	}
	for _, seq := range junk {
		if !strings.Contains(logs.String(), "level=ERROR msg=\"a message") || !strings.Contains(logs.String(), fmt.Sprintf("seq=%d", seq)) {
			t.Fatalf("the message at sequence %d was not logged at ERROR:\n%s", seq, logs.String())
		}
	}
	appendN(t, f, l2, 3, 4)
	closeLog(t, l2)
	recs := readLogRecords(t, f, "gw-1")
	if len(recs) != 7 {
		t.Fatalf("%d records of gw-1, want 7", len(recs))
	}
	checkChain(t, recs)
}

// readLogRecords reads the records of a log, leaving out the messages on its
// subjects that are not records of it and the ones that do not chain.
func readLogRecords(t *testing.T, f *fixture, id string) []storedRecord {
	t.Helper()
	js, err := jetstream.New(f.env.Connect(t, "auditor"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, subject.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedRecord
	var prev []byte
	err = stream.Scan(ctx, s, stream.ScanOptions{Filters: []string{record.LogFilter(id)}}, func(m stream.Msg) error {
		_, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data)
		if err != nil {
			return nil
		}
		for _, data := range recs {
			r, err := record.Parse(data)
			if err != nil || r.GetLogId() != id || r.GetLeafIndex() != uint64(len(out)) || !bytes.Equal(r.GetPrevLeafHash(), prev) {
				continue
			}
			out = append(out, storedRecord{seq: m.Seq, subject: m.Subject, data: data, rec: r})
			prev = tree.LeafHash(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestALogErasedWhileOpenIsNotContinued(t *testing.T) {
	t.Parallel()
	r := newRestartable(t)
	nc := r.env.Connect(t, "gateway", nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	l := r.open(t, nc, "gw-1", audit.WithAckTimeout(time.Second), audit.WithRetryEvery(10*time.Millisecond))
	appendN(t, r.fixture, l, 0, 5)
	r.eraseStreams(t) // while the log is open
	var err error
	i := 0
	bustest.Eventually(t, 30*time.Second, func() error {
		err = l.Append(context.Background(), decisionN(r.fixture, 100+i))
		i++
		if err == nil {
			t.Fatal("a record was appended to an erased log")
		}
		if !errors.Is(err, audit.ErrNotExtended) {
			return fmt.Errorf("append to an erased log: %w, want ErrNotExtended", err)
		}
		return nil
	})
	if !errors.Is(err, audit.ErrNotExtended) || !strings.Contains(err.Error(), "log gw-1") {
		t.Fatalf("append to an erased log: %v, want ErrNotExtended", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := l.Checkpoint(ctx); !errors.Is(err, audit.ErrNotExtended) {
		t.Fatalf("checkpoint of an erased log: %v", err)
	}
}

// TestAppendsSurviveTheServerClosingTheConnection: the NATS server closes the
// gateway's connection (as it does when the SVID the connection was opened
// with expires) again and again while appends are in flight. The group
// commits whose acknowledgement was lost are republished under the same
// Nats-Msg-Id after the reconnection: no append fails, and the log holds
// every record exactly once, chained.
func TestAppendsSurviveTheServerClosingTheConnection(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	nc := f.env.Connect(t, "gateway", nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	l := f.open(t, nc, "gw-1", audit.WithAckTimeout(5*time.Second))
	const writers, each, kicks = 8, 150, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	var done atomic.Int64
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := l.Append(context.Background(), decisionN(f, w*each+i)); err != nil {
					errs <- err
				}
				done.Add(1)
			}
		})
	}
	ns := f.env.Server.NATS()
	for k := range kicks {
		// Wait until appends are flowing on the current connection.
		target := int64((k + 1) * writers * each / (kicks + 2))
		bustest.Eventually(t, 30*time.Second, func() error {
			if done.Load() < target {
				return fmt.Errorf("%d appends done, waiting for %d", done.Load(), target)
			}
			return nil
		})
		cid, err := nc.GetClientID()
		if err != nil {
			t.Fatal(err)
		}
		if err := ns.DisconnectClientByID(cid); err != nil {
			t.Fatal(err)
		}
		bustest.Eventually(t, 10*time.Second, func() error {
			if id, _ := nc.GetClientID(); id == cid || !nc.IsConnected() {
				return errors.New("not reconnected yet")
			}
			return nil
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("an append failed across the reconnections: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs := readLog(t, f, "gw-1")
	checkChain(t, recs)
	if len(recs) != writers*each {
		t.Fatalf("%d records stored for %d appends", len(recs), writers*each)
	}
}

// lockedBuffer collects a logger's lines from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestRestartAfterAKillResumesInOneLine: a gateway killed before its
// checkpoint leaves records after it; the next run of the same instance
// adopts them with one summary line, no ERROR. A second process appending
// under the same instance name is still reported at ERROR (once per
// adoption, not per record).
func TestRestartAfterAKillResumesInOneLine(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	nc1 := f.env.Connect(t, "gateway")
	l1 := f.open(t, nc1, "gw-1", audit.WithCheckpointEvery(time.Hour))
	appendN(t, f, l1, 0, 300)
	nc1.Close() // killed: no final checkpoint; l1 appends no more

	var logs lockedBuffer
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	nc2 := f.env.Connect(t, "gateway")
	l2 := f.open(t, nc2, "gw-1", audit.WithLogger(lg), audit.WithCheckpointEvery(time.Hour))
	if n := strings.Count(logs.String(), "resumed the records written after the last checkpoint"); n != 1 {
		t.Fatalf("%d resume lines, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("an ERROR on resuming the instance's own records:\n%s", logs.String())
	}
	if s, _ := l2.Size(); s != 300 {
		t.Fatalf("resumed at size %d, want 300", s)
	}

	// Another process under the same name: both append; whichever loses a
	// leaf to the other re-reads the tail and reports records it did not
	// write.
	var logs3 lockedBuffer
	lg3 := slog.New(slog.NewTextHandler(&logs3, &slog.HandlerOptions{Level: slog.LevelInfo}))
	nc3 := f.env.Connect(t, "gateway")
	l3 := f.open(t, nc3, "gw-1", audit.WithLogger(lg3), audit.WithCheckpointEvery(time.Hour), audit.WithRetryEvery(time.Millisecond))
	bustest.Eventually(t, 30*time.Second, func() error {
		for i := range 20 {
			_ = l2.Append(context.Background(), decisionN(f, 1000+i))
			_ = l3.Append(context.Background(), decisionN(f, 2000+i))
		}
		all := logs.String() + logs3.String()
		if !strings.Contains(all, "level=ERROR") || !strings.Contains(all, "is another gateway running with the same --instance?") {
			return errors.New("the second instance is not reported yet")
		}
		return nil
	})
}
