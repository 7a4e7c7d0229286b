// Package verify recomputes the audit logs from what is stored and checks
// them against their signed checkpoints: every record parses and sits on the
// subject it claims, every leaf of every log is present once and chains to
// the one before, every checkpoint is signed by its log's trusted key, the
// checkpoints of a log are consistent with each other (RFC 6962 consistency
// proofs), and the tree recomputed from the stored records has, at each
// checkpoint's size, exactly the signed root.
//
// Invariant: the verifier trusts only the keys it is given. It never takes a
// key, a root or a hash from the streams it checks without checking it
// against a signature made with one of those keys; what no signature covers
// (the records after a log's last checkpoint) is reported as such.
//
// It is fed messages (AddCheckpoint for the checkpoint stream, then
// AddRecord in stream order for the audit stream) and does not read NATS
// itself, so the same code checks a live stream and an export file.
package verify

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/tree"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Kind classifies a problem.
type Kind string

// Kinds of problems. All of them fail verification.
const (
	// BadRecord: a stored message is not a valid record.
	BadRecord Kind = "bad-record"
	// Misfiled: a record sits on a subject that names another log or citizen.
	Misfiled Kind = "misfiled"
	// Missing: a leaf of a log is not stored (deleted, or lost).
	Missing Kind = "missing"
	// Altered: a record's bytes differ from what the log committed to.
	Altered Kind = "altered"
	// Conflict: two different records claim the same leaf.
	Conflict Kind = "conflict"
	// BadCheckpoint: a checkpoint is malformed, forged, or its stored state
	// does not match its signed root.
	BadCheckpoint Kind = "bad-checkpoint"
	// Inconsistent: two checkpoints of a log cannot both be true (a fork, a
	// shrinking log, or a consistency proof that fails).
	Inconsistent Kind = "inconsistent"
	// Untrusted: no trusted key for a log, so nothing about it can be proven.
	Untrusted Kind = "untrusted"
	// NotExtended: the log no longer extends a checkpoint seen before (one
	// given to Trust: the gateway's own, or one an auditor verified earlier):
	// it was truncated, replaced or forked.
	NotExtended Kind = "not-extended"
	// NotARecord: a message on a log's audit subject that is not a record of
	// the log (it does not parse, or names another log), stored besides the
	// log's records. It is reported in Report.Foreign and changes nothing in
	// the log; only the gateway may publish there, so someone else did.
	NotARecord Kind = "not-a-record"
)

// Problem is one finding.
type Problem struct {
	Kind Kind
	Log  string
	// Leaf is the leaf index concerned, when HasLeaf.
	Leaf    uint64
	HasLeaf bool
	// Seq is the stream sequence of the message concerned (0 if none), in
	// Stream (the audit or the checkpoint stream).
	Seq    uint64
	Stream string
	Detail string
}

func (p Problem) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: log %s", p.Kind, p.Log)
	if p.HasLeaf {
		fmt.Fprintf(&b, ", record %d", p.Leaf)
	}
	if p.Seq > 0 {
		fmt.Fprintf(&b, " (%s sequence %d)", p.Stream, p.Seq)
	}
	b.WriteString(": ")
	b.WriteString(p.Detail)
	return b.String()
}

// LogReport summarises one log.
type LogReport struct {
	ID string
	// Records is the number of leaves verified in order from the start.
	Records uint64
	// Checkpoints verified (signature, consistency, recomputed root), and the
	// largest verified checkpoint's size and root.
	Checkpoints    int
	CheckpointSize uint64
	Root           []byte
	// Uncovered is the number of records after the last checkpoint: their
	// chain is checked, but no signature covers them yet.
	Uncovered uint64
	// Duplicates are identical second copies of a leaf (harmless: a retried
	// publish outside the deduplication window).
	Duplicates int
	// FirstBad is the first bad record of the log, if any.
	FirstBad *Problem
	// Checkpoint is the signed note of the largest verified checkpoint
	// (what an auditor keeps, to check next time that the log extends it).
	Checkpoint string
	// Foreign counts the messages on the log's subjects that are not its
	// records (Report.Foreign names them).
	Foreign int
}

// Report is the outcome of a verification.
type Report struct {
	Logs     []*LogReport
	Problems []Problem
	// Foreign are the messages that are not records of any log (NotARecord),
	// by sequence: reported, but not a problem of the logs themselves.
	Foreign []Problem
	// Records and CheckpointMsgs count the messages read.
	Records, CheckpointMsgs uint64
}

