// Package audit is the gateway's audit log: it makes every decision durable,
// as one record in JetStream, before the gateway may answer.
//
// Each gateway instance keeps its own append-only log. A record is a leaf of
// the log's RFC 6962 Merkle tree and carries the hash of the leaf before it;
// the log publishes signed checkpoints (C2SP tlog-checkpoint, Ed25519)
// regularly and when it closes, and a restarted instance resumes its log
// where the stream says it ended.
//
// Invariant: Append returns nil only when the record is stored in JetStream
// (acknowledged, deduplicated by leaf) at the next leaf of an unbroken chain;
// when that cannot be established, Append fails and the log refuses further
// records until it has re-read its own tail from the stream. A gap in the
// chain is never papered over.
//
// Group commit: one goroutine (the sequencer) takes every Append waiting,
// numbers and chains them, publishes them pipelined on one connection and
// waits for their acknowledgements together, so concurrent queries share one
// round trip and JetStream's writes; the disk is synced by JetStream's
// sync_interval, not per record (see docs/audit.md).
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/tree"
	"github.com/jisr-bus/jisr/gateway/decision"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Sentinel errors.
var (
	// ErrUnavailable: the record could not be made durable (JetStream
	// unavailable, stream full, acknowledgement lost). Nothing may be released.
	ErrUnavailable = errors.New("audit: the audit log is unavailable")
	// ErrClosed: the log is closed.
	ErrClosed = errors.New("audit: the audit log is closed")
	// ErrBroken: the stored log has a gap or a record that does not chain;
	// the log cannot be continued. Run `jisr audit verify`.
	ErrBroken = errors.New("audit: the stored log is broken")
	// ErrConfig: invalid options.
	ErrConfig = errors.New("audit: invalid configuration")
	// ErrNotExtended: the stored log is shorter than the checkpoint this
	// gateway last published and kept on its own disk, or has another root
	// at that size: it was truncated, replaced or forked behind the
	// gateway's back. The gateway refuses to append to it.
	ErrNotExtended = errors.New("audit: the stored log does not extend the gateway's trusted checkpoint")
)

// Config holds what Open requires.
type Config struct {
	// Conn is the gateway's NATS connection.
	Conn *nats.Conn
	// TrustDomain is the federation's trust domain.
	TrustDomain string
	// LogID names the log: the gateway instance, a safe subject token.
	LogID string
	// Key signs the checkpoints; its name must be the log's origin
	// (checkpoint.Origin(TrustDomain, LogID)).
	Key *checkpoint.KeyPair
}

type options struct {
	log             *slog.Logger
	stream          stream.Config
	checkpointEvery time.Duration
	maxBatch        int
	ackTimeout      time.Duration
	queue           int
	retryEvery      time.Duration
	trustedPath     string
	apiPrefix       string
}

// Option configures Open with an optional setting.
type Option func(*options)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithStream sets the retention of the streams, used when Open creates them.
func WithStream(c stream.Config) Option { return func(o *options) { o.stream = c } }

// WithCheckpointEvery sets how often a checkpoint is published while the log
// grows (default 15s). One is also published when the log closes.
func WithCheckpointEvery(d time.Duration) Option { return func(o *options) { o.checkpointEvery = d } }

// WithMaxBatch bounds how many records one group commit carries (default 1024).
func WithMaxBatch(n int) Option { return func(o *options) { o.maxBatch = n } }

// WithAckTimeout bounds the wait for JetStream's acknowledgement (default 5s).
func WithAckTimeout(d time.Duration) Option { return func(o *options) { o.ackTimeout = d } }

// WithQueue bounds the Appends waiting for the sequencer (default 16384).
func WithQueue(n int) Option { return func(o *options) { o.queue = n } }

// WithRetryEvery sets how often a log that lost track of its tail re-reads
// it (default 250ms); in between, Appends fail at once.
func WithRetryEvery(d time.Duration) Option { return func(o *options) { o.retryEvery = d } }

