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
// Group commit (record format 2): one goroutine (the sequencer) takes every
// Append waiting, numbers and chains them, and publishes them as ONE
// JetStream message (a RecordBatch on jisr.audit.<log>._batch, first leaf
// and count in its headers, deduplicated by its first leaf), then waits for
// that one acknowledgement: concurrent queries share one message, one round
// trip and one write. The costly part of a record's encoding runs in Append,
// on the caller's goroutine; the sequencer only adds the chaining fields and
// hashes. The disk is synced by JetStream's sync_interval, not per record
// (see docs/audit.md).
package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/encoding/protowire"
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
	ackAttempt      time.Duration
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

// WithAckAttempt bounds the wait for one publish's acknowledgement
// (default 500ms) before the batch is published again under the same
// Nats-Msg-Id, within WithAckTimeout's window. An acknowledgement lost with
// a stream leader (a node killed) or a connection is then made good as soon
// as a new leader or connection is there, not after the whole window:
// JetStream's de-duplication stores the batch once however often it is sent.
func WithAckAttempt(d time.Duration) Option { return func(o *options) { o.ackAttempt = d } }

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
	regRq  chan onCommitRq

	// Owned by the sequencer goroutine (and by Open before it starts).
	state
	// uncertain holds the records of a group commit that failed part-way:
	// some may be stored. Until the tail is re-read, nothing else is appended.
	uncertain   []*chunk
	lastAttempt time.Time
	// resuming: Open is reading the records stored after the last
	// checkpoint, which this instance's previous run wrote.
	resuming bool
	// fatal: the stored log was erased or replaced while this process
	// wrote it (ErrNotExtended); nothing more is appended.
	fatal error

	stats struct {
		sync.Mutex
		size, checkpoint uint64
	}
	// maxBytes bounds one batch message's payload (the server's max_payload,
	// less room for headers).
	maxBytes  int
	committed atomic.Pointer[func(Committed)]
	buf       []byte // the sequencer's reusable encoding buffer
}

// Committed is one group commit of the log, acknowledged by JetStream: the
// records of leaves First, First+1, … stored in the message at Seq. The
// gateway indexes its own records from it, in process (OnCommit).
type Committed struct {
	LogID  string
	Seq    uint64
	First  uint64
	Leaves []CommittedLeaf
}

// CommittedLeaf is one record of a Committed batch.
type CommittedLeaf struct {
	Hash, Prev []byte // its leaf hash and the one before
	CKey       string // the citizen it is about ("" for none)
	// Record is the record as stored (record.Parse reads it): a slice of
	// the batch's message, shared, never to be modified.
	Record []byte
}

// OnCommit calls fn, on the sequencer's goroutine, with every batch
// acknowledged from now on, before the replies waiting on it are released:
// fn must be quick (hand the batch over, no I/O). It returns the first leaf
// fn will be told of: every leaf from there on is, every leaf before is not.
// One function at a time; nil stops the calls.
func (l *Log) OnCommit(fn func(Committed)) uint64 {
	var p *func(Committed)
	if fn != nil {
		p = &fn
	}
	rq := onCommitRq{fn: p, from: make(chan uint64, 1)}
	select {
	case l.regRq <- rq: // the sequencer swaps it between two commits
		return <-rq.from
	case <-l.done:
		l.committed.Store(p)
		return l.size
	}
}

type onCommitRq struct {
	fn   *func(Committed)
	from chan uint64
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

	// fence is the stream sequence of the last message on the log's batch
	// subject that this writer has seen (0: none). A group commit's first
	// batch is stored only if it still is the last (Nats-Expected-Last-
	// Subject-Sequence): a second writer of the log — a stale lease holder
	// of the consent log, a gateway started twice with one --instance — is
	// refused even past the deduplication window, where the batch's
	// Nats-Msg-Id no longer is, instead of storing a second copy of a leaf.
	fence uint64
}

type pending struct {
	body []byte // record.MarshalBody of the record
	ckey string
	done chan error
}

var pendingPool = sync.Pool{New: func() any { return &pending{done: make(chan error, 1)} }}

// item is one record of a batch.
type item struct {
	p      *pending // nil once answered
	ckey   string
	leaf   uint64
	off, n int    // where its bytes are in the chunk's payload
	data   []byte // the record's stored bytes (inside its chunk's payload)
	hash   []byte
	prev   []byte
}