// OK reports whether nothing is wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Config holds what New requires.
type Config struct {
	// TrustDomain is the federation's trust domain: the logs checked are
	// its gateways'.
	TrustDomain string
	// Keys are the gateways' checkpoint keys the verifier trusts.
	Keys *checkpoint.Keys
}

type options struct {
	maxPending int
}

// Option configures New with an optional setting.
type Option func(*options)

// WithMaxOutOfOrder bounds how many records of one log may be stored ahead of
// a missing one before that one is declared missing (default 100000).
func WithMaxOutOfOrder(n int) Option { return func(o *options) { o.maxPending = n } }

// ErrConfig reports a missing or bad Config field; the message names it.
var ErrConfig = errors.New("verify: invalid configuration")

// Verifier checks the audit logs of one trust domain.
type Verifier struct {
	td         string
	keys       note.Verifiers
	trusted    map[string]bool // origins with a trusted key
	maxPending int
	logs       map[string]*logState
	sealed     bool
	report     Report
}

// New validates cfg and returns a verifier that trusts cfg.Keys for the
// logs of cfg.TrustDomain.
func New(cfg Config, opts ...Option) (*Verifier, error) {
	switch {
	case cfg.TrustDomain == "":
		return nil, fmt.Errorf("%w: TrustDomain is required", ErrConfig)
	case cfg.Keys == nil:
		return nil, fmt.Errorf("%w: Keys is required", ErrConfig)
	}
	o := options{maxPending: 100000}
	for _, opt := range opts {
		opt(&o)
	}
	v := &Verifier{td: cfg.TrustDomain, keys: cfg.Keys.Verifiers(), trusted: map[string]bool{}, maxPending: o.maxPending, logs: map[string]*logState{}}
	for _, n := range cfg.Keys.Names() {
		v.trusted[n] = true
	}
	return v, nil
}

type signedCheckpoint struct {
	seq   uint64
	c     checkpoint.Checkpoint
	state *auditv1.CheckpointState
}

type pendingLeaf struct {
	seq  uint64
	data []byte
	rec  *auditv1.Record
}

type logState struct {
	id      string
	rep     LogReport
	ckpts   []signedCheckpoint // in publish order
	bySize  []signedCheckpoint // verified, distinct sizes, ascending
	next    int                // index in bySize of the next checkpoint to reach
	r       *compact.Range
	prev    []byte
	hashes  []byte // every leaf hash, 32 bytes each, for duplicate checks
	pending map[uint64]pendingLeaf
	// lastSeq is the sequence of the last leaf processed.
	lastSeq uint64
	// A broken link waits for the next leaf to say which record is bad.
	suspect *suspectLink
	// A root mismatch at a checkpoint waits for a broken link to name the record.
	mismatch *rootMismatch
	// failed: a bad record is named; deeper checks stop for this log.
	failed bool
	sealed bool
	// junk holds messages that are not records, by the leaf that was
	// expected when they came (noLeaf when none was): a junk message where a
	// leaf then turns out missing took that leaf's place (BadRecord); one
	// followed by the leaf is foreign (NotARecord).
	junk map[uint64][]junkMsg
	// trusted are checkpoints given to Trust, by size.
	trusted []trustedCheckpoint
}

type junkMsg struct {
	seq    uint64
	detail string
}

type trustedCheckpoint struct {
	c      checkpoint.Checkpoint
	source string
}

const noLeaf = ^uint64(0)

type suspectLink struct {
	leaf         uint64 // link leaf-1 → leaf is broken
	seq, prevSeq uint64 // sequences of leaf and leaf-1
}

type rootMismatch struct {
	from, to uint64 // leaves [from, to) contain the alteration
	seq      uint64 // of the checkpoint
	lastSeq  uint64 // of leaf to-1
}

func (v *Verifier) log(id string) *logState {
	l, ok := v.logs[id]
	if !ok {
		l = &logState{id: id, rep: LogReport{ID: id}, r: tree.NewEmptyRange(0), pending: map[uint64]pendingLeaf{}, junk: map[uint64][]junkMsg{}}
		v.logs[id] = l
	}
	return l
}

func (v *Verifier) problem(l *logState, p Problem) {
	p.Log = l.id
	v.report.Problems = append(v.report.Problems, p)
	if l.rep.FirstBad == nil && p.HasLeaf && p.Kind != Inconsistent && p.Kind != BadCheckpoint && p.Kind != Untrusted {
		c := p
		l.rep.FirstBad = &c
		l.failed = true
	}
}