// WithTrustedCheckpoint keeps the log's last published checkpoint (its
// signed note) in the file at path, outside NATS, rewritten atomically after
// each checkpoint. Open refuses a stored log that does not extend the
// checkpoint in that file (ErrNotExtended). A missing file is trusted on
// first use.
func WithTrustedCheckpoint(path string) Option { return func(o *options) { o.trustedPath = path } }

// WithAPIPrefix reaches the audit streams' JetStream API under prefix (for
// example "$JS.AUDIT.API"): the server keeps them in their own account and
// shows the gateway's account only their read-only API there (see
// natsconf.AuditAPIPrefix). Records and checkpoints are published on their
// usual subjects.
func WithAPIPrefix(prefix string) Option { return func(o *options) { o.apiPrefix = prefix } }

// Log is one gateway instance's audit log. Create it with Open.
type Log struct {
	id, origin string
	key        *checkpoint.KeyPair
	o          options
	log        *slog.Logger
	js         jetstream.JetStream
	records    jetstream.Stream
	ckpts      jetstream.Stream

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	queue  chan *pending
	done   chan struct{}
	ckptRq chan chan error

	// Owned by the sequencer goroutine (and by Open before it starts).
	state
	// uncertain holds the records of a group commit that failed part-way:
	// some may be stored. Until the tail is re-read, nothing else is appended.
	uncertain   []*item
	lastAttempt time.Time
	// fatal: the stored log was erased or replaced while this process
	// wrote it (ErrNotExtended); nothing more is appended.
	fatal error

	stats struct {
		sync.Mutex
		size, checkpoint uint64
	}
}

// state is the log's tail: what the next record chains to.
type state struct {
	size    uint64         // leaves in the log
	prev    []byte         // leaf hash of leaf size-1
	lastSeq uint64         // highest stream sequence of a record adopted
	tailSeq uint64         // stream sequence of leaf size-1
	all     *compact.Range // [0, size)
	// The last published checkpoint and the leaves since.
	ckptSize   uint64
	ckptRange  *compact.Range // [0, ckptSize)
	ckptSigned string         // its signed note
	since      *compact.Range // [ckptSize, size)
}

type pending struct {
	rec  *auditv1.Record
	done chan error
}

type item struct {
	*pending
	leaf    uint64
	subject string
	data    []byte
	hash    []byte
	prev    []byte
	fut     jetstream.PubAckFuture
	seq     uint64
	err     error
}

// Open validates cfg and opens the log of instance cfg.LogID on the
// gateway's connection: it opens the streams (never creating one), resumes
// the log from its last checkpoint and the records after it, and starts the
// sequencer.
func Open(ctx context.Context, cfg Config, opts ...Option) (*Log, error) {
	nc, trustDomain, logID, key := cfg.Conn, cfg.TrustDomain, cfg.LogID, cfg.Key
	o := options{
		log: slog.Default(), checkpointEvery: 15 * time.Second, maxBatch: 1024,
		ackTimeout: 5 * time.Second, queue: 16384, retryEvery: 250 * time.Millisecond,
	}
	for _, opt := range opts {
		opt(&o)
	}
	origin := checkpoint.Origin(trustDomain, logID)
	switch {
	case nc == nil:
		return nil, fmt.Errorf("%w: Conn is required", ErrConfig)
	case subject.CheckToken(logID) != nil:
		return nil, fmt.Errorf("%w: LogID %q must be a safe subject token", ErrConfig, logID)
	case key == nil || key.Signer.Name() != origin || key.Verifier.Name() != origin:
		return nil, fmt.Errorf("%w: Key must be named %q", ErrConfig, origin)
	case o.checkpointEvery <= 0 || o.maxBatch <= 0 || o.ackTimeout <= 0 || o.queue <= 0 || o.retryEvery <= 0:
		return nil, fmt.Errorf("%w: intervals, sizes and timeouts must be positive", ErrConfig)
	}
	jsOpts := []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncMaxPending(2 * o.maxBatch),
		jetstream.WithPublishAsyncTimeout(o.ackTimeout),
	}
	var js jetstream.JetStream
	var err error
	if o.apiPrefix != "" {
		js, err = jetstream.NewWithAPIPrefix(nc, o.apiPrefix, jsOpts...)
	} else {
		js, err = jetstream.New(nc, jsOpts...)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{
		id: logID, origin: origin, key: key, o: o,
		log:   o.log.With("component", "audit", "log", logID),
		js:    js,
		queue: make(chan *pending, o.queue), done: make(chan struct{}),
		ckptRq: make(chan chan error),
	}
	if l.records, l.ckpts, err = stream.Open(ctx, js, o.stream, l.log); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := l.resume(ctx); err != nil {
		return nil, err
	}
	trustedSize, err := l.checkTrusted(ctx)
	if err != nil {
		return nil, err
	}
	if l.ckptSize > trustedSize {
		l.keepTrusted()
	}
	l.publishStats()
	l.log.Info("audit log open", "size", l.size, "checkpoint", l.ckptSize, "last_sequence", l.lastSeq)
	if l.size > l.ckptSize {
		if err := l.checkpoint(ctx); err != nil {
			l.log.Warn("checkpoint after resume not published; will retry", "err", err)
		}
	}
	go l.run()
	return l, nil
}

