package consent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
)

// ErrStateUnavailable: the replica's view of the consent state (the
// revocation watch, the usage bucket) is not known to be in step with the
// buckets. No token is accepted until it is.
var ErrStateUnavailable = errors.New("consent: the consent state is unavailable")

// The revocation watch is fail-closed: the store is Ready only while a
// monitor, every WatchEvery, has just confirmed that
//
//   - the revocation bucket's stream exists and is the one the watch reads
//     (a stream deleted and created again is re-read from scratch),
//   - the watch's consumer exists on the server,
//   - the watch has delivered every entry the server had delivered (or held)
//     one check earlier: a watch that stopped moving is noticed within two
//     intervals,
//   - the usage bucket's stream exists and is the one it was,
//
// and no consumer error (missed heartbeats, consumer deleted, JetStream
// gone) was reported since.
//
// The watch repairs itself: its consumer (replicated like the bucket, so
// that it outlives a node) is replaced by a new one, under a new name,
// resuming after the last entry applied, when it is gone, when it skipped
// an entry, or when the watch has not been in step for RepairAfter while
// the bucket answers. Every call to the server is bounded, and no lock is
// held across one: a node lost while it held the consumer (its peers still
// count it as online for minutes after a kill -9, and may place a new
// consumer there) costs one more replacement, never the watch. A revocation entry is never removed from the
// in-memory set: a delete or purge of a key (KV-Operation DEL/PURGE) is
// tampering — logged, counted, and the token stays revoked.

type watchState struct {
	mu       sync.Mutex
	err      error // why the store is not ready; nil = ready
	gen      int   // the current watch; a replaced one's messages are ignored
	cons     jetstream.ConsumeContext
	oc       jetstream.Consumer
	prefix   string    // this store's consumers' names begin with it
	name     string    // the current consumer's name
	consSeq  uint64    // the consumer sequence of its last message
	restart  bool      // the watch is broken (a gap, its consumer gone): replace it at the next check
	badSince time.Time // when the watch last stopped being in step (zero: in step)
	created  time.Time // the revocation stream the watch reads
	usage    time.Time // the usage stream seen at start
	synced   bool
	syncedCh chan struct{}
	wasReady bool   // it was ready once (so a return to readiness is news)
	target   uint64 // what the watch must have delivered by the next check
	firstSeq uint64 // the revocation stream's first sequence at the last check

	delivered atomic.Uint64 // stream sequence of the last entry applied
	tampered  atomic.Int64
}

const (
	kvOperation    = "KV-Operation"
	kvMarkerReason = "Nats-Marker-Reason"
)

// WatchRevocations keeps the in-memory revocation set in step with the
// bucket until ctx ends, and monitors the watch (see Ready). It returns once
// the existing revocations are loaded.
func (s *Store) WatchRevocations(ctx context.Context) error {
	if s.WatchEvery <= 0 {
		s.WatchEvery = time.Second
	}
	s.watch.mu.Lock()
	s.watch.err = fmt.Errorf("%w: revocations not loaded yet", ErrStateUnavailable)
	s.watch.mu.Unlock()
	us, err := s.js.Stream(ctx, subject.BucketStream(subject.UsageBucket))
	if err != nil {
		return fmt.Errorf("consent: bucket %s: %w", subject.UsageBucket, err)
	}
	s.watch.usage = us.CachedInfo().Created
	synced, err := s.startWatch(ctx, false)
	if err != nil {
		return err
	}
	select {
	case <-synced:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New("consent: revocations not loaded within 10s")
	}
	s.check(ctx)
	go s.monitor(ctx)
	return nil
}

// RepairAfter is how long the watch may be out of step, the bucket
// answering, before the monitor replaces its consumer.
const RepairAfter = 5 * time.Second

// consumerIdle is how long the server keeps a watch consumer nobody pulls
// from (one left behind by a replaced watch or a stopped gateway).
const consumerIdle = 2 * time.Minute