// AddCheckpoint feeds one message of the checkpoint stream. Feed all of them
// before the first record.
func (v *Verifier) AddCheckpoint(seq uint64, subj string, data []byte) {
	v.report.CheckpointMsgs++
	id, err := record.ParseCheckpointSubject(subj)
	if err != nil {
		v.report.Problems = append(v.report.Problems, Problem{Kind: BadCheckpoint, Log: "?", Seq: seq, Stream: "checkpoints", Detail: fmt.Sprintf("subject %q is not a checkpoint subject", subj)})
		return
	}
	l := v.log(id)
	bad := func(kind Kind, format string, a ...any) {
		v.problem(l, Problem{Kind: kind, Seq: seq, Stream: "checkpoints", Detail: fmt.Sprintf(format, a...)})
	}
	st := &auditv1.CheckpointState{}
	if err := proto.Unmarshal(data, st); err != nil {
		bad(BadCheckpoint, "not a checkpoint message: %v", err)
		return
	}
	origin := checkpoint.Origin(v.td, id)
	if !v.trusted[origin] {
		return // reported once per log by seal
	}
	c, err := checkpoint.Open(st.GetCheckpoint(), v.keys)
	if err != nil {
		bad(BadCheckpoint, "%v", err)
		return
	}
	if c.Origin != origin || st.GetLogId() != id {
		bad(BadCheckpoint, "a checkpoint of %q (log id %q) on the subject of log %s", c.Origin, st.GetLogId(), id)
		return
	}
	r, err := tree.NewRange(c.Size, st.GetCompactRange())
	if err == nil {
		var root []byte
		if root, err = tree.Root(r); err == nil && !bytes.Equal(root, c.Root) {
			err = fmt.Errorf("its compact range hashes to another root")
		}
	}
	if err != nil {
		bad(BadCheckpoint, "checkpoint of size %d: stored state does not match the signed root: %v", c.Size, err)
		return
	}
	l.ckpts = append(l.ckpts, signedCheckpoint{seq: seq, c: c, state: st})
}

// seal checks the checkpoints of every log against each other, once all
// are in.
func (v *Verifier) seal() {
	if v.sealed {
		return
	}
	v.sealed = true
	for _, l := range v.logs {
		v.sealLog(l)
	}
}

func (v *Verifier) sealLog(l *logState) {
	l.sealed = true
	origin := checkpoint.Origin(v.td, l.id)
	if !v.trusted[origin] {
		v.problem(l, Problem{Kind: Untrusted, Detail: fmt.Sprintf("no trusted key named %q: pass the log's public key", origin)})
		return
	}
	bySize := map[uint64]signedCheckpoint{}
	var last *signedCheckpoint
	for i := range l.ckpts {
		c := &l.ckpts[i]
		if last != nil && c.c.Size < last.c.Size {
			v.problem(l, Problem{Kind: Inconsistent, Seq: c.seq, Stream: "checkpoints",
				Detail: fmt.Sprintf("checkpoint of size %d published after one of size %d: the log shrank", c.c.Size, last.c.Size)})
		}
		if o, seen := bySize[c.c.Size]; seen {
			if !bytes.Equal(o.c.Root, c.c.Root) {
				v.problem(l, Problem{Kind: Inconsistent, Seq: c.seq, Stream: "checkpoints",
					Detail: fmt.Sprintf("two signed checkpoints of size %d with different roots (sequences %d and %d): a fork", c.c.Size, o.seq, c.seq)})
			}
		} else {
			bySize[c.c.Size] = *c
		}
		if ps := c.state.GetPreviousSize(); ps > 0 {
			prev, ok := bySize[ps]
			switch {
			case !ok:
				// The previous checkpoint expired or is missing; the recomputed
				// roots still prove both.
			case tree.VerifyConsistency(ps, c.c.Size, c.state.GetConsistencyProof(), prev.c.Root, c.c.Root) != nil:
				v.problem(l, Problem{Kind: Inconsistent, Seq: c.seq, Stream: "checkpoints",
					Detail: fmt.Sprintf("the consistency proof from size %d to %d does not verify", ps, c.c.Size)})
			}
		}
		last = c
	}
	l.bySize = slices.SortedFunc(maps.Values(bySize), func(a, b signedCheckpoint) int { return cmp.Compare(a.c.Size, b.c.Size) })
	for len(l.bySize) > 0 && l.bySize[0].c.Size == 0 {
		l.bySize = l.bySize[1:]
	}
}