// ID is the log id (the gateway instance name).
func (l *Log) ID() string { return l.id }

// Origin is the log's checkpoint origin and key name.
func (l *Log) Origin() string { return l.origin }

// Size returns the number of records in the log and the size of the last
// published checkpoint.
func (l *Log) Size() (size, checkpointed uint64) {
	l.stats.Lock()
	defer l.stats.Unlock()
	return l.stats.size, l.stats.checkpoint
}

// Pending is the number of records waiting for the sequencer: the audit
// backlog (it grows when JetStream slows down).
func (l *Log) Pending() int { return len(l.queue) }

// Append makes the record of d durable. It returns nil only once the record
// is stored; ctx bounds the wait (the gateway passes a context that a caller
// hanging up cannot cancel).
func (l *Log) Append(ctx context.Context, d *decision.Decision) error {
	p := &pending{rec: record.FromDecision(d), done: make(chan error, 1)}
	if _, err := record.Subject(l.id, p.rec.GetCkey()); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	select {
	case l.queue <- p:
		l.mu.RUnlock()
	case <-ctx.Done():
		l.mu.RUnlock()
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// Checkpoint publishes a checkpoint now if the log grew since the last one.
func (l *Log) Checkpoint(ctx context.Context) error {
	rq := make(chan error, 1)
	select {
	case l.ckptRq <- rq:
	case <-l.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-rq:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops taking records, commits those already taken, publishes a
// final checkpoint and stops. It waits until ctx ends.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
	}
	l.mu.Unlock()
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit: close: %w", ctx.Err())
	}
}

// run is the sequencer: the only goroutine that appends.
func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(l.o.checkpointEvery)
	defer tick.Stop()
	for {
		select {
		case p, ok := <-l.queue:
			if !ok {
				l.finalCheckpoint()
				return
			}
			batch := []*pending{p}
			open := true
		fill:
			for len(batch) < l.o.maxBatch {
				select {
				case p, ok := <-l.queue:
					if !ok {
						open = false
						break fill
					}
					batch = append(batch, p)
				default:
					break fill
				}
			}
			l.commit(batch)
			if !open {
				l.finalCheckpoint()
				return
			}
		case rq := <-l.ckptRq:
			ctx, cancel := context.WithTimeout(context.Background(), l.o.ackTimeout)
			rq <- l.checkpoint(ctx)
			cancel()
		case <-tick.C:
			if l.size > l.ckptSize && l.uncertain == nil {
				ctx, cancel := context.WithTimeout(context.Background(), l.o.ackTimeout)
				if err := l.checkpoint(ctx); err != nil {
					l.log.Warn("checkpoint not published; will retry", "size", l.size, "err", err)
				}
				cancel()
			}
		}
	}
}