// startWatch starts the watch on a new consumer: from the bucket's first
// entry, or, when resume is set, after the last entry applied (a repair).
// It returns a channel closed once the entries stored when it began are
// applied.
func (s *Store) startWatch(ctx context.Context, resume bool) (<-chan struct{}, error) {
	w := &s.watch
	cctx, cancel := context.WithTimeout(ctx, max(s.WatchEvery, 5*time.Second))
	defer cancel()
	name := subject.BucketStream(subject.RevocationBucket)
	rs, err := s.js.Stream(cctx, name)
	if err != nil {
		return nil, fmt.Errorf("consent: bucket %s: %w", subject.RevocationBucket, err)
	}
	info := rs.CachedInfo()
	w.mu.Lock()
	if resume && !info.Created.Equal(w.created) { // replaced: inStep re-reads it from scratch
		w.mu.Unlock()
		return nil, fmt.Errorf("%w: revocation bucket replaced", ErrStateUnavailable)
	}
	if w.prefix == "" {
		w.prefix = "jisr_revocations_" + rand.Text()
	}
	w.gen++
	gen := w.gen
	from := w.delivered.Load() + 1
	if !resume {
		from = 1
	}
	w.mu.Unlock()
	cfg := jetstream.ConsumerConfig{
		Name:          fmt.Sprintf("%s_%d", w.prefix, gen),
		FilterSubject: subject.BucketKeys(subject.RevocationBucket),
		// Every entry, markers included: none may be missed.
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: consumerIdle,
		MemoryStorage:     true,
		// As many replicas as the bucket: the consumer outlives a node.
		Replicas: max(info.Config.Replicas, 1),
	}
	oc, err := rs.CreateConsumer(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("consent: watch %s: %w", subject.RevocationBucket, err)
	}
	w.mu.Lock()
	if gen != w.gen { // replaced meanwhile (another repair)
		w.mu.Unlock()
		go s.deleteConsumer(cfg.Name)
		return nil, fmt.Errorf("%w: revocation watch replaced while starting", ErrStateUnavailable)
	}
	old, oldName := w.cons, w.name
	w.cons, w.oc, w.name, w.consSeq, w.restart = nil, oc, cfg.Name, 0, false
	w.created, w.firstSeq = info.Created, info.State.FirstSeq
	if !resume {
		w.synced, w.target = false, 0
		w.syncedCh = make(chan struct{})
		w.delivered.Store(0)
	}
	synced := w.syncedCh
	if !w.synced && oc.CachedInfo().NumPending == 0 {
		w.synced = true
		close(synced)
	}
	w.mu.Unlock()
	if old != nil {
		old.Stop()
		go s.deleteConsumer(oldName)
	}
	cons, err := oc.Consume(func(m jetstream.Msg) { s.apply(gen, m) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			// Called under the consumer's lock: never wait for w.mu here.
			go s.consumeError(gen, err)
		}))
	if err != nil {
		go s.deleteConsumer(cfg.Name)
		return nil, fmt.Errorf("consent: watch %s: %w", subject.RevocationBucket, err)
	}
	w.mu.Lock()
	if gen != w.gen {
		w.mu.Unlock()
		cons.Stop()
		return synced, nil
	}
	w.cons = cons
	w.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-cons.Closed():
			return
		}
		cons.Stop()
		s.deleteConsumer(cfg.Name)
	}()
	return synced, nil
}

// deleteConsumer removes a replaced watch's consumer, best effort: the
// server removes one left behind after consumerIdle.
func (s *Store) deleteConsumer(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.js.DeleteConsumer(ctx, subject.BucketStream(subject.RevocationBucket), name)
}

// consumeError takes an error of the watch's consumer: the watch is not in
// step until the next check confirms it; a consumer gone is replaced.
func (s *Store) consumeError(gen int, err error) {
	s.notReady(gen, fmt.Errorf("%w: revocation watch: %w", ErrStateUnavailable, err))
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		w := &s.watch
		w.mu.Lock()
		if gen == w.gen {
			w.restart = true
		}
		w.mu.Unlock()
	}
}

