package index

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/tree"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Checkpoint is a log's checkpoint whose signature verified and whose root
// the index recomputed.
type Checkpoint struct {
	checkpoint.Checkpoint
	LogID  string
	Signed string // the signed note
}

// Index follows the audit streams and serves inclusion proofs.
type Index struct {
	store   *Store
	td      string
	keys    note.Verifiers
	records jetstream.Stream
	ckpts   jetstream.Stream
	log     *slog.Logger

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever latest changes
	latest  map[string]Checkpoint
	waiting map[string][]Checkpoint // verified signatures, sizes not yet indexed
	broken  map[string]error
	// Records stored ahead of a missing one, per log (a refilled leaf).
	ahead map[string]map[uint64]aheadLeaf
	next  []Leaf // add's leaves to append (the flusher's, under pmu)

	// Leaves waiting for the next write to the store: read from the stream,
	// or handed over in process by this gateway's own log (AddCommitted).
	pmu       sync.Mutex
	pend      map[string][]aheadLeaf
	pendCount int
	// pendStream counts the pending leaves read from the stream (others'
	// records), which are flushed sooner than this gateway's own.
	pendStream int
	lastFlush  time.Time
	pendSeq    uint64            // the stream position reached by the follower
	own        map[string]uint64 // per log: the leaves from here on are handed over in process
	// Per own log, by a batch's first leaf: the batches handed over that
	// the follower has not reached yet (it skips them), and those it read
	// from the stream before or without a handover (AddCommitted then
	// drops them). Each batch is thus indexed once, whichever comes first;
	// one never handed over — stored with its acknowledgement lost, then
	// adopted by the log (audit.Log's readTail), or refused past
	// ownPendingMax — is read from the stream.
	handed map[string]map[uint64]struct{}
	read   map[string]map[uint64]struct{}
	// Per own log: past the first leaf of the last batch AddCommitted was
	// told of (batches come in order: none before it will be).
	told map[string]uint64
	// Per own log: the batches the follower reached before their handover,
	// in stream order. The stream's delivery usually beats the
	// acknowledgement to the log's sequencer, so the follower waits for the
	// handover rather than parse the batch again: the handover of the
	// batch drops it, a later one (or a refused one) shows it will never
	// come, and deferMax ends the wait whatever happens.
	deferred map[string][]deferredBatch
	deferMax time.Duration // a field for the test
	toRead   []stream.Msg  // deferred batches to parse, found under hmu (drainLocked)
	// ownPendingMax bounds the own leaves handed over and not yet written
	// (OwnPendingMax; a field for the test).
	ownPendingMax int

	// AddCommitted runs on the audit log's sequencer, and pmu is held across
	// the store's I/O (a flush, which a locked or slow disk stretches to
	// seconds): it only queues each batch here, under hmu, and whoever
	// takes pmu next applies the queue first (drainLocked), so the state
	// under pmu is as if each batch had been applied when handed over.
	hmu         sync.Mutex
	inbox       []handover
	inboxLeaves int
	// ownHeld is how many own leaves the index holds in memory (pending
	// or held back), as of the last drain or flush: AddCommitted bounds
	// them with it without taking pmu.
	ownHeld atomic.Int64
}

// handover is one batch AddCommitted was told of; refused (past
// ownPendingMax) it carries no leaves and the follower reads it.
type handover struct {
	logID      string
	seq, first uint64
	leaves     []Leaf
	refused    bool
}

// OwnPendingMax is how many of the gateway's own leaves, handed over in
// process, the index holds in memory at most: the follower flushes them
// at ownFlushRecords, but a follower that is not running (its store or
// stream failing) flushes nothing. Past it a batch is not taken over: the
// follower reads it from the stream like another replica's, whenever it
// runs again.
const OwnPendingMax = 4 * ownFlushRecords