// AddMessage feeds one message of the audit stream, in stream order: a
// batch (record format 2) is fed record by record, a message of format 1 is
// one record.
func (v *Verifier) AddMessage(seq uint64, subj string, header map[string][]string, data []byte) {
	_, _, batch, recs, err := record.Stored(subj, header, data)
	if !batch || err != nil {
		// Not a batch, or a message on a batch subject that is not one:
		// AddRecord reports it as what it is.
		v.AddRecord(seq, subj, data)
		return
	}
	for _, r := range recs {
		v.AddRecord(seq, subj, r)
	}
}

// AddRecord feeds one record of the audit stream, in stream order, with the
// sequence and subject of the message that holds it: one of a batch
// (format 2, its subject jisr.audit.<log>._batch), or a message of its own
// on the citizen's subject (format 1).
func (v *Verifier) AddRecord(seq uint64, subj string, data []byte) {
	v.seal()
	v.report.Records++
	id, ck, batch, err := record.ParseStoredSubject(subj)
	if err != nil {
		v.report.Problems = append(v.report.Problems, Problem{Kind: Misfiled, Log: "?", Seq: seq, Stream: "audit", Detail: fmt.Sprintf("subject %q is not an audit subject", subj)})
		return
	}
	l := v.log(id)
	if !l.sealed {
		v.sealLog(l) // a log with records and no checkpoint at all
	}
	rec, err := record.Parse(data)
	if err == nil && rec.GetLogId() != id {
		err = fmt.Errorf("a record of log %q", rec.GetLogId())
	}
	if err != nil {
		at := noLeaf
		if len(l.pending) == 0 && !l.failed {
			at = l.rep.Records
		}
		l.junk[at] = append(l.junk[at], junkMsg{seq: seq, detail: fmt.Sprintf("not a record of the log (%v)", err)})
		return
	}
	leaf := rec.GetLeafIndex()
	if !batch && rec.GetCkey() != ck {
		v.problem(l, Problem{Kind: Misfiled, Leaf: leaf, HasLeaf: true, Seq: seq, Stream: "audit",
			Detail: fmt.Sprintf("record of log %q about citizen key %q stored on subject %s", rec.GetLogId(), rec.GetCkey(), subj)})
		return
	}
	h := tree.LeafHash(data)
	switch {
	case leaf < l.rep.Records:
		if bytes.Equal(h, l.hashes[leaf*32:leaf*32+32]) {
			l.rep.Duplicates++
			return
		}
		v.problem(l, Problem{Kind: Conflict, Leaf: leaf, HasLeaf: true, Seq: seq, Stream: "audit",
			Detail: "a second, different record for a leaf already in the log"})
		return
	case leaf > l.rep.Records:
		if p, dup := l.pending[leaf]; dup {
			if !bytes.Equal(tree.LeafHash(p.data), h) {
				v.problem(l, Problem{Kind: Conflict, Leaf: leaf, HasLeaf: true, Seq: seq, Stream: "audit", Detail: "two different records for the same leaf"})
			} else {
				l.rep.Duplicates++
			}
			return
		}
		l.pending[leaf] = pendingLeaf{seq: seq, data: data, rec: rec}
		if len(l.pending) > v.maxPending {
			v.declareMissing(l)
		}
		return
	}
	v.leaf(l, seq, data, h, rec)
	v.drain(l)
}

func (v *Verifier) drain(l *logState) {
	for {
		p, ok := l.pending[l.rep.Records]
		if !ok {
			return
		}
		delete(l.pending, l.rep.Records)
		v.leaf(l, p.seq, p.data, tree.LeafHash(p.data), p.rec)
	}
}

// declareMissing names the first missing leaf of a log.
func (v *Verifier) declareMissing(l *logState) {
	if l.failed {
		clear(l.pending)
		return
	}
	first := slices.Min(slices.Collect(maps.Keys(l.pending)))
	after := l.pending[first]
	if !v.junkInPlace(l) {
		v.problem(l, Problem{Kind: Missing, Leaf: l.rep.Records, HasLeaf: true, Seq: after.seq, Stream: "audit",
			Detail: fmt.Sprintf("not stored; the log goes on with record %d at sequence %d", first, after.seq)})
	}
	clear(l.pending)
}