// apply takes one entry of the revocation bucket. Any operation on a key
// means its token was revoked: a put is the revocation; a delete or purge
// is tampering, and revokes too.
func (s *Store) apply(gen int, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	w := &s.watch
	w.mu.Lock()
	if gen != w.gen || w.restart { // a replaced watch, or one about to be
		w.mu.Unlock()
		return
	}
	switch cs := meta.Sequence.Consumer; {
	case cs <= w.consSeq || meta.Sequence.Stream <= w.delivered.Load(): // delivered again (a new consumer leader)
		w.mu.Unlock()
		return
	case cs != w.consSeq+1: // an entry skipped: resume after the last one applied
		w.restart = true
		if w.err == nil {
			s.log.Error("consent state unavailable: tokens are refused until it is back", "err", "revocation watch skipped an entry; replacing it")
		}
		w.err = fmt.Errorf("%w: revocation watch skipped entries %d to %d; replacing it", ErrStateUnavailable, w.consSeq+1, cs-1)
		w.mu.Unlock()
		return
	}
	w.consSeq = meta.Sequence.Consumer
	jti := m.Subject()[len(subject.BucketKeyPrefix(subject.RevocationBucket)):]
	op := m.Headers().Get(kvOperation)
	if op == "" {
		switch m.Headers().Get(kvMarkerReason) {
		case "Purge":
			op = "PURGE"
		case "Remove":
			op = "DEL"
		}
	}
	if p, ok := strings.CutPrefix(jti, pausePrefix); ok {
		// A pause ("paused") or a resume ("active"), the latest wins. A
		// delete or purge of one is tampering: the token stays paused.
		s.mu.Lock()
		if s.paused == nil {
			s.paused = map[string]bool{}
		}
		s.paused[p] = op != "" || string(m.Data()) != activeValue
		s.mu.Unlock()
		if op != "" {
			s.tamper("a pause was deleted or purged from the bucket: the token stays paused", "operation", op, "jti", p, "seq", meta.Sequence.Stream)
		}
		w.delivered.Store(meta.Sequence.Stream)
		if !w.synced && meta.NumPending == 0 {
			w.synced = true
			close(w.syncedCh)
		}
		w.mu.Unlock()
		return
	}
	s.mu.Lock()
	_, known := s.revoked[jti]
	if !known {
		s.revoked[jti] = revocation{at: meta.Timestamp, rev: meta.Sequence.Stream}
	}
	s.mu.Unlock()
	if op != "" {
		s.tamper("a revocation was deleted or purged from the bucket: the token stays revoked", "operation", op, "jti", jti, "seq", meta.Sequence.Stream)
	}
	w.delivered.Store(meta.Sequence.Stream)
	if !w.synced && meta.NumPending == 0 {
		w.synced = true
		close(w.syncedCh)
	}
	live := w.synced
	w.mu.Unlock()
	if live && op == "" && !known && s.OnRevocation != nil {
		s.OnRevocation(time.Since(meta.Timestamp))
	}
}

func (s *Store) tamper(msg string, args ...any) {
	s.watch.tampered.Add(1)
	s.log.Error("TAMPERING with the consent state: "+msg, append([]any{"component", "consent"}, args...)...)
	if s.OnTampering != nil {
		s.OnTampering()
	}
}

// Tampered is the number of signs of tampering seen since start.
func (s *Store) Tampered() int64 { return s.watch.tampered.Load() }

func (s *Store) notReady(gen int, err error) {
	w := &s.watch
	w.mu.Lock()
	if gen == w.gen {
		if w.err == nil {
			s.log.Error("consent state unavailable: tokens are refused until it is back", "err", err)
		}
		w.err = err
	}
	w.mu.Unlock()
}

// Ready reports whether the revocation watch and the usage bucket are known
// to be in step with the bus (nil), or why not (ErrStateUnavailable).
func (s *Store) Ready() error {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	return s.watch.err
}

func (s *Store) monitor(ctx context.Context) {
	t := time.NewTicker(s.WatchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.check(ctx)
		}
	}
}

// check runs one round of the monitor and sets the readiness.
func (s *Store) check(ctx context.Context) {
	w := &s.watch
	w.mu.Lock()
	gen := w.gen
	w.mu.Unlock()
	err := s.inStep(ctx)
	w.mu.Lock()
	if err == nil && w.restart && gen == w.gen {
		err = fmt.Errorf("%w: the revocation watch is broken; replacing it", ErrStateUnavailable)
	}
	now := time.Now()
	if err == nil || gen != w.gen {
		w.badSince = time.Time{}
	} else if w.badSince.IsZero() {
		w.badSince = now
	}
	if err != nil && gen == w.gen && (w.restart || now.Sub(w.badSince) >= RepairAfter) {
		// Replace the consumer, resuming after the last entry applied; not
		// before another RepairAfter unless it breaks again.
		w.badSince = now
		w.mu.Unlock()
		s.log.Warn("consent state: replacing the revocation watch's consumer", "err", err)
		if _, rerr := s.startWatch(ctx, true); rerr != nil {
			s.log.Warn("consent state: the revocation watch's consumer could not be replaced yet", "err", rerr)
		}
		w.mu.Lock()
	}
	defer w.mu.Unlock()
	switch {
	case err != nil && w.err == nil:
		s.log.Error("consent state unavailable: tokens are refused until it is back", "err", err)
	case err != nil && err.Error() != w.err.Error():
		s.log.Warn("consent state still unavailable", "err", err)
	case err == nil && w.err != nil && gen == w.gen && w.wasReady:
		s.log.Info("consent state back in step: tokens are accepted again")
	}
	if err == nil && gen != w.gen {
		return
	}
	w.err = err
	w.wasReady = w.wasReady || err == nil
}

