package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/accesslog"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/index"
	"github.com/jisr-bus/jisr/gateway/console"
)

// auditParts is the audit as the gateway process hosts it: the log every
// decision is appended to, the citizen's access log routes, and Close.
type auditParts struct {
	Log    gateway.AuditLog
	Routes map[string]http.Handler         // mounted on the gateway HTTP mux
	Close  func(ctx context.Context) error // flushes, publishes the final checkpoint
	// RegisterGRPC adds the access log's gRPC service to the gateway's gRPC server.
	RegisterGRPC func(*grpc.Server)
	// Console is the auditor's console (nil without the gateway's SVID).
	Console *console.Server
	// Commits tells its subscribers of the log's commits (after the index).
	Commits *commitHooks
}

// commitHooks fans the log's commits (audit.Log.OnCommit: one function) out
// to several subscribers, called on the log's sequencer: each must be quick.
type commitHooks struct {
	mu  sync.Mutex
	fns atomic.Pointer[[]*func(audit.Committed)]
}

// Add subscribes fn; the function returned unsubscribes it.
func (h *commitHooks) Add(fn func(audit.Committed)) (remove func()) {
	p := &fn
	h.mu.Lock()
	defer h.mu.Unlock()
	var fns []*func(audit.Committed)
	if cur := h.fns.Load(); cur != nil {
		fns = slices.Clone(*cur)
	}
	fns = append(fns, p)
	h.fns.Store(&fns)
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		fns := slices.DeleteFunc(slices.Clone(*h.fns.Load()), func(q *func(audit.Committed)) bool { return q == p })
		h.fns.Store(&fns)
	}
}

func (h *commitHooks) call(c audit.Committed) {
	if fns := h.fns.Load(); fns != nil {
		for _, fn := range *fns {
			(*fn)(c)
		}
	}
}

// startAudit opens this instance's audit log on the gateway's connection
// (the streams `jisr nats init` created; resuming the log after a restart),
// starts the index that proves records to citizens, and builds the citizen's
// access log routes.
func startAudit(ctx context.Context, cfg Config, o options, citizens accesslog.Authenticator, reg prometheus.Registerer) (_ *auditParts, err error) {
	td, a := cfg.Federation.TrustDomain.Name(), cfg.Audit
	kp, created, err := checkpoint.EnsureKey(a.KeyDir, cfg.Instance, checkpoint.Origin(td, cfg.Instance))
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint key: %w", err)
	}
	if created {
		cfg.Log.Info("created the audit log's checkpoint key: publish the .pub file to auditors",
			"key", filepath.Join(a.KeyDir, cfg.Instance+".pub"))
	}
	var closers []func(context.Context) error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i](context.WithoutCancel(ctx))
			}
		}
	}()
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return nil, err
	}
	open := func() (*audit.Log, error) {
		return audit.Open(ctx, audit.Config{Conn: cfg.Conn, TrustDomain: td, LogID: cfg.Instance, Key: kp},
			audit.WithLogger(cfg.Log), audit.WithStream(a.Stream), audit.WithCheckpointEvery(a.CheckpointEvery),
			audit.WithTrustedCheckpoint(a.TrustedCheckpoint), audit.WithAPIPrefix(a.APIPrefix))
	}
	l, err := open()
	// A stream without a leader for a moment (a hub node lost, an election)
	// answers no one: the replica waits for it, not ready meanwhile, for up
	// to openRetryFor. Any other error, a missing stream among them, is
	// final.
	for wait, start := 250*time.Millisecond, time.Now(); err != nil && errors.Is(err, nats.ErrNoResponders) && time.Since(start) < openRetryFor; wait = min(2*wait, 2*time.Second) {
		cfg.Log.Warn("the audit streams answer no one (no leader yet?): opening the audit log again", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		l, err = open()
	}
	if err != nil {
		if a.APIPrefix == "" && errors.Is(err, context.DeadlineExceeded) {
			// On a server whose audit streams live in their own account, the
			// plain JetStream API is not the gateway's to use: it gets no answer.
			err = fmt.Errorf("%w (if the NATS server keeps the audit in its own account, `jisr nats-server --audit-account`, start the gateway with --audit-api-prefix '$JS.AUDIT.API')", err)
		}
		return nil, err
	}
	closers = append(closers, l.Close)
	hooks := &commitHooks{}
	svc, streams, closeIndex, err := startAccessLog(ctx, cfg, citizens, l, hooks)
	if err != nil {
		return nil, err
	}
	closers = append(closers, closeIndex)
	con, closeConsole, err := startConsole(ctx, cfg, o, l, streams.records, streams.ckpts, streams.keys, reg)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	closers = append(closers, closeConsole)
	return &auditParts{Log: l, Routes: svc.Routes(), RegisterGRPC: svc.Register, Close: closeOnce(closers), Console: con, Commits: hooks}, nil
}