// junkInPlace names, as the bad record, a message that is not a record and
// was stored where the missing leaf was expected. It reports whether there
// was one.
func (v *Verifier) junkInPlace(l *logState) bool {
	js := l.junk[l.rep.Records]
	if len(js) == 0 {
		return false
	}
	delete(l.junk, l.rep.Records)
	v.problem(l, Problem{Kind: BadRecord, Leaf: l.rep.Records, HasLeaf: true, Seq: js[0].seq, Stream: "audit",
		Detail: js[0].detail + "; it is stored where this record was expected"})
	for _, j := range js[1:] {
		v.foreign(l, j)
	}
	return true
}

func (v *Verifier) foreign(l *logState, j junkMsg) {
	l.rep.Foreign++
	v.report.Foreign = append(v.report.Foreign, Problem{Kind: NotARecord, Log: l.id, Seq: j.seq, Stream: "audit", Detail: j.detail})
}

// Trust adds a checkpoint seen before — the gateway's trusted checkpoint, or
// one an auditor kept from an earlier verification — that the log must still
// extend: hold at least its size of records, with its root at that size.
// It must be signed by a trusted key. Call it before the first record;
// source names it in problems (a file name).
func (v *Verifier) Trust(signed, source string) (checkpoint.Checkpoint, error) {
	c, err := checkpoint.Open(signed, v.keys)
	if err != nil {
		return c, fmt.Errorf("%s: %w", source, err)
	}
	id := checkpoint.LogID(v.td, c.Origin)
	if id == "" {
		return c, fmt.Errorf("%s: a checkpoint of %q, not of a log of %s", source, c.Origin, v.td)
	}
	l := v.log(id)
	l.trusted = append(l.trusted, trustedCheckpoint{c: c, source: source})
	return c, nil
}

// reachTrusted compares the recomputed root with the trusted checkpoints of
// the current size.
func (v *Verifier) reachTrusted(l *logState) {
	for _, t := range l.trusted {
		if t.c.Size != l.rep.Records {
			continue
		}
		root, err := tree.Root(l.r)
		if err != nil {
			panic(err)
		}
		if !bytes.Equal(root, t.c.Root) {
			v.problem(l, Problem{Kind: NotExtended, Detail: fmt.Sprintf(
				"the log does not extend the checkpoint seen before (%s): at its size, %d records, the stored log has another root; records before %d were replaced",
				t.source, t.c.Size, t.c.Size)})
		}
	}
}

// leaf processes the next leaf of a log, in order.
func (v *Verifier) leaf(l *logState, seq uint64, data, h []byte, rec *auditv1.Record) {
	i := l.rep.Records
	linkOK := bytes.Equal(rec.GetPrevLeafHash(), l.prev)
	if s := l.suspect; s != nil {
		// The link before the suspect leaf broke: if the link after it breaks
		// too, the suspect leaf itself changed (its hash and its previous-hash
		// field); otherwise the leaf before it did.
		l.suspect = nil
		if !linkOK {
			v.altered(l, s.leaf, s.seq, "its bytes changed: it does not chain to the record before it, and the record after it does not chain to it")
		} else {
			v.altered(l, s.leaf-1, s.prevSeq, fmt.Sprintf("its bytes changed: its hash is not the one record %d chains to", s.leaf))
		}
	} else if !linkOK && !l.failed {
		l.suspect = &suspectLink{leaf: i, seq: seq, prevSeq: l.lastSeq}
	}
	if err := l.r.Append(h, nil); err != nil {
		panic(err)
	}
	l.hashes = append(l.hashes, h...)
	l.prev, l.lastSeq = h, seq
	for _, j := range l.junk[i] { // the leaf came after all: extra messages
		v.foreign(l, j)
	}
	delete(l.junk, i)
	l.rep.Records++
	v.reachCheckpoints(l)
	v.reachTrusted(l)
}

func (v *Verifier) altered(l *logState, leaf, seq uint64, detail string) {
	if l.failed {
		return
	}
	v.problem(l, Problem{Kind: Altered, Leaf: leaf, HasLeaf: true, Seq: seq, Stream: "audit", Detail: detail})
	l.mismatch = nil
}