func (l *Log) finalCheckpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), l.o.ackTimeout)
	defer cancel()
	if l.uncertain != nil {
		if err := l.recover(ctx); err != nil {
			l.log.Error("closing with an unsettled tail: no final checkpoint", "err", err)
			return
		}
	}
	if err := l.checkpoint(ctx); err != nil {
		l.log.Error("final checkpoint not published", "size", l.size, "err", err)
		return
	}
	l.log.Info("audit log closed", "size", l.size)
}

// commit appends one batch: number, chain, publish pipelined, wait for every
// acknowledgement, then advance the tail — or, on any failure, fail the whole
// batch and leave the log uncertain until its tail is re-read.
func (l *Log) commit(batch []*pending) {
	if l.fatal != nil {
		failAll(batch, l.fatal)
		return
	}
	if l.uncertain != nil {
		if time.Since(l.lastAttempt) < l.o.retryEvery {
			failAll(batch, fmt.Errorf("%w: recovering from an earlier failure", ErrUnavailable))
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.o.ackTimeout)
		err := l.recover(ctx)
		cancel()
		if err != nil {
			failAll(batch, err)
			return
		}
	}
	items := make([]*item, 0, len(batch))
	prev, leaf := l.prev, l.size
	var failed error
	for _, p := range batch {
		it, err := l.build(p, leaf, prev)
		if err != nil { // cannot happen with records built by FromDecision
			p.done <- fmt.Errorf("audit: %w", err)
			continue
		}
		items = append(items, it)
		prev, leaf = it.hash, leaf+1
	}
	for _, it := range items {
		if failed != nil {
			it.err = failed
			continue
		}
		msg := &nats.Msg{Subject: it.subject, Data: it.data, Header: nats.Header{}}
		it.fut, it.err = l.js.PublishMsgAsync(msg, jetstream.WithMsgID(record.MsgID(l.id, it.leaf)), jetstream.WithExpectStream(subject.AuditStream))
		if it.err != nil {
			failed = it.err // keep order: nothing after a record that was not sent
		}
	}
	ok := true
	deadline := time.NewTimer(l.o.ackTimeout + time.Second)
	defer deadline.Stop()
	expired := false
	for _, it := range items {
		if it.fut != nil {
			expired = await(it, deadline.C, expired)
		}
		if it.err != nil {
			ok = false
		}
	}
	for _, it := range items {
		if ok && it.seq <= l.lastSeq {
			// Sequences never go back in a stream: this is another one.
			ok, it.err = false, fmt.Errorf("stored at sequence %d, before the log's last record (%d): the audit stream was replaced", it.seq, l.lastSeq)
		}
	}
	if ok {
		for _, it := range items {
			l.adopt(it.hash, it.seq)
		}
		l.publishStats()
		for _, it := range items {
			it.done <- nil
		}
		return
	}
	first := firstErr(items)
	l.log.Error("audit records not acknowledged: replies withheld; re-reading the log's tail", "records", len(items), "err", first)
	l.uncertain = items
	l.lastAttempt = time.Time{}
	for _, it := range items {
		it.done <- fmt.Errorf("%w: %w", ErrUnavailable, first)
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.o.ackTimeout)
	defer cancel()
	if err := l.recover(ctx); err != nil {
		l.log.Warn("the log's tail is not settled yet; appends fail until it is", "err", err)
	}
}

// await waits for one publish acknowledgement until the deadline; once the
// deadline has passed it only looks. It reports whether it has passed.
func await(it *item, deadline <-chan time.Time, expired bool) bool {
	settle := func(ack *jetstream.PubAck) {
		if ack.Duplicate {
			// Another record already holds this leaf: someone else appended
			// to this log, or a publish thought lost has landed late.
			it.err = errors.New("another record already holds this leaf")
			return
		}
		it.seq = ack.Sequence
	}
	timeout := errors.New("no acknowledgement before the deadline")
	if expired {
		select {
		case ack := <-it.fut.Ok():
			settle(ack)
		case err := <-it.fut.Err():
			it.err = err
		default:
			it.err = timeout
		}
		return true
	}
	select {
	case ack := <-it.fut.Ok():
		settle(ack)
	case err := <-it.fut.Err():
		it.err = err
	case <-deadline:
		it.err = timeout
		return true
	}
	return false
}