// Flushing the leaves to the store: those read from the stream (other
// replicas' records) in transactions of up to streamFlushRecords or every
// streamFlushEvery; this gateway's own, handed over in process, in larger
// ones — up to ownFlushRecords, or every ownFlushEvery — because a
// transaction's cost is mostly per page it changes, and the more records
// one holds, the more of them share a page of the citizens' table. The
// leaves waiting are listed by Citizen all the same; a proof of one waits
// for its flush (a checkpoint covers it 15 s later anyway).
const (
	streamFlushRecords = 512
	streamFlushEvery   = 200 * time.Millisecond
	ownFlushRecords    = 16384
	ownFlushEvery      = 5 * time.Second
)

// deferredBatch is an own batch the follower waits to be handed over.
type deferredBatch struct {
	first uint64
	m     stream.Msg
	at    time.Time
}

// deferMax is how long the follower waits for the handover of an own batch
// it reached first, before it reads the batch itself: longer than a commit
// takes from the stream's storing it to the sequencer's handing it over,
// however loaded the machine.
const deferMax = 2 * time.Second

type aheadLeaf struct {
	Leaf
	index uint64
}

// New returns an index over the two streams that trusts keys for the logs
// of trustDomain. Start it with Run.
func New(store *Store, records, checkpoints jetstream.Stream, trustDomain string, keys *checkpoint.Keys, log *slog.Logger) *Index {
	if log == nil {
		log = slog.Default()
	}
	return &Index{
		store: store, td: trustDomain, keys: keys.Verifiers(), records: records, ckpts: checkpoints,
		log:     log.With("component", "audit-index"),
		changed: make(chan struct{}), latest: map[string]Checkpoint{}, waiting: map[string][]Checkpoint{},
		broken: map[string]error{}, ahead: map[string]map[uint64]aheadLeaf{},
		pend: map[string][]aheadLeaf{}, own: map[string]uint64{},
		handed: map[string]map[uint64]struct{}{}, read: map[string]map[uint64]struct{}{}, told: map[string]uint64{}, ownPendingMax: OwnPendingMax,
		deferred: map[string][]deferredBatch{}, deferMax: deferMax,
	}
}

// Own declares that the records of log logID from leaf from on are handed
// over in process (AddCommitted, from audit.Log.OnCommit, which returns
// from): the follower of the stream skips that log's batches from there on
// that were handed over, without reading them back, and reads those that
// were not (see handed). Call it before the first AddCommitted.
func (ix *Index) Own(logID string, from uint64) {
	ix.pmu.Lock()
	defer ix.pmu.Unlock()
	ix.own[logID] = from
	ix.handed[logID] = map[uint64]struct{}{}
	ix.read[logID] = map[uint64]struct{}{}
	ix.told[logID] = from
}

// AddCommitted indexes records of this gateway's own log as it commits
// them: leaves first, first+1, … stored in the message at seq. It only
// queues them (no I/O, and it never waits for the store's): it runs on the
// log's sequencer.
func (ix *Index) AddCommitted(logID string, seq, first uint64, leaves []Leaf) {
	ix.hmu.Lock()
	defer ix.hmu.Unlock()
	refused := int(ix.ownHeld.Load())+ix.inboxLeaves+len(leaves) > ix.ownPendingMax
	if refused {
		ix.log.Warn("the audit index holds too many of this gateway's records unwritten: the follower reads this batch from the stream", "log", logID, "leaf", first)
		leaves = nil
		if n := len(ix.inbox); n > 0 && ix.inbox[n-1].refused && ix.inbox[n-1].logID == logID {
			// Batches come in order: the later one stands for both (see
			// addCommittedLocked).
			ix.inbox[n-1].seq, ix.inbox[n-1].first = seq, first
			return
		}
	}
	ix.inbox = append(ix.inbox, handover{logID: logID, seq: seq, first: first, leaves: leaves, refused: refused})
	ix.inboxLeaves += len(leaves)
}

