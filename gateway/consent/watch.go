package consent

import (
	"context"
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
// gone) was reported since. A revocation entry is never removed from the
// in-memory set: a delete or purge of a key (KV-Operation DEL/PURGE) is
// tampering — logged, counted, and the token stays revoked.

type watchState struct {
	mu       sync.Mutex
	err      error // why the store is not ready; nil = ready
	gen      int   // the current watch; a replaced one's messages are ignored
	cons     jetstream.ConsumeContext
	oc       jetstream.Consumer
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
	synced, err := s.startWatch(ctx)
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

// startWatch (re)starts the watch from the bucket's first entries. It
// returns a channel closed once the entries stored when it began are applied.
func (s *Store) startWatch(ctx context.Context) (<-chan struct{}, error) {
	w := &s.watch
	name := subject.BucketStream(subject.RevocationBucket)
	rs, err := s.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("consent: bucket %s: %w", subject.RevocationBucket, err)
	}
	oc, err := rs.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject.BucketKeys(subject.RevocationBucket)},
		DeliverPolicy:  jetstream.DeliverAllPolicy, // every entry, markers included: none may be missed
	})
	if err != nil {
		return nil, fmt.Errorf("consent: watch %s: %w", subject.RevocationBucket, err)
	}
	w.mu.Lock()
	if old := w.cons; old != nil {
		w.cons = nil
		defer old.Stop() // outside w.mu: its handlers take w.mu
	}
	w.gen++
	gen := w.gen
	w.oc, w.created, w.synced, w.target = oc, rs.CachedInfo().Created, false, 0
	w.firstSeq = rs.CachedInfo().State.FirstSeq
	w.syncedCh = make(chan struct{})
	synced := w.syncedCh
	w.delivered.Store(0)
	if oc.CachedInfo().NumPending == 0 {
		w.synced = true
		close(synced)
	}
	w.mu.Unlock()
	cons, err := oc.Consume(func(m jetstream.Msg) { s.apply(gen, m) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			// Called under the consumer's lock: never wait for w.mu here.
			go s.notReady(gen, fmt.Errorf("%w: revocation watch: %w", ErrStateUnavailable, err))
		}))
	if err != nil {
		return nil, fmt.Errorf("consent: watch %s: %w", subject.RevocationBucket, err)
	}
	w.mu.Lock()
	w.cons = cons
	w.mu.Unlock()
	go func() {
		<-ctx.Done()
		cons.Stop()
	}()
	return synced, nil
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
	if gen != w.gen { // a replaced watch
		w.mu.Unlock()
		return
	}
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
	defer w.mu.Unlock()
	switch {
	case err != nil && w.err == nil:
		s.log.Error("consent state unavailable: tokens are refused until it is back", "err", err)
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
		if _, err := s.startWatch(ctx); err != nil {
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