// chunk is one message of the audit stream: consecutive records.
type chunk struct {
	items []item
	first uint64
	msg   *nats.Msg
	fut   jetstream.PubAckFuture
	seq   uint64
	err   error
	// fenced: published only if the batch subject's last message is fence.
	fenced bool
	fence  uint64
}

// newMsg is a message of its own for one publish of c. The client writes
// a publish's headers into its message (Nats-Msg-Id, the expectations),
// and publishes an asynchronous one again by itself, after a while, when
// JetStream answered that nobody responds: were the same message handed
// to a republish meanwhile, the two would write and read its header map at
// once (a data race, and a fatal concurrent map access).
func (c *chunk) newMsg() *nats.Msg {
	h := make(nats.Header, len(c.msg.Header)+3)
	for k, v := range c.msg.Header {
		h[k] = v // c.msg's values are never written: each publish Sets its own slices
	}
	return &nats.Msg{Subject: c.msg.Subject, Data: c.msg.Data, Header: h}
}

// pubOpts are the options of c's publish.
func (l *Log) pubOpts(c *chunk) []jetstream.PublishOpt {
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(record.BatchMsgID(l.id, c.first)), jetstream.WithExpectStream(subject.AuditStream)}
	if c.fenced {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(c.fence))
	}
	return opts
}

func (c *chunk) prev() []byte { return c.items[0].prev }