// openRetryFor bounds how long a starting replica waits for the audit
// streams to answer (a leader elected).
const openRetryFor = 30 * time.Second

// startAccessLog runs the index of the audit records and builds the
// citizen's access log on it; the function returned stops the index.
func startAccessLog(ctx context.Context, cfg Config, citizens accesslog.Authenticator, own *audit.Log, hooks *commitHooks) (*accesslog.Service, auditStreams, func(context.Context) error, error) {
	td := cfg.Federation.TrustDomain.Name()
	var none auditStreams
	keys, err := checkpoint.LoadPublicKeys(cfg.Audit.KeyDir)
	if err != nil {
		return nil, none, nil, err
	}
	js, err := jetstream.New(cfg.Conn)
	if cfg.Audit.APIPrefix != "" {
		js, err = jetstream.NewWithAPIPrefix(cfg.Conn, cfg.Audit.APIPrefix)
	}
	if err != nil {
		return nil, none, nil, err
	}
	records, err := js.Stream(ctx, subject.AuditStream)
	if err != nil {
		return nil, none, nil, err
	}
	ckpts, err := js.Stream(ctx, subject.CheckpointStream)
	if err != nil {
		return nil, none, nil, err
	}
	store, err := index.OpenStore(filepath.Join(cfg.Audit.Dir, "index-"+cfg.Instance+".db"))
	if err != nil {
		return nil, none, nil, err
	}
	ix := index.New(store, records, ckpts, td, keys, cfg.Log)
	// The gateway's own records go to the index as they are committed; the
	// stream brings the other replicas'.
	ix.Own(own.ID(), own.OnCommit(func(c audit.Committed) {
		leaves := make([]index.Leaf, len(c.Leaves))
		for i, lf := range c.Leaves {
			leaves[i] = index.Leaf{Hash: lf.Hash, Prev: lf.Prev, CKey: lf.CKey}
		}
		ix.AddCommitted(c.LogID, c.Seq, c.First, leaves)
		hooks.call(c)
	}))
	ictx, stopIndex := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { ix.Run(ictx) })
	stop := func(context.Context) error {
		own.OnCommit(nil)
		stopIndex()
		wg.Wait()
		return store.Close()
	}
	svc, err := accesslog.New(accesslog.Config{
		Federation: cfg.Federation, Records: records, Index: ix, Keys: keys, Auth: citizens, Log: cfg.Log,
	})
	if err != nil {
		_ = stop(ctx)
		return nil, none, nil, err
	}
	return svc, auditStreams{records: records, ckpts: ckpts, keys: keys}, stop, nil
}

// auditStreams are the audit streams as the gateway reads them, and the
// logs' public keys.
type auditStreams struct {
	records, ckpts jetstream.Stream
	keys           *checkpoint.Keys
}

// closeOnce runs the closers in reverse order, once.
func closeOnce(closers []func(context.Context) error) func(context.Context) error {
	var once sync.Once
	var closeErr error
	return func(ctx context.Context) error {
		once.Do(func() {
			var errs []error
			for i := len(closers) - 1; i >= 0; i-- {
				errs = append(errs, closers[i](ctx))
			}
			closeErr = errors.Join(errs...)
		})
		return closeErr
	}
}