// drainLocked applies the batches AddCommitted queued, in order (pmu held),
// then parses the deferred batches they showed will never be handed over:
// after hmu is released, so that the sequencer's AddCommitted never waits
// on a parse.
func (ix *Index) drainLocked() {
	ix.hmu.Lock()
	if len(ix.inbox) == 0 {
		ix.hmu.Unlock()
		return
	}
	for i := range ix.inbox {
		h := &ix.inbox[i]
		ix.addCommittedLocked(h.logID, h.seq, h.first, h.leaves, h.refused)
		ix.inbox[i] = handover{}
	}
	ix.inbox = ix.inbox[:0]
	ix.inboxLeaves = 0
	ix.hmu.Unlock()
	for i, m := range ix.toRead {
		ix.readLocked(m)
		ix.toRead[i] = stream.Msg{}
	}
	ix.toRead = ix.toRead[:0]
	ix.noteOwnLocked()
}

// noteOwnLocked records how many own leaves the index holds in memory:
// pending, and held back in ahead (pmu held).
func (ix *Index) noteOwnLocked() {
	n := ix.pendCount - ix.pendStream
	ix.mu.Lock()
	for id, held := range ix.ahead {
		if _, own := ix.own[id]; own {
			n += len(held)
		}
	}
	ix.mu.Unlock()
	ix.ownHeld.Store(int64(n))
}

// addCommittedLocked is AddCommitted's batch applied (pmu held); a refused
// one only moves told and the read set on.
func (ix *Index) addCommittedLocked(logID string, seq, first uint64, leaves []Leaf, refused bool) {
	from, own := ix.own[logID]
	if !own || first < from {
		return // not declared Own: the follower reads it
	}
	ix.told[logID] = first + 1
	waited := false
	if d := ix.deferred[logID]; len(d) > 0 {
		// Batches come in order: those the follower reached before this one
		// will never be handed over (stored, their acknowledgement lost, and
		// adopted by the log), so it reads them now; this one it drops,
		// unless it is refused.
		i := 0
		for ; i < len(d) && d[i].first <= first; i++ {
			if d[i].first == first && !refused {
				waited = true
				continue
			}
			ix.toRead = append(ix.toRead, d[i].m) // parsed once hmu is released (drainLocked)
		}
		clear(d[:i])
		ix.deferred[logID] = d[i:]
	}
	if read := ix.read[logID]; len(read) > 0 {
		_, ok := read[first]
		for f := range read {
			if f <= first { // read already; or before it, never handed over
				delete(read, f)
			}
		}
		if ok {
			return // the follower read it already
		}
	}
	if refused {
		return
	}
	if !waited { // the follower has not reached it yet: it skips it
		ix.handed[logID][first] = struct{}{}
	}
	for i, lf := range leaves {
		lf.Seq = seq
		ix.pend[logID] = append(ix.pend[logID], aheadLeaf{Leaf: lf, index: first + uint64(i)})
	}
	ix.pendCount += len(leaves)
}

// What the follower does with a message of the records' stream.
type disposal int

const (
	readIt  disposal = iota // parse it: another log's, or an own batch never handed over
	skipIt                  // an own batch handed over in process already
	deferIt                 // an own batch not handed over yet: wait for it
)

// ownLocked tells what the follower does with a message: a batch of a log
// declared Own, from the leaf on where its records are handed over in
// process (its headers say which leaves it holds), is skipped if handed
// over, else deferred until it is or is known never to be. pmu held, the
// handovers drained: a batch it reports readIt goes to pend before pmu is
// released, so that it is listed all along. A deferred batch is listed
// once handed over; one never handed over (stored, its acknowledgement
// lost: its queries were answered Unavailable) up to deferMax later.
func (ix *Index) ownLocked(m stream.Msg) disposal {
	id, _, batch, err := record.ParseStoredSubject(m.Subject)
	if err != nil || !batch {
		return readIt
	}
	first, err := strconv.ParseUint(m.Header.Get(record.HeaderFirstLeaf), 10, 64)
	if err != nil {
		return readIt
	}
	from, ok := ix.own[id]
	if !ok || first < from {
		return readIt
	}
	if _, ok := ix.handed[id][first]; ok {
		delete(ix.handed[id], first)
		return skipIt
	}
	if first < ix.told[id] { // a later batch was handed over: this one never will be
		return readIt
	}
	ix.deferred[id] = append(ix.deferred[id], deferredBatch{first: first, m: m, at: time.Now()})
	return deferIt
}