func (l *Log) build(p *pending, leaf uint64, prev []byte) (*item, error) {
	p.rec.LogId, p.rec.LeafIndex, p.rec.PrevLeafHash = l.id, leaf, prev
	data, err := record.Marshal(p.rec)
	if err != nil {
		return nil, err
	}
	subj, err := record.Subject(l.id, p.rec.GetCkey())
	if err != nil {
		return nil, err
	}
	return &item{pending: p, leaf: leaf, subject: subj, data: data, hash: tree.LeafHash(data), prev: prev}, nil
}

// adopt appends one stored leaf to the tail.
func (l *Log) adopt(hash []byte, seq uint64) {
	if err := l.all.Append(hash, nil); err != nil {
		panic(err) // a compact range only fails to append on misuse
	}
	if err := l.since.Append(hash, nil); err != nil {
		panic(err)
	}
	l.size++
	l.prev = hash
	l.lastSeq = max(l.lastSeq, seq)
	l.tailSeq = seq
}

// recover re-reads the log's records stored after the last adopted one and
// adopts those that continue the chain, refilling from memory a leaf that
// was lost while later ones were stored. It clears the uncertainty only when
// the stored tail is settled.
func (l *Log) recover(ctx context.Context) error {
	l.lastAttempt = time.Now()
	if err := l.checkStored(ctx); err != nil {
		return err
	}
	held := map[uint64]*item{}
	for _, it := range l.uncertain {
		held[it.leaf] = it
	}
	for range 3 {
		refilled, err := l.readTail(ctx, held)
		if err != nil {
			return err
		}
		if !refilled {
			if l.uncertain != nil {
				l.log.Info("the log's tail is settled; appending again", "size", l.size)
			}
			l.uncertain = nil
			l.publishStats()
			return nil
		}
	}
	return fmt.Errorf("%w: the tail kept changing while it was re-read", ErrUnavailable)
}

// readTail adopts the stored records after lastSeq. It reports whether it
// had to republish a held record to fill a gap (the caller then re-reads).
//
// A message on the log's subjects that is not a record of this log — it
// does not parse, names another log, or claims the next leaf without
// chaining to the tail — is logged at ERROR with its sequence and skipped:
// only the gateway writes there, so it was put there by someone else, and
// it must not stop the log (`jisr audit verify` names it too). A well-formed
// record of this log stored after a missing leaf is a gap, and is not
// skipped.
func (l *Log) readTail(ctx context.Context, held map[uint64]*item) (bool, error) {
	type stored struct {
		seq  uint64
		data []byte
		rec  *auditv1.Record
	}
	found := map[uint64][]stored{}
	err := stream.Scan(ctx, l.records, stream.ScanOptions{Filters: []string{record.LogFilter(l.id)}, StartSeq: l.lastSeq + 1}, func(m stream.Msg) error {
		rec, err := record.Parse(m.Data)
		switch {
		case err != nil:
			l.log.Error("a message on this log's audit subject is not a record: skipped (jisr audit verify names it)", "seq", m.Seq, "subject", m.Subject, "err", err)
			return nil
		case rec.GetLogId() != l.id:
			l.log.Error("a record of another log is stored on this log's audit subject: skipped (jisr audit verify names it)", "seq", m.Seq, "record_log", rec.GetLogId())
			return nil
		case rec.GetLeafIndex() < l.size:
			l.log.Warn("a second copy of an adopted leaf is stored (a retry outside the deduplication window)", "leaf", rec.GetLeafIndex(), "seq", m.Seq)
			return nil
		}
		found[rec.GetLeafIndex()] = append(found[rec.GetLeafIndex()], stored{seq: m.Seq, data: m.Data, rec: rec})
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("%w: re-reading the log: %w", ErrUnavailable, err)
	}
	adopted := 0
	for {
		cands, ok := found[l.size]
		if !ok {
			break
		}
		delete(found, l.size)
		// The record that chains to the tail; one this process holds first.
		var pick *stored
		for i := range cands {
			c := &cands[i]
			if !slices.Equal(c.rec.GetPrevLeafHash(), l.prev) {
				continue
			}
			if it, mine := held[l.size]; mine && slices.Equal(it.hash, tree.LeafHash(c.data)) || pick == nil {
				pick = c
			}
		}
		for i := range cands {
			if c := &cands[i]; c != pick {
				l.log.Error("a message claiming this log's next leaf is not its record (it does not chain, or another copy was adopted): skipped (jisr audit verify names it)",
					"leaf", l.size, "seq", c.seq)
			}
		}
		if pick == nil {
			break
		}
		h := tree.LeafHash(pick.data)
		if it, mine := held[l.size]; !mine || !slices.Equal(it.hash, h) {
			l.log.Error("adopted a record this process did not write: is another gateway running with the same --instance?", "leaf", l.size, "seq", pick.seq)
		}
		l.adopt(h, pick.seq)
		adopted++
	}
	if adopted > 0 {
		l.log.Info("adopted stored records", "count", adopted, "size", l.size)
	}
	if len(found) == 0 {
		return false, nil
	}
	// A gap: leaf l.size is missing while later ones are stored.
	it, ok := held[l.size]
	if !ok || !slices.Equal(it.prev, l.prev) {
		later := slices.Sorted(maps.Keys(found))
		return false, fmt.Errorf("%w: leaf %d is missing but leaf %d is stored (sequence %d)", ErrBroken, l.size, later[0], found[later[0]][0].seq)
	}
	ack, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: it.subject, Data: it.data, Header: nats.Header{}},
		jetstream.WithMsgID(record.MsgID(l.id, it.leaf)), jetstream.WithExpectStream(subject.AuditStream))
	if err != nil {
		return false, fmt.Errorf("%w: refilling leaf %d: %w", ErrUnavailable, it.leaf, err)
	}
	l.log.Warn("refilled a missing leaf from memory", "leaf", it.leaf, "seq", ack.Sequence, "duplicate", ack.Duplicate)
	return true, nil
}