// Open validates cfg and opens the log of instance cfg.LogID on the
// gateway's connection: it opens the streams (never creating one), resumes
// the log from its last checkpoint and the records after it, and starts the
// sequencer.
func Open(ctx context.Context, cfg Config, opts ...Option) (*Log, error) {
	nc, trustDomain, logID, key := cfg.Conn, cfg.TrustDomain, cfg.LogID, cfg.Key
	o := options{
		log: slog.Default(), checkpointEvery: 15 * time.Second, maxBatch: 1024,
		ackTimeout: 5 * time.Second, ackAttempt: 500 * time.Millisecond, queue: 16384, retryEvery: 250 * time.Millisecond,
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
	case o.checkpointEvery <= 0 || o.maxBatch <= 0 || o.ackTimeout <= 0 || o.ackAttempt <= 0 || o.queue <= 0 || o.retryEvery <= 0:
		return nil, fmt.Errorf("%w: intervals, sizes and timeouts must be positive", ErrConfig)
	case o.maxBatch > record.MaxBatchRecords:
		return nil, fmt.Errorf("%w: a batch holds at most %d records", ErrConfig, record.MaxBatchRecords)
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
		id: logID, origin: origin, key: key, o: o, maxBytes: max(int(nc.MaxPayload())-8<<10, 64<<10),
		log:   o.log.With("component", "audit", "log", logID),
		js:    js,
		queue: make(chan *pending, o.queue), done: make(chan struct{}),
		ckptRq: make(chan chan error), regRq: make(chan onCommitRq),
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
	if d.CKey != "" && subject.CheckToken(d.CKey) != nil {
		return fmt.Errorf("audit: %w: bad ckey", record.ErrBadSubject)
	}
	// The body is encoded into the pooled pending's buffer of a record
	// before: the sequencer copies it into its batch, and is done with it
	// once it has answered.
	p := pendingPool.Get().(*pending)
	body, err := record.AppendBody(p.body[:0], d)
	if err != nil {
		pendingPool.Put(p)
		return fmt.Errorf("audit: %w", err)
	}
	p.body, p.ckey = body, d.CKey
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
		p.ckey = ""
		if cap(p.body) > 4<<10 {
			p.body = nil // a record with many fields: not kept for every other
		}
		pendingPool.Put(p) // answered: the sequencer holds it no more
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
		case rq := <-l.regRq:
			l.committed.Store(rq.fn)
			rq.from <- l.size
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

// commit appends what the sequencer took: number and chain the records, pack
// them into as few messages as the payload limit allows (one, unless the
// batch is huge), publish those pipelined, wait for every acknowledgement,
// then advance the tail — or, on any failure, fail the whole batch and leave
// the log uncertain until its tail is re-read.
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
	chunks := l.pack(batch)
	var failed error
	// The first batch is fenced on the last one this writer saw; the
	// following ones, pipelined, cannot be (their predecessor's sequence is
	// not known yet): a second writer racing in between is refused by
	// their Nats-Msg-Id, which it cannot have let expire.
	chunks[0].fenced, chunks[0].fence = true, l.fence
	for _, c := range chunks {
		if failed != nil {
			c.err = failed
			continue
		}
		c.fut, c.err = l.js.PublishMsgAsync(c.newMsg(), l.pubOpts(c)...)
		if c.err != nil {
			failed = c.err // keep order: nothing after a batch that was not sent
		}
	}
	ok := true
	// One attempt's wait, then the unacknowledged chunks are published again
	// (retry) under their Nats-Msg-Id for the rest of the window.
	deadline := time.NewTimer(min(l.o.ackAttempt, l.o.ackTimeout+time.Second))
	defer deadline.Stop()
	expired := false
	for _, c := range chunks {
		if c.fut != nil {
			expired = await(c, deadline.C, expired)
		}
		if c.err != nil {
			ok = false
		}
	}
	if !ok {
		// A connection closed under the publish (an SVID's expiry, a
		// reconnection) or a stream leader changed: the same messages again,
		// under the same Nats-Msg-Id, once the connection is back.
		ok = l.retry(chunks)
	}
	for _, c := range chunks {
		if ok && c.seq <= l.lastSeq {
			// Sequences never go back in a stream: this is another one.
			ok, c.err = false, fmt.Errorf("stored at sequence %d, before the log's last record (%d): the audit stream was replaced", c.seq, l.lastSeq)
		}
	}
	if ok {
		l.fence = chunks[len(chunks)-1].seq
		fn := l.committed.Load()
		for _, c := range chunks {
			var leaves []CommittedLeaf
			if fn != nil {
				leaves = make([]CommittedLeaf, len(c.items))
			}
			for i := range c.items {
				it := &c.items[i]
				l.adopt(it.hash, c.seq)
				if fn != nil {
					leaves[i] = CommittedLeaf{Hash: it.hash, Prev: it.prev, CKey: it.ckey, Record: it.data}
				}
			}
			if fn != nil {
				(*fn)(Committed{LogID: l.id, Seq: c.seq, First: c.first, Leaves: leaves})
			}
		}
		l.publishStats()
		for _, c := range chunks {
			for i := range c.items {
				c.items[i].p.done <- nil
			}
		}
		return
	}
	first := firstErr(chunks)
	l.log.Error("audit records not acknowledged: replies withheld; re-reading the log's tail", "records", len(batch), "err", first)
	l.uncertain = chunks
	l.lastAttempt = time.Time{}
	for _, c := range chunks {
		for i := range c.items {
			c.items[i].p.done <- fmt.Errorf("%w: %w", ErrUnavailable, first)
			c.items[i].p = nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.o.ackTimeout)
	defer cancel()
	if err := l.recover(ctx); err != nil {
		l.log.Warn("the log's tail is not settled yet; appends fail until it is", "err", err)
	}
}

// retry republishes, in order, the chunks of a group commit that were not
// acknowledged, each under its own Nats-Msg-Id, until every one is or the
// retry window (the acknowledgement timeout) ends. JetStream's
// de-duplication stores a chunk at most once: an acknowledgement marked
// duplicate names the sequence of the copy already stored (the first
// publish landed, its acknowledgement was lost), which is adopted only if it
// is this chunk byte for byte. It reports whether every chunk is stored; the
// chunks' errors are those of the last attempt otherwise.
func (l *Log) retry(chunks []*chunk) bool {
	ctx, cancel := context.WithTimeout(context.Background(), l.o.ackTimeout)
	defer cancel()
	first := firstErr(chunks)
	start := time.Now()
	attempts := 0
	for _, c := range chunks {
		if c.err == nil {
			continue
		}
		wait := 50 * time.Millisecond
		for {
			// The first publish's acknowledgement, come late, settles it.
			if c.fut != nil && lateAck(c) {
				break
			}
			attempts++
			c.err = l.republish(ctx, c)
			if c.err == nil || errors.Is(c.err, errNotOurs) {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
				wait = min(2*wait, 250*time.Millisecond)
				continue
			}
			break
		}
		if c.err != nil {
			l.log.Warn("audit records not acknowledged after retrying", "first", c.first, "attempts", attempts, "err", c.err)
			return false
		}
	}
	l.log.Info("audit records acknowledged on a retry", "records", countItems(chunks), "attempts", attempts, "after", time.Since(start).Round(time.Millisecond), "first_err", first)
	return true
}

var errNotOurs = errors.New("another batch already holds this leaf")

// wrongLast reports whether err is JetStream's refusal of a publish whose
// expected last sequence on its subject is not the last.
func wrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// republish publishes c once more under its Nats-Msg-Id and settles it.
func (l *Log) republish(ctx context.Context, c *chunk) error {
	actx, cancel := context.WithTimeout(ctx, l.o.ackAttempt)
	defer cancel()
	ack, err := l.js.PublishMsg(actx, c.newMsg(), l.pubOpts(c)...)
	if wrongLast(err) {
		// The batch subject moved past the fence: another writer's batch,
		// or this very one, stored by a publish whose acknowledgement was
		// lost (a single server checks the fence before the Nats-Msg-Id).
		m, gerr := l.records.GetLastMsgForSubject(actx, c.msg.Subject)
		if gerr != nil {
			return gerr
		}
		if m.Header.Get(nats.MsgIdHdr) != record.BatchMsgID(l.id, c.first) || !bytes.Equal(m.Data, c.msg.Data) {
			return errNotOurs
		}
		c.seq = m.Sequence
		return nil
	}
	if err != nil {
		return err
	}
	if ack.Duplicate {
		m, err := l.records.GetMsg(actx, ack.Sequence)
		if err != nil {
			return err
		}
		if m.Subject != c.msg.Subject || !bytes.Equal(m.Data, c.msg.Data) {
			return errNotOurs
		}
	}
	c.seq = ack.Sequence
	return nil
}

func countItems(chunks []*chunk) int {
	n := 0
	for _, c := range chunks {
		n += len(c.items)
	}
	return n
}

// pack numbers and chains the records of batch from the tail on and encodes
// them into batch messages of at most maxBatch records and maxBytes bytes.
func (l *Log) pack(batch []*pending) []*chunk {
	subj, _ := record.BatchSubject(l.id) // the id was checked by Open
	prev, leaf := l.prev, l.size
	var chunks []*chunk
	var cur *chunk
	buf := l.buf[:0]
	seal := func() {
		if cur == nil {
			return
		}
		data := slices.Clone(buf) // kept by the message while it may be republished
		for i := range cur.items {
			it := &cur.items[i]
			it.data = data[it.off : it.off+it.n]
			head := record.AppendChained(it.data[:0], l.id, it.leaf, prev, nil)
			if len(head) != it.n-len(it.p.body) {
				panic("audit: chained record size mismatch") // ChainedSize and AppendChained disagree
			}
			it.hash = tree.LeafHash(it.data)
			it.prev = prev
			prev = it.hash
		}
		cur.msg = &nats.Msg{Subject: subj, Data: data, Header: nats.Header{
			record.HeaderFormat:    {strconv.Itoa(record.Format)},
			record.HeaderFirstLeaf: {strconv.FormatUint(cur.first, 10)},
			record.HeaderCount:     {strconv.Itoa(len(cur.items))},
		}}
		chunks = append(chunks, cur)
		cur, buf = nil, buf[:0]
	}
	for _, p := range batch {
		// A record's size is known now (a previous hash is 32 bytes, none
		// before leaf 0); its head is written when its chunk is sealed.
		var prevLen []byte
		if leaf > 0 {
			prevLen = zeroHash[:]
		}
		n := record.ChainedSize(l.id, leaf, prevLen, len(p.body))
		if cur != nil && (len(cur.items) >= l.o.maxBatch || len(buf)+record.BatchOverhead(n)+n > l.maxBytes) {
			seal()
		}
		if cur == nil {
			cur = &chunk{first: leaf, items: make([]item, 0, min(len(batch), l.o.maxBatch))}
		}
		buf = protowire.AppendTag(buf, 1, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(n))
		cur.items = append(cur.items, item{p: p, ckey: p.ckey, leaf: leaf, off: len(buf), n: n})
		buf = append(buf, zeroHead[:n-len(p.body)]...)
		buf = append(buf, p.body...)
		leaf++
	}
	seal()
	l.buf = buf[:0]
	return chunks
}

var (
	zeroHash [32]byte
	zeroHead [256]byte // room for a chaining head: log id (≤ 128), leaf, hash
)

// await waits for one publish acknowledgement until the deadline; once the
// deadline has passed it only looks. It reports whether it has passed.
func await(c *chunk, deadline <-chan time.Time, expired bool) bool {
	settle := func(ack *jetstream.PubAck) {
		if ack.Duplicate {
			// Another batch already starts at this leaf: someone else
			// appended to this log, or a publish thought lost has landed late.
			c.err = errNotOurs
			return
		}
		c.seq = ack.Sequence
	}
	timeout := errors.New("no acknowledgement before the deadline")
	if expired {
		select {
		case ack := <-c.fut.Ok():
			settle(ack)
		case err := <-c.fut.Err():
			c.err = err
		default:
			c.err = timeout
		}
		return true
	}
	select {
	case ack := <-c.fut.Ok():
		settle(ack)
	case err := <-c.fut.Err():
		c.err = err
	case <-deadline:
		c.err = timeout
		return true
	}
	return false
}

// lateAck reports whether c's first publish has been acknowledged since
// the wait for it ended, and settles c if so.
func lateAck(c *chunk) bool {
	select {
	case ack := <-c.fut.Ok():
		if ack.Duplicate {
			return false // republish: it checks the stored copy
		}
		c.seq, c.err = ack.Sequence, nil
		return true
	default:
		return false
	}
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
	held := map[uint64]*chunk{}
	for _, c := range l.uncertain {
		held[c.first] = c
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
// had to republish a held batch to fill a gap (the caller then re-reads).
//
// A message on the log's subjects that is not a record of this log — it
// does not parse, names another log, or claims the next leaf without
// chaining to the tail — is logged at ERROR with its sequence and skipped:
// only the gateway writes there, so it was put there by someone else, and
// it must not stop the log (`jisr audit verify` names it too). A well-formed
// record of this log stored after a missing leaf is a gap, and is not
// skipped.
func (l *Log) readTail(ctx context.Context, held map[uint64]*chunk) (bool, error) {
	type stored struct {
		seq  uint64
		data []byte
		rec  *auditv1.Record
	}
	found := map[uint64][]stored{}
	batchSubj, _ := record.BatchSubject(l.id)
	err := stream.Scan(ctx, l.records, stream.ScanOptions{Filters: []string{record.LogFilter(l.id)}, StartSeq: l.lastSeq + 1}, func(m stream.Msg) error {
		if m.Subject == batchSubj {
			l.fence = max(l.fence, m.Seq) // what is skipped too: it is there
		}
		_, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data)
		if err != nil {
			l.log.Error("a message on this log's audit subject is not a record: skipped (jisr audit verify names it)", "seq", m.Seq, "subject", m.Subject, "err", err)
			return nil
		}
		for _, data := range recs {
			rec, err := record.Parse(data)
			switch {
			case err != nil:
				l.log.Error("a message on this log's audit subject is not a record: skipped (jisr audit verify names it)", "seq", m.Seq, "subject", m.Subject, "err", err)
				continue
			case rec.GetLogId() != l.id:
				l.log.Error("a record of another log is stored on this log's audit subject: skipped (jisr audit verify names it)", "seq", m.Seq, "record_log", rec.GetLogId())
				continue
			case rec.GetLeafIndex() < l.size:
				l.log.Warn("a second copy of an adopted leaf is stored (a retry outside the deduplication window)", "leaf", rec.GetLeafIndex(), "seq", m.Seq)
				continue
			}
			found[rec.GetLeafIndex()] = append(found[rec.GetLeafIndex()], stored{seq: m.Seq, data: data, rec: rec})
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("%w: re-reading the log: %w", ErrUnavailable, err)
	}
	mine := map[uint64][]byte{} // the leaf hashes this process wrote
	for _, c := range held {
		for i := range c.items {
			mine[c.items[i].leaf] = c.items[i].hash
		}
	}
	adopted, foreign := 0, 0
	var foreignFirst, foreignSeq uint64
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
			if h, ok := mine[l.size]; ok && slices.Equal(h, tree.LeafHash(c.data)) || pick == nil {
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
		if m, ok := mine[l.size]; !ok || !slices.Equal(m, h) {
			if foreign == 0 {
				foreignFirst, foreignSeq = l.size, pick.seq
			}
			foreign++
		}
		l.adopt(h, pick.seq)
		adopted++
	}
	switch {
	case foreign > 0 && l.resuming:
		// The records after the last checkpoint: this instance's previous
		// run wrote them (it stopped, or was killed, before checkpointing).
		l.log.Info("resumed the records written after the last checkpoint by this instance's previous run",
			"count", foreign, "first_leaf", foreignFirst, "last_leaf", l.size-1, "size", l.size)
	case foreign > 0:
		// While this process appends, only it writes this log.
		l.log.Error("adopted records this process did not write while it was appending: is another gateway running with the same --instance?",
			"count", foreign, "first_leaf", foreignFirst, "last_leaf", foreignFirst+uint64(foreign)-1, "seq", foreignSeq)
	case adopted > 0:
		l.log.Info("adopted stored records", "count", adopted, "size", l.size)
	}
	if len(found) == 0 {
		return false, nil
	}
	// A gap: leaf l.size is missing while later ones are stored.
	c, ok := held[l.size]
	if !ok || !slices.Equal(c.prev(), l.prev) {
		later := slices.Sorted(maps.Keys(found))
		return false, fmt.Errorf("%w: leaf %d is missing but leaf %d is stored (sequence %d)", ErrBroken, l.size, later[0], found[later[0]][0].seq)
	}
	ack, err := l.js.PublishMsg(ctx, c.newMsg(), jetstream.WithMsgID(record.BatchMsgID(l.id, c.first)), jetstream.WithExpectStream(subject.AuditStream))
	if err != nil {
		return false, fmt.Errorf("%w: refilling leaves %d to %d: %w", ErrUnavailable, c.first, c.first+uint64(len(c.items))-1, err)
	}
	l.log.Warn("refilled missing leaves from memory", "first", c.first, "count", len(c.items), "seq", ack.Sequence, "duplicate", ack.Duplicate)
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
		_, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data)
		if err != nil {
			return nil
		}
		for _, data := range recs {
			rec, err := record.Parse(data)
			if err != nil || rec.GetLogId() != l.id || rec.GetLeafIndex() >= n {
				continue
			}
			byLeaf[rec.GetLeafIndex()] = append(byLeaf[rec.GetLeafIndex()], data)
		}
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
	case !holdsLeaf(m, l.prev):
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
	l.uncertain = []*chunk{} // non-nil: recover runs even with nothing held
	l.resuming = true
	defer func() { l.resuming = false }()
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
	if !l.holdsRecord(m, c.Size-1, st.GetLastLeafHash()) {
		return bad("its last record (sequence %d) is not leaf %d as checkpointed", st.GetLastSequence(), c.Size-1)
	}
	l.size, l.prev, l.lastSeq, l.tailSeq, l.all = c.Size, st.GetLastLeafHash(), st.GetLastSequence(), st.GetLastSequence(), r
	if batchSubj, _ := record.BatchSubject(l.id); m.Subject == batchSubj {
		l.fence = m.Sequence
	}
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

func firstErr(chunks []*chunk) error {
	for _, c := range chunks {
		if c.err != nil {
			return c.err
		}
	}
	return nil
}

// holdsLeaf reports whether a stored message holds a record whose leaf hash is h.
func holdsLeaf(m *jetstream.RawStreamMsg, h []byte) bool {
	_, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data)
	if err != nil {
		return false
	}
	for _, data := range recs {
		if slices.Equal(tree.LeafHash(data), h) {
			return true
		}
	}
	return false
}

// holdsRecord reports whether a stored message holds this log's record of
// leaf, with leaf hash h.
func (l *Log) holdsRecord(m *jetstream.RawStreamMsg, leaf uint64, h []byte) bool {
	_, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data)
	if err != nil {
		return false
	}
	for _, data := range recs {
		if !slices.Equal(tree.LeafHash(data), h) {
			continue
		}
		rec, err := record.Parse(data)
		return err == nil && rec.GetLogId() == l.id && rec.GetLeafIndex() == leaf
	}
	return false
}