// readOverdueLocked reads the own batches the follower has waited for
// longer than deferMax (pmu held, the handovers drained): a later handover
// of one is dropped (see read).
func (ix *Index) readOverdueLocked(now time.Time) {
	for id, d := range ix.deferred {
		i := 0
		for ; i < len(d) && now.Sub(d[i].at) >= ix.deferMax; i++ {
			ix.read[id][d[i].first] = struct{}{}
			ix.readLocked(d[i].m)
		}
		clear(d[:i])
		ix.deferred[id] = d[i:]
	}
}

// readLocked parses the records of a message of the stream into pend (pmu
// held).
func (ix *Index) readLocked(m stream.Msg) {
	id, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data)
	n := 0
	for _, data := range recs {
		rec, perr := record.Parse(data)
		switch {
		case perr != nil:
			err = perr
		case rec.GetLogId() != id:
			ix.log.Error("a record is stored on another log's subject: run `jisr audit verify`", "seq", m.Seq)
		default:
			ix.pend[id] = append(ix.pend[id], aheadLeaf{Leaf: Leaf{Hash: tree.LeafHash(data), Prev: rec.GetPrevLeafHash(), Seq: m.Seq, CKey: rec.GetCkey()}, index: rec.GetLeafIndex()})
			n++
		}
	}
	if err != nil {
		ix.log.Error("a message of the audit stream is not a record: run `jisr audit verify`", "seq", m.Seq)
	}
	ix.pendCount += n
	ix.pendStream += n
}

// Run follows both streams until ctx ends, retrying after errors.
func (ix *Index) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { ix.loop(ctx, "records", ix.followRecords) })
	wg.Go(func() { ix.loop(ctx, "checkpoints", ix.followCheckpoints) })
	wg.Wait()
}

func (ix *Index) loop(ctx context.Context, what string, follow func(context.Context) error) {
	for ctx.Err() == nil {
		err := follow(ctx)
		if ctx.Err() != nil {
			return
		}
		ix.log.Warn("following the audit "+what+" stopped; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (ix *Index) followRecords(ctx context.Context) error {
	pos, err := ix.store.Position(ctx)
	if err != nil {
		return err
	}
	// A follower started again reads from the stored position, which no
	// batch it waited for was passed: it meets them again.
	ix.pmu.Lock()
	clear(ix.deferred)
	ix.pmu.Unlock()
	// Leaves are indexed in batches — one SQLite transaction for many
	// records (streamFlushRecords, ownFlushRecords) — so that indexing
	// stays cheap beside the gateway under load.
	// flushLocked writes the pending leaves — all of them, or (all false)
	// all but this gateway's own, which then keep the stream position from
	// passing them — and the position.
	flushLocked := func(all bool) error {
		ix.drainLocked()
		defer ix.noteOwnLocked()
		if all {
			ix.lastFlush = time.Now()
			defer ix.retryHeld(ctx) // a failed write's leaves wait for no new record
		}
		if ix.pendCount == 0 && ix.pendSeq == 0 {
			return nil
		}
		seq := ix.pendSeq
		for _, d := range ix.deferred { // waited for: not indexed yet
			if len(d) > 0 {
				seq = min(seq, d[0].m.Seq-1)
			}
		}
		for id, leaves := range ix.pend {
			if _, own := ix.own[id]; own && !all {
				for i := range leaves { // handed over, or read again after a restart: any order
					seq = min(seq, leaves[i].Seq-1)
				}
				continue
			}
			ix.add(ctx, id, leaves)
			ix.pendCount -= len(leaves)
			ix.pend[id] = leaves[:0] // the slice is reused; add keeps no reference to it
		}
		ix.pendStream = 0
		if seq == ix.pendSeq {
			ix.pendSeq = 0
		}
		if seq == 0 {
			return nil
		}
		return ix.store.SetPosition(ctx, ix.safePosition(seq))
	}
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTicker(streamFlushEvery)
		defer t.Stop()
		for {
			select {
			case <-tctx.Done():
				return
			case <-t.C:
				ix.pmu.Lock()
				ix.drainLocked()
				ix.readOverdueLocked(time.Now())
				var err error
				switch {
				case time.Since(ix.lastFlush) >= ownFlushEvery-streamFlushEvery/2:
					err = flushLocked(true)
				case ix.pendStream > 0:
					err = flushLocked(false)
				}
				if err != nil {
					ix.log.Warn("index position", "err", err)
				}
				ix.pmu.Unlock()
			}
		}
	}()
	return stream.Scan(ctx, ix.records, stream.ScanOptions{StartSeq: pos + 1, Follow: true}, func(m stream.Msg) error {
		ix.pmu.Lock()
		defer ix.pmu.Unlock()
		ix.drainLocked()
		ix.pendSeq = m.Seq
		switch ix.ownLocked(m) {
		case skipIt, deferIt:
			if ix.pendCount-ix.pendStream >= ownFlushRecords {
				return flushLocked(true)
			}
			return nil
		}
		ix.readLocked(m)
		switch {
		case ix.pendCount-ix.pendStream >= ownFlushRecords:
			return flushLocked(true)
		case ix.pendStream >= streamFlushRecords:
			return flushLocked(false)
		}
		return nil
	})
}

// hold keeps l back until the leaves before it are indexed.
func (ix *Index) hold(id string, l aheadLeaf) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	held := ix.ahead[id]
	if held == nil {
		held = map[uint64]aheadLeaf{}
		ix.ahead[id] = held
	}
	held[l.index] = l
}