// checkTrusted compares the resumed log with the checkpoint kept on disk
// (WithTrustedCheckpoint): the log must hold at least as many records, with
// the same root at that size. It returns the trusted size (0 without one).
func (l *Log) checkTrusted(ctx context.Context) (uint64, error) {
	path := l.o.trustedPath
	if path == "" {
		return 0, nil
	}
	c, _, err := checkpoint.ReadFile(path, note.VerifierList(l.key.Verifier))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if l.size > 0 {
			l.log.Warn("no trusted checkpoint on disk: trusting the stored log as it is (first start with this data directory?)", "file", path, "size", l.size)
		}
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("%w: log %s: the trusted checkpoint cannot be read: %w", ErrNotExtended, l.id, err)
	case c.Origin != l.origin:
		return 0, fmt.Errorf("%w: log %s: %s is a checkpoint of %q", ErrNotExtended, l.id, path, c.Origin)
	case c.Size == 0:
		return 0, nil
	}
	if l.size < c.Size {
		return 0, fmt.Errorf("%w: log %s: the trusted checkpoint (%s) covers %d records, the stored log holds %d: records %d to %d are missing",
			ErrNotExtended, l.id, path, c.Size, l.size, l.size, c.Size-1)
	}
	root, err := l.rootAt(ctx, c.Size)
	if err != nil {
		return 0, err
	}
	if !slices.Equal(root, c.Root) {
		return 0, fmt.Errorf("%w: log %s: the trusted checkpoint (%s) covers %d records, and the stored log of %d records has another root at that size: records before %d were replaced",
			ErrNotExtended, l.id, path, c.Size, l.size, c.Size)
	}
	l.log.Info("the stored log extends the trusted checkpoint", "trusted_size", c.Size, "size", l.size)
	return c.Size, nil
}