// reachCheckpoints compares the recomputed root with every checkpoint of
// the current size.
func (v *Verifier) reachCheckpoints(l *logState) {
	for l.next < len(l.bySize) && l.bySize[l.next].c.Size == l.rep.Records {
		c := l.bySize[l.next]
		from := uint64(0)
		if l.next > 0 {
			from = l.bySize[l.next-1].c.Size
		}
		l.next++
		if l.failed {
			continue
		}
		root, err := tree.Root(l.r)
		if err != nil {
			panic(err)
		}
		if !bytes.Equal(root, c.c.Root) {
			if l.mismatch == nil {
				// The checkpoint's compact range hashes to its signed root, so
				// each of its nodes is authenticated: the first node that
				// differs from the recomputed one covers the first change.
				a, b := from, c.c.Size
				ids := compact.RangeNodes(0, c.c.Size, nil)
				for k, h := range l.r.Hashes() {
					if !bytes.Equal(h, c.state.GetCompactRange()[k]) {
						a, b = ids[k].Coverage()
						break
					}
				}
				l.mismatch = &rootMismatch{from: max(a, from), to: b, seq: c.seq, lastSeq: l.lastSeq}
			}
			continue
		}
		if l.mismatch == nil {
			l.rep.Checkpoints++
			l.rep.CheckpointSize, l.rep.Root, l.rep.Checkpoint = c.c.Size, c.c.Root, c.state.GetCheckpoint()
		}
	}
}

// Finish ends the verification and returns the report.
func (v *Verifier) Finish() *Report {
	v.seal()
	ids := slices.Sorted(maps.Keys(v.logs))
	for _, id := range ids {
		l := v.logs[id]
		v.finishLog(l)
		v.report.Logs = append(v.report.Logs, &l.rep)
	}
	sort.SliceStable(v.report.Problems, func(i, j int) bool { return v.report.Problems[i].Log < v.report.Problems[j].Log })
	sort.SliceStable(v.report.Foreign, func(i, j int) bool { return v.report.Foreign[i].Seq < v.report.Foreign[j].Seq })
	return &v.report
}

func (v *Verifier) finishLog(l *logState) {
	if l.suspect != nil {
		s := l.suspect
		l.suspect = nil
		v.altered(l, s.leaf-1, s.prevSeq, fmt.Sprintf("its bytes changed: its hash is not the one record %d chains to (or record %d, the last one, changed its previous-hash field)", s.leaf, s.leaf))
	}
	for len(l.pending) > 0 && !l.failed {
		v.declareMissing(l)
	}
	// Checkpoints never reached: records at their end are missing.
	if l.next < len(l.bySize) && !l.failed && !v.junkInPlace(l) {
		c := l.bySize[len(l.bySize)-1]
		v.problem(l, Problem{Kind: Missing, Leaf: l.rep.Records, HasLeaf: true, Seq: c.seq, Stream: "checkpoints",
			Detail: fmt.Sprintf("not stored: a signed checkpoint covers %d records, only %d are stored in order", c.c.Size, l.rep.Records)})
	}
	for _, t := range l.trusted {
		if t.c.Size > l.rep.Records {
			v.problem(l, Problem{Kind: NotExtended, Detail: fmt.Sprintf(
				"records %d to %d are missing: the checkpoint seen before (%s) covers %d records, the stored log holds %d in order",
				l.rep.Records, t.c.Size-1, t.source, t.c.Size, l.rep.Records)})
		}
	}
	for _, at := range slices.Sorted(maps.Keys(l.junk)) {
		for _, j := range l.junk[at] {
			v.foreign(l, j)
		}
	}
	clear(l.junk)
	if m := l.mismatch; m != nil && !l.failed {
		switch {
		case m.to-m.from == 1:
			v.altered(l, m.from, 0, "its bytes changed: its hash is not the one the signed checkpoint commits to")
		case m.to == l.rep.Records:
			v.altered(l, m.to-1, m.lastSeq, fmt.Sprintf("its bytes changed: records %d to %d do not hash to what the signed checkpoint commits to, and this last record is vouched for by no later one (if the chain before it was rewritten too, the first change is at record %d or after)", m.from, m.to-1, m.from))
		default:
			v.problem(l, Problem{Kind: Altered, Leaf: m.from, HasLeaf: true, Seq: m.seq, Stream: "checkpoints",
				Detail: fmt.Sprintf("records %d to %d do not hash to what the signed checkpoint commits to, and their chain was rewritten to hide which one changed: the first bad record is one of them", m.from, m.to-1)})
		}
	}
	if !l.failed && l.rep.Records > l.rep.CheckpointSize {
		l.rep.Uncovered = l.rep.Records - l.rep.CheckpointSize
	}
}