// retryHeld indexes again what each log holds back that now continues it:
// the leaves of a write that failed, when no new record of their log comes
// to carry them (pmu held).
func (ix *Index) retryHeld(ctx context.Context) {
	ix.mu.Lock()
	var ids []string
	for id, held := range ix.ahead {
		if len(held) > 0 {
			ids = append(ids, id)
		}
	}
	ix.mu.Unlock()
	for _, id := range ids {
		ix.add(ctx, id, nil)
	}
}

// safePosition is the sequence the next start may resume after: not past a
// record held back waiting for a missing one.
func (ix *Index) safePosition(seq uint64) uint64 {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, held := range ix.ahead {
		for _, a := range held {
			seq = min(seq, a.Seq-1)
		}
	}
	return seq
}

// add indexes the leaves of one log that continue it, holding back those
// that arrive ahead of a missing one.
func (ix *Index) add(ctx context.Context, id string, leaves []aheadLeaf) {
	ix.mu.Lock()
	if ix.broken[id] != nil {
		ix.mu.Unlock()
		return
	}
	held := ix.ahead[id]
	ix.mu.Unlock()

	size, _, err := ix.store.Size(ctx, id)
	if err != nil {
		ix.log.Error("index", "log", id, "err", err)
		for _, l := range leaves { // kept for the next flush
			ix.hold(id, l)
		}
		return
	}
	next := ix.next[:0]
	if len(held) == 0 {
		// The usual case: nothing held back, and the leaves continue the
		// log in order (after those already indexed, on a re-read).
		i := 0
		for i < len(leaves) && leaves[i].index < size {
			i++
		}
		for j := i; j < len(leaves) && leaves[j].index == size+uint64(j-i); j++ {
			next = append(next, leaves[j].Leaf)
		}
		if len(next) != len(leaves)-i { // a gap, or out of order: hold them all back
			next = next[:0]
			for _, l := range leaves[i:] {
				ix.hold(id, l)
			}
		}
	} else {
		for _, l := range leaves {
			ix.hold(id, l)
		}
	}
	ix.mu.Lock()
	held = ix.ahead[id]
	for i := range held {
		if i < size {
			delete(held, i) // already indexed (a re-read after a restart)
		}
	}
	for len(held) > 0 {
		l, ok := held[size+uint64(len(next))]
		if !ok {
			break
		}
		next = append(next, l.Leaf)
		delete(held, l.index)
	}
	ix.mu.Unlock()
	ix.next = next[:0]
	if len(next) == 0 {
		return
	}
	if err := ix.store.Append(ctx, id, next); err != nil {
		ix.mu.Lock()
		if errors.Is(err, ErrBroken) {
			ix.broken[id] = err
			ix.log.Error("the stored audit log does not chain: no proofs for it; run `jisr audit verify`", "log", id, "err", err)
		}
		ix.mu.Unlock()
		if !errors.Is(err, ErrBroken) {
			ix.log.Error("index", "log", id, "err", err)
			// Held back again, for the next flush: the position does not
			// pass them (safePosition), and Citizen lists the own ones.
			for i, lf := range next {
				ix.hold(id, aheadLeaf{Leaf: lf, index: size + uint64(i)})
			}
		}
		return
	}
	ix.settle(ctx, id)
}