// rootAt returns the root of the log's first n leaves (n <= size): from the
// state in hand when n is the size of the last checkpoint or of the log, else
// recomputed from the stored records.
func (l *Log) rootAt(ctx context.Context, n uint64) ([]byte, error) {
	switch n {
	case l.ckptSize:
		return tree.Root(l.ckptRange)
	case l.size:
		return tree.Root(l.all)
	}
	r := tree.NewEmptyRange(0)
	var prev []byte
	byLeaf := map[uint64][][]byte{}
	err := stream.Scan(ctx, l.records, stream.ScanOptions{Filters: []string{record.LogFilter(l.id)}}, func(m stream.Msg) error {
		rec, err := record.Parse(m.Data)
		if err != nil || rec.GetLogId() != l.id || rec.GetLeafIndex() >= n {
			return nil
		}
		byLeaf[rec.GetLeafIndex()] = append(byLeaf[rec.GetLeafIndex()], m.Data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: re-reading the log: %w", ErrUnavailable, err)
	}
	for i := range n {
		var h []byte
		for _, data := range byLeaf[i] {
			if rec, _ := record.Parse(data); slices.Equal(rec.GetPrevLeafHash(), prev) {
				h = tree.LeafHash(data)
				break
			}
		}
		if h == nil {
			return nil, fmt.Errorf("%w: log %s: leaf %d, covered by the trusted checkpoint, is not stored", ErrNotExtended, l.id, i)
		}
		if err := r.Append(h, nil); err != nil {
			return nil, err
		}
		prev = h
	}
	return tree.Root(r)
}

// keepTrusted writes the last published checkpoint to the trusted file. A
// failure is logged: the checkpoint is published, and the next one retries.
func (l *Log) keepTrusted() {
	if l.o.trustedPath == "" || l.ckptSigned == "" {
		return
	}
	if err := checkpoint.WriteFile(l.o.trustedPath, l.ckptSigned); err != nil {
		l.log.Error("the trusted checkpoint could not be written to disk", "file", l.o.trustedPath, "size", l.ckptSize, "err", err)
	}
}

// checkStored checks that the stream still holds the log's last record:
// a log erased, or its stream replaced, behind this process is never
// continued (nor checkpointed). It latches ErrNotExtended in l.fatal.
func (l *Log) checkStored(ctx context.Context) error {
	if l.fatal != nil {
		return l.fatal
	}
	if l.size == 0 {
		return nil
	}
	m, err := l.records.GetMsg(ctx, l.tailSeq)
	var why string
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		why = "is no longer stored"
	case err != nil:
		return fmt.Errorf("%w: reading the log's last record: %w", ErrUnavailable, err)
	case !slices.Equal(tree.LeafHash(m.Data), l.prev):
		why = "is another message now"
	default:
		return nil
	}
	l.fatal = fmt.Errorf("%w: log %s: its last record (leaf %d, sequence %d) %s: the stored log was erased or replaced, and holds fewer than its %d records",
		ErrNotExtended, l.id, l.size-1, l.tailSeq, why, l.size)
	l.log.Error("the audit log was erased or replaced behind the gateway: no more records are appended, no reply is released (run jisr audit verify; a restart refuses too)", "err", l.fatal)
	return l.fatal
}

// checkpoint signs and publishes a checkpoint of the current tail.
func (l *Log) checkpoint(ctx context.Context) error {
	if l.fatal != nil {
		return l.fatal
	}
	if l.uncertain != nil {
		return fmt.Errorf("%w: no checkpoint while the tail is unsettled", ErrUnavailable)
	}
	if l.size > l.ckptSize {
		if err := l.checkStored(ctx); err != nil {
			return err
		}
	}
	if l.size == l.ckptSize && l.ckptSize > 0 {
		return nil
	}
	if l.size == 0 {
		return nil
	}
	root, err := tree.Root(l.all)
	if err != nil {
		return err
	}
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: l.origin, Size: l.size, Root: root}, l.key.Signer)
	if err != nil {
		return err
	}
	st := &auditv1.CheckpointState{
		Checkpoint:   signed,
		LogId:        l.id,
		CompactRange: l.all.Hashes(),
		LastSequence: l.tailSeq,
		LastLeafHash: l.prev,
	}
	if l.ckptSize > 0 {
		p, err := tree.ConsistencyFromRanges(l.ckptRange, l.since)
		if err != nil {
			return err
		}
		st.PreviousSize, st.ConsistencyProof = l.ckptSize, p
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return err
	}
	subj, err := record.CheckpointSubject(l.id)
	if err != nil {
		return err
	}
	if _, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}},
		jetstream.WithMsgID(fmt.Sprintf("%s:checkpoint:%d", l.id, l.size)), jetstream.WithExpectStream(subject.CheckpointStream)); err != nil {
		return fmt.Errorf("%w: publish checkpoint: %w", ErrUnavailable, err)
	}
	l.ckptSize, l.ckptRange, l.ckptSigned = l.size, tree.Clone(l.all), signed
	l.since = tree.NewEmptyRange(l.size)
	l.publishStats()
	l.keepTrusted()
	l.log.Debug("checkpoint published", "size", l.size)
	return nil
}