func (s *Store) inStep(ctx context.Context) error {
	w := &s.watch
	cctx, cancel := context.WithTimeout(ctx, max(s.WatchEvery, time.Second))
	defer cancel()
	unavailable := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrStateUnavailable, fmt.Sprintf(format, a...))
	}
	rs, err := s.js.Stream(cctx, subject.BucketStream(subject.RevocationBucket))
	if err != nil {
		return unavailable("revocation bucket: %v", err)
	}
	info := rs.CachedInfo()
	w.mu.Lock()
	created, synced, oc, target, firstSeq := w.created, w.synced, w.oc, w.target, w.firstSeq
	w.mu.Unlock()
	if !info.Created.Equal(created) {
		s.tamper("the revocation bucket was replaced (its stream deleted and created again): revocations already known stay revoked; re-reading it",
			"created", info.Created)
		if _, err := s.startWatch(ctx, false); err != nil {
			return unavailable("revocation bucket replaced, re-watching: %v", err)
		}
		return unavailable("revocation bucket replaced; re-reading it")
	}
	if info.State.FirstSeq > firstSeq {
		s.removed(firstSeq, info.State.FirstSeq, info.Config.MaxAge)
		w.mu.Lock()
		w.firstSeq = info.State.FirstSeq
		w.mu.Unlock()
	}
	ci, err := oc.Info(cctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			w.mu.Lock()
			if oc == w.oc {
				w.restart = true
			}
			w.mu.Unlock()
		}
		return unavailable("revocation watch consumer: %v", err)
	}
	if !synced {
		return unavailable("revocations not loaded yet")
	}
	if got := w.delivered.Load(); got < target {
		return unavailable("revocation watch stalled: it applied entries up to %d, the bucket held %d a check ago", got, target)
	}
	next := info.State.LastSeq
	if ci.NumPending == 0 || info.State.LastSeq < info.State.FirstSeq {
		next = ci.Delivered.Stream
	}
	w.mu.Lock()
	w.target = next
	w.mu.Unlock()

	us, err := s.js.Stream(cctx, subject.BucketStream(subject.UsageBucket))
	if err != nil {
		return unavailable("usage bucket: %v", err)
	}
	if c := us.CachedInfo().Created; !c.Equal(w.usage) {
		s.tamper("the usage bucket was replaced (its stream deleted and created again): use counters were reset", "created", c)
		w.usage = c
		return unavailable("usage bucket replaced")
	}
	return nil
}

// removed reports revocations that left the stream [from, to) before their
// age: purged or deleted without a marker. They stay revoked here.
func (s *Store) removed(from, to uint64, maxAge time.Duration) {
	cutoff := time.Now().Add(-maxAge + time.Minute)
	n := 0
	s.mu.RLock()
	for _, r := range s.revoked {
		if r.rev >= from && r.rev < to && (maxAge == 0 || r.at.After(cutoff)) {
			n++
		}
	}
	s.mu.RUnlock()
	if n > 0 {
		s.tamper("revocation entries were removed from the bucket's stream before their age (a purge): they stay revoked in this replica, but a replica started later will not know them",
			"entries", n, "first_seq", to)
	}
}

// Revoked reports whether jti is revoked.
func (s *Store) Revoked(jti string) bool {
	s.mu.RLock()
	_, ok := s.revoked[jti]
	s.mu.RUnlock()
	return ok
}

// Paused reports whether the citizen has paused jti (and not resumed it).
func (s *Store) Paused(jti string) bool {
	s.mu.RLock()
	p := s.paused[jti]
	s.mu.RUnlock()
	return p
}