func (ix *Index) followCheckpoints(ctx context.Context) error {
	// The latest checkpoint of every log known so far, then every new one.
	info, err := ix.ckpts.Info(ctx)
	if err != nil {
		return err
	}
	known, err := ix.store.Logs(ctx)
	if err != nil {
		return err
	}
	for _, id := range known {
		subj, err := record.CheckpointSubject(id)
		if err != nil {
			continue
		}
		m, err := ix.ckpts.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		ix.addCheckpoint(ctx, m.Subject, m.Data)
	}
	start := uint64(1)
	if len(known) > 0 {
		start = info.State.LastSeq + 1
	}
	return stream.Scan(ctx, ix.ckpts, stream.ScanOptions{StartSeq: start, Follow: true}, func(m stream.Msg) error {
		ix.addCheckpoint(ctx, m.Subject, m.Data)
		return nil
	})
}

func (ix *Index) addCheckpoint(ctx context.Context, subj string, data []byte) {
	id, err := record.ParseCheckpointSubject(subj)
	if err != nil {
		return
	}
	st := &auditv1.CheckpointState{}
	if err := proto.Unmarshal(data, st); err != nil {
		ix.log.Error("a message of the checkpoint stream is not a checkpoint", "log", id)
		return
	}
	c, err := checkpoint.Open(st.GetCheckpoint(), ix.keys)
	if err != nil || c.Origin != checkpoint.Origin(ix.td, id) {
		ix.log.Warn("checkpoint not verified: unknown key or bad signature", "log", id, "err", err)
		return
	}
	ix.mu.Lock()
	if cur, ok := ix.latest[id]; ok && cur.Size >= c.Size {
		ix.mu.Unlock()
		return
	}
	ix.waiting[id] = append(ix.waiting[id], Checkpoint{Checkpoint: c, LogID: id, Signed: st.GetCheckpoint()})
	ix.mu.Unlock()
	ix.settle(ctx, id)
}