// resume loads the last checkpoint of the log (checking its signature, its
// compact range and the record it ends on) and adopts the records after it.
func (l *Log) resume(ctx context.Context) error {
	l.state = state{all: tree.NewEmptyRange(0), since: tree.NewEmptyRange(0), ckptRange: tree.NewEmptyRange(0)}
	subj, err := record.CheckpointSubject(l.id)
	if err != nil {
		return err
	}
	raw, err := l.ckpts.GetLastMsgForSubject(ctx, subj)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		l.log.Info("no checkpoint for this log yet: reading it from the start")
	case err != nil:
		return fmt.Errorf("%w: reading the last checkpoint: %w", ErrUnavailable, err)
	default:
		if err := l.loadCheckpoint(ctx, raw.Data); err != nil {
			return err
		}
	}
	l.uncertain = []*item{} // non-nil: recover runs even with nothing held
	if err := l.recover(ctx); err != nil {
		return err
	}
	return nil
}

func (l *Log) loadCheckpoint(ctx context.Context, data []byte) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: the last checkpoint of log %s: %s", ErrBroken, l.id, fmt.Sprintf(format, a...))
	}
	st := &auditv1.CheckpointState{}
	if err := proto.Unmarshal(data, st); err != nil {
		return bad("%v", err)
	}
	c, err := checkpoint.Open(st.GetCheckpoint(), note.VerifierList(l.key.Verifier))
	if err != nil {
		return bad("%v", err)
	}
	if c.Origin != l.origin {
		return bad("origin %q", c.Origin)
	}
	r, err := tree.NewRange(c.Size, st.GetCompactRange())
	if err != nil {
		return bad("compact range: %v", err)
	}
	root, err := tree.Root(r)
	if err != nil || !slices.Equal(root, c.Root) {
		return bad("its compact range does not hash to its signed root")
	}
	// The record it ends on must be stored and hash to last_leaf_hash.
	m, err := l.records.GetMsg(ctx, st.GetLastSequence())
	if err != nil {
		return bad("its last record (sequence %d) cannot be read: %v", st.GetLastSequence(), err)
	}
	rec, err := record.Parse(m.Data)
	if err != nil || rec.GetLogId() != l.id || rec.GetLeafIndex() != c.Size-1 || !slices.Equal(tree.LeafHash(m.Data), st.GetLastLeafHash()) {
		return bad("its last record (sequence %d) is not leaf %d as checkpointed", st.GetLastSequence(), c.Size-1)
	}
	l.size, l.prev, l.lastSeq, l.tailSeq, l.all = c.Size, st.GetLastLeafHash(), st.GetLastSequence(), st.GetLastSequence(), r
	l.ckptSize, l.ckptRange, l.ckptSigned = c.Size, tree.Clone(r), st.GetCheckpoint()
	l.since = tree.NewEmptyRange(c.Size)
	return nil
}

func (l *Log) publishStats() {
	l.stats.Lock()
	l.stats.size, l.stats.checkpoint = l.size, l.ckptSize
	l.stats.Unlock()
}

func failAll(batch []*pending, err error) {
	for _, p := range batch {
		p.done <- err
	}
}

func firstErr(items []*item) error {
	for _, it := range items {
		if it.err != nil {
			return it.err
		}
	}
	return nil
}