// settle promotes the waiting checkpoints of a log that the index has caught
// up with, once their roots match.
func (ix *Index) settle(ctx context.Context, id string) {
	size, _, err := ix.store.Size(ctx, id)
	if err != nil {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var keep []Checkpoint
	for _, c := range ix.waiting[id] {
		if c.Size > size {
			keep = append(keep, c)
			continue
		}
		if cur, ok := ix.latest[id]; ok && cur.Size >= c.Size {
			continue
		}
		root, err := ix.store.Root(ctx, id, c.Size)
		if err != nil {
			keep = append(keep, c)
			continue
		}
		if string(root) != string(c.Root) {
			ix.broken[id] = fmt.Errorf("the records of log %s do not hash to its signed checkpoint of size %d", id, c.Size)
			ix.log.Error("the stored audit log does not match its signed checkpoint: no proofs for it; run `jisr audit verify`", "log", id, "size", c.Size)
			continue
		}
		ix.latest[id] = c
		close(ix.changed)
		ix.changed = make(chan struct{})
	}
	ix.waiting[id] = keep
}

// Latest returns the latest verified checkpoint of a log.
func (ix *Index) Latest(id string) (Checkpoint, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	c, ok := ix.latest[id]
	return c, ok && ix.broken[id] == nil
}

// Logs returns the ids of the logs with a verified checkpoint.
func (ix *Index) Logs() []string {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return slices.Sorted(maps.Keys(ix.latest))
}

// WaitFor blocks until a log has a verified checkpoint of at least size.
func (ix *Index) WaitFor(ctx context.Context, id string, size uint64) (Checkpoint, error) {
	for {
		ix.mu.Lock()
		c, ok := ix.latest[id]
		ch := ix.changed
		ix.mu.Unlock()
		if ok && c.Size >= size {
			return c, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Checkpoint{}, fmt.Errorf("%w: log %s at size %d: %w", ErrNotIndexed, id, size, ctx.Err())
		}
	}
}

// Proof proves that the record with leafHash is leaf index of log id,
// against the log's latest verified checkpoint.
func (ix *Index) Proof(ctx context.Context, id string, index uint64, leafHash []byte) (*auditv1.InclusionProof, error) {
	ix.mu.Lock()
	c, ok := ix.latest[id]
	broken := ix.broken[id]
	ix.mu.Unlock()
	switch {
	case broken != nil:
		return nil, fmt.Errorf("%w: %w", ErrBroken, broken)
	case !ok || index >= c.Size:
		return nil, fmt.Errorf("%w: no checkpoint of log %s covers record %d yet", ErrNotIndexed, id, index)
	}
	hashes, err := ix.store.InclusionProof(ctx, id, index, c.Size, leafHash, c.Root)
	if err != nil {
		return nil, err
	}
	return &auditv1.InclusionProof{LogId: id, LeafIndex: index, TreeSize: c.Size, Hashes: hashes, Checkpoint: c.Signed}, nil
}

// Citizen lists where the indexed records about the citizen ckey are
// stored, and those of this gateway's own log it has committed but not yet
// written to the store, by log and leaf.
func (ix *Index) Citizen(ctx context.Context, ckey string) ([]Access, error) {
	ix.pmu.Lock()
	ix.drainLocked()
	var pending []Access
	// This gateway's own leaves held back (behind a batch not read yet, or
	// after a write of the store that failed) are committed all the same.
	ix.mu.Lock()
	for id, held := range ix.ahead {
		from, own := ix.own[id]
		if !own {
			continue
		}
		for _, l := range held {
			if l.CKey == ckey && l.index >= from {
				pending = append(pending, Access{Log: id, Leaf: l.index, Seq: l.Seq})
			}
		}
	}
	ix.mu.Unlock()
	for id, leaves := range ix.pend {
		from, own := ix.own[id]
		if !own {
			continue // others' records, read from the stream: listed once they chain (streamFlushEvery)
		}
		for i := range leaves {
			if leaves[i].CKey == ckey && leaves[i].index >= from { // this gateway committed them
				pending = append(pending, Access{Log: id, Leaf: leaves[i].index, Seq: leaves[i].Seq})
			}
		}
	}
	ix.pmu.Unlock()
	stored, err := ix.store.Citizen(ctx, ckey)
	if err != nil || len(pending) == 0 {
		return stored, err
	}
	type key struct {
		log  string
		leaf uint64
	}
	seen := make(map[key]bool, len(stored))
	for _, a := range stored {
		seen[key{a.Log, a.Leaf}] = true
	}
	for _, a := range pending {
		if !seen[key{a.Log, a.Leaf}] { // a leaf read again after a restart is in both
			seen[key{a.Log, a.Leaf}] = true
			stored = append(stored, a)
		}
	}
	slices.SortFunc(stored, func(a, b Access) int {
		if c := strings.Compare(a.Log, b.Log); c != 0 {
			return c
		}
		return cmp.Compare(a.Leaf, b.Leaf)
	})
	return stored, nil
}
