package verify_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/tree"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

const td = "jisr.internal"

type msg struct {
	seq     uint64
	subject string
	data    []byte
}

// synth writes a log the way the gateway does, into in-memory "streams", so
// the verifier can be tested on every kind of damage without a server. The
// gateway's own log is checked against the same verifier in the
// end-to-end tests.
type synth struct {
	t       *testing.T
	id      string
	key     *checkpoint.KeyPair
	records []msg
	ckpts   []msg
	seq     uint64
	all     *compact.Range
	prev    []byte
	size    uint64
	lastCk  *compact.Range
	since   *compact.Range
}

func newSynth(t *testing.T, keyDir, id string) *synth {
	t.Helper()
	kp, _, err := checkpoint.EnsureKey(keyDir, id, checkpoint.Origin(td, id))
	if err != nil {
		t.Fatal(err)
	}
	return &synth{t: t, id: id, key: kp, all: tree.NewEmptyRange(0), lastCk: tree.NewEmptyRange(0), since: tree.NewEmptyRange(0)}
}

func (s *synth) rec(leaf uint64, prev []byte) *auditv1.Record {
	return &auditv1.Record{
		LogId: s.id, LeafIndex: leaf, PrevLeafHash: prev,
		Time:     timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(leaf) * time.Second)),
		Consumer: "cnss", Provider: "civil-registry", Service: "jisr.civilregistry.v1.CivilRegistry", Method: "GetPerson",
		Ckey: fmt.Sprintf("CKEY%04d", leaf%7), Purpose: "amo-enrolment", LegalBasis: "consent",
		Decision: auditv1.Decision_DECISION_ALLOWED, Reason: "ALLOWED",
	}
}

func (s *synth) append(n int) {
	for range n {
		r := s.rec(s.size, s.prev)
		data, err := record.Marshal(r)
		if err != nil {
			s.t.Fatal(err)
		}
		subj, _ := record.Subject(s.id, r.GetCkey())
		s.seq++
		s.records = append(s.records, msg{seq: s.seq, subject: subj, data: data})
		h := tree.LeafHash(data)
		_ = s.all.Append(h, nil)
		_ = s.since.Append(h, nil)
		s.prev = h
		s.size++
	}
}

func (s *synth) checkpoint() {
	root, _ := tree.Root(s.all)
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: checkpoint.Origin(td, s.id), Size: s.size, Root: root}, s.key.Signer)
	if err != nil {
		s.t.Fatal(err)
	}
	st := &auditv1.CheckpointState{Checkpoint: signed, LogId: s.id, CompactRange: s.all.Hashes(), LastLeafHash: s.prev}
	if s.lastCk.End() > 0 {
		p, err := tree.ConsistencyFromRanges(s.lastCk, s.since)
		if err != nil {
			s.t.Fatal(err)
		}
		st.PreviousSize, st.ConsistencyProof = s.lastCk.End(), p
	}
	s.addCheckpointState(st)
	s.lastCk, s.since = tree.Clone(s.all), tree.NewEmptyRange(s.size)
}

func (s *synth) addCheckpointState(st *auditv1.CheckpointState) {
	data, _ := proto.Marshal(st)
	subj, _ := record.CheckpointSubject(s.id)
	s.ckpts = append(s.ckpts, msg{seq: uint64(len(s.ckpts) + 1), subject: subj, data: data})
}

// edit changes record leaf's purpose, keeping its length.
func (s *synth) edit(leaf int, change func(*auditv1.Record)) {
	r, err := record.Parse(s.records[leaf].data)
	if err != nil {
		s.t.Fatal(err)
	}
	change(r)
	s.records[leaf].data, _ = record.Marshal(r)
}

func run(t *testing.T, keys *checkpoint.Keys, logs ...*synth) *verify.Report {
	t.Helper()
	v := newVerifier(t, td, keys)
	for _, s := range logs {
		for _, m := range s.ckpts {
			v.AddCheckpoint(m.seq, m.subject, m.data)
		}
	}
	for _, s := range logs {
		for _, m := range s.records {
			v.AddRecord(m.seq, m.subject, m.data)
		}
	}
	return v.Finish()
}

func keysOf(t *testing.T, logs ...*synth) *checkpoint.Keys {
	t.Helper()
	var vk []string
	for _, s := range logs {
		vk = append(vk, s.key.VerifierKey)
	}
	k, err := checkpoint.ParseKeys(vk...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// clean is a log of 100 records with checkpoints at 10, 37, 64 and 100.
func clean(t *testing.T) *synth {
	s := newSynth(t, t.TempDir(), "gw-1")
	for _, n := range []int{10, 27, 27, 36} {
		s.append(n)
		s.checkpoint()
	}
	return s
}

func TestCleanLogVerifies(t *testing.T) {
	t.Parallel()
	s := clean(t)
	s.append(5) // not yet checkpointed
	rep := run(t, keysOf(t, s), s)
	if !rep.OK() {
		t.Fatalf("problems: %v", rep.Problems)
	}
	l := rep.Logs[0]
	if l.Records != 105 || l.Checkpoints != 4 || l.CheckpointSize != 100 || l.Uncovered != 5 {
		t.Fatalf("report %+v", l)
	}
}

func TestOutOfOrderAndDuplicateRecordsVerify(t *testing.T) {
	t.Parallel()
	s := clean(t)
	s.records[40], s.records[41] = s.records[41], s.records[40] // a leaf refilled after a later one
	dup := s.records[70]
	dup.seq = 1000
	s.records = append(s.records, dup) // a retried publish outside the dedup window
	rep := run(t, keysOf(t, s), s)
	if !rep.OK() || rep.Logs[0].Duplicates != 1 || rep.Logs[0].Records != 100 {
		t.Fatalf("problems %v, report %+v", rep.Problems, rep.Logs[0])
	}
}

func TestTamperingIsFoundAndNamed(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		damage func(s *synth)
		kind   verify.Kind
		leaf   uint64
	}{
		{"edit a record", func(s *synth) { s.edit(42, func(r *auditv1.Record) { r.Purpose = "tax-clearance" }) }, verify.Altered, 42},
		{"edit the first record", func(s *synth) { s.edit(0, func(r *auditv1.Record) { r.Consumer = "tax" }) }, verify.Altered, 0},
		{"edit the last record", func(s *synth) { s.edit(99, func(r *auditv1.Record) { r.Fields = []string{"person"} }) }, verify.Altered, 99},
		{"edit the previous-hash field", func(s *synth) { s.edit(50, func(r *auditv1.Record) { r.PrevLeafHash = tree.LeafHash([]byte("x")) }) }, verify.Altered, 50},
		{"flip one byte", func(s *synth) { s.records[63].data[len(s.records[63].data)-3] ^= 0x01 }, verify.Altered, 63},
		{"garbage in place of a record", func(s *synth) { s.records[20].data = []byte{0xff, 0xff, 0xff} }, verify.BadRecord, 20},
		{"delete a record", func(s *synth) { s.records = append(s.records[:30:30], s.records[31:]...) }, verify.Missing, 30},
		{"delete the first record", func(s *synth) { s.records = s.records[1:] }, verify.Missing, 0},
		{"delete the last record", func(s *synth) { s.records = s.records[:99] }, verify.Missing, 99},
		{"delete the last ten records", func(s *synth) { s.records = s.records[:90] }, verify.Missing, 90},
		{"move a record to another citizen", func(s *synth) {
			s.records[12].subject, _ = record.Subject("gw-1", "SOMEONEELSE")
		}, verify.Misfiled, 12},
		{"replace a record and re-chain the rest", func(s *synth) {
			// An attacker who rewrites a record and every record after it
			// (recomputing the chain) still cannot match the signed roots.
			prev := []byte(nil)
			for i := range s.records {
				r, _ := record.Parse(s.records[i].data)
				if i == 70 {
					r.Purpose = "tax-clearance"
				}
				if i >= 70 {
					r.PrevLeafHash = prev
					s.records[i].data, _ = record.Marshal(r)
				}
				prev = tree.LeafHash(s.records[i].data)
			}
		}, verify.Altered, 64},
		{"a second, different record for a leaf", func(s *synth) {
			other := s.mustParse(5)
			other.Purpose = "care-eligibility"
			data, _ := record.Marshal(other)
			subj, _ := record.Subject("gw-1", other.GetCkey())
			s.records = append(s.records, msg{seq: 5000, subject: subj, data: data})
		}, verify.Conflict, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := clean(t)
			c.damage(s)
			rep := run(t, keysOf(t, s), s)
			if rep.OK() {
				t.Fatal("verification passed on a damaged log")
			}
			bad := rep.Logs[0].FirstBad
			if bad == nil {
				t.Fatalf("no record named; problems: %v", rep.Problems)
			}
			if bad.Kind != c.kind || bad.Leaf != c.leaf {
				t.Fatalf("first bad: %v; want %s at record %d", bad, c.kind, c.leaf)
			}
			if !strings.Contains(bad.String(), fmt.Sprintf("record %d", c.leaf)) {
				t.Fatalf("the message does not name the record: %s", bad)
			}
		})
	}
}

func (s *synth) mustParse(leaf int) *auditv1.Record {
	r, err := record.Parse(s.records[leaf].data)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

func TestCheckpointProblems(t *testing.T) {
	t.Parallel()
	t.Run("forged by another key", func(t *testing.T) {
		s := clean(t)
		mallory := newSynth(t, t.TempDir(), "gw-1") // same log id, another key
		mallory.append(100)
		mallory.checkpoint()
		s.ckpts = append(s.ckpts, msg{seq: 99, subject: mallory.ckpts[0].subject, data: mallory.ckpts[0].data})
		rep := run(t, keysOf(t, s), s)
		if !has(rep, verify.BadCheckpoint, "not signed by a trusted key") {
			t.Fatalf("problems: %v", rep.Problems)
		}
	})
	t.Run("no trusted key", func(t *testing.T) {
		s := clean(t)
		other := newSynth(t, t.TempDir(), "gw-2")
		rep := run(t, keysOf(t, other), s)
		if !has(rep, verify.Untrusted, "no trusted key") {
			t.Fatalf("problems: %v", rep.Problems)
		}
	})
	t.Run("fork", func(t *testing.T) {
		s := clean(t)
		// A second checkpoint of size 100 over different records, signed with
		// the log's own key (a compromised or buggy writer).
		fork := &synth{t: t, id: "gw-1", key: s.key, all: tree.NewEmptyRange(0), lastCk: tree.NewEmptyRange(0), since: tree.NewEmptyRange(0)}
		fork.append(99)
		fork.records = nil
		r := fork.rec(99, fork.prev)
		r.Purpose = "other"
		d, _ := record.Marshal(r)
		h := tree.LeafHash(d)
		_ = fork.all.Append(h, nil)
		fork.size++
		fork.checkpoint()
		s.ckpts = append(s.ckpts, msg{seq: 50, subject: fork.ckpts[0].subject, data: fork.ckpts[0].data})
		rep := run(t, keysOf(t, s), s)
		if !has(rep, verify.Inconsistent, "a fork") {
			t.Fatalf("problems: %v", rep.Problems)
		}
	})
	t.Run("shrinking", func(t *testing.T) {
		s := clean(t)
		s.ckpts = append(s.ckpts, s.ckpts[1]) // size 37 republished after size 100
		s.ckpts[len(s.ckpts)-1].seq = 77
		rep := run(t, keysOf(t, s), s)
		if !has(rep, verify.Inconsistent, "shrank") {
			t.Fatalf("problems: %v", rep.Problems)
		}
	})
	t.Run("bad consistency proof", func(t *testing.T) {
		s := clean(t)
		st := &auditv1.CheckpointState{}
		_ = proto.Unmarshal(s.ckpts[2].data, st)
		st.ConsistencyProof[0] = bytes.Repeat([]byte{7}, 32)
		s.ckpts[2].data, _ = proto.Marshal(st)
		rep := run(t, keysOf(t, s), s)
		if !has(rep, verify.Inconsistent, "consistency proof") {
			t.Fatalf("problems: %v", rep.Problems)
		}
	})
	t.Run("stored state does not match the signed root", func(t *testing.T) {
		s := clean(t)
		st := &auditv1.CheckpointState{}
		_ = proto.Unmarshal(s.ckpts[1].data, st)
		st.CompactRange[0] = bytes.Repeat([]byte{7}, 32)
		s.ckpts[1].data, _ = proto.Marshal(st)
		rep := run(t, keysOf(t, s), s)
		if !has(rep, verify.BadCheckpoint, "does not match the signed root") {
			t.Fatalf("problems: %v", rep.Problems)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		s := clean(t)
		s.ckpts = append(s.ckpts, msg{seq: 9, subject: s.ckpts[0].subject, data: []byte{0xff}})
		if rep := run(t, keysOf(t, s), s); !has(rep, verify.BadCheckpoint, "not a checkpoint") {
			t.Fatalf("problems: %v", rep.Problems)
		}
	})
}

func TestTwoLogsAreVerifiedSeparately(t *testing.T) {
	t.Parallel()
	a, b := clean(t), newSynth(t, t.TempDir(), "gw-2")
	b.append(33)
	b.checkpoint()
	b.edit(7, func(r *auditv1.Record) { r.Method = "IsAlive" })
	rep := run(t, keysOf(t, a, b), a, b)
	if rep.Logs[0].FirstBad != nil || rep.Logs[0].Checkpoints != 4 {
		t.Fatalf("gw-1: %+v", rep.Logs[0])
	}
	if bad := rep.Logs[1].FirstBad; bad == nil || bad.Leaf != 7 {
		t.Fatalf("gw-2 first bad %v", bad)
	}
}

func has(rep *verify.Report, kind verify.Kind, text string) bool {
	for _, p := range rep.Problems {
		if p.Kind == kind && strings.Contains(p.String(), text) {
			return true
		}
	}
	return false
}

func TestTrustedCheckpointMustStillBeExtended(t *testing.T) {
	t.Parallel()
	keyDir := t.TempDir()
	seen := newSynth(t, keyDir, "gw-1")
	seen.append(40)
	seen.checkpoint()
	signed := string(lastNote(t, seen))
	for _, c := range []struct {
		name string
		now  func() *synth
		want string // "" = still extends
	}{
		{"grown", func() *synth {
			s := newSynth(t, keyDir, "gw-1")
			s.append(40)
			s.checkpoint()
			s.append(25)
			s.checkpoint()
			return s
		}, ""},
		{"erased", func() *synth { return newSynth(t, keyDir, "gw-1") }, "records 0 to 39 are missing"},
		{"shortened", func() *synth { s := newSynth(t, keyDir, "gw-1"); s.append(40); s.records = s.records[:31]; return s }, "records 31 to 39 are missing"},
		{"restarted with other records", func() *synth {
			s := newSynth(t, keyDir, "gw-1")
			s.append(1)
			s.edit(0, func(r *auditv1.Record) { r.Purpose = "tax-clearance" })
			s.prev = tree.LeafHash(s.records[0].data)
			s.all = tree.NewEmptyRange(0)
			_ = s.all.Append(s.prev, nil)
			s.since = tree.NewEmptyRange(0)
			_ = s.since.Append(s.prev, nil)
			s.append(59)
			s.checkpoint()
			return s
		}, "at its size, 40 records, the stored log has another root"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.now()
			v := newVerifier(t, td, keysOf(t, seen))
			if _, err := v.Trust(signed, "seen/gw-1"); err != nil {
				t.Fatal(err)
			}
			for _, m := range s.ckpts {
				v.AddCheckpoint(m.seq, m.subject, m.data)
			}
			for _, m := range s.records {
				v.AddRecord(m.seq, m.subject, m.data)
			}
			rep := v.Finish()
			if c.want == "" {
				if !rep.OK() {
					t.Fatalf("problems: %v", rep.Problems)
				}
				return
			}
			for _, p := range rep.Problems {
				if p.Kind == verify.NotExtended && p.Log == "gw-1" && strings.Contains(p.String(), c.want) && strings.Contains(p.String(), "seen/gw-1") {
					return
				}
			}
			t.Fatalf("no not-extended problem naming %q: %v", c.want, rep.Problems)
		})
	}
	v := newVerifier(t, td, keysOf(t, newSynth(t, t.TempDir(), "gw-1")))
	if _, err := v.Trust(signed, "x"); err == nil {
		t.Fatal("a checkpoint signed by an untrusted key was trusted")
	}
}

func lastNote(t *testing.T, s *synth) []byte {
	t.Helper()
	st := &auditv1.CheckpointState{}
	if err := proto.Unmarshal(s.ckpts[len(s.ckpts)-1].data, st); err != nil {
		t.Fatal(err)
	}
	return []byte(st.GetCheckpoint())
}

func TestMessagesThatAreNotRecordsAreNamedAndTheLogStillVerifies(t *testing.T) {
	t.Parallel()
	s := clean(t)
	subj, _ := record.Subject("gw-1", "CKEY0001")
	other := s.mustParse(3)
	other.LogId = "gw-9"
	otherData, _ := record.Marshal(other)
	// Forged messages between records, and after the last one.
	insert := func(at int, seq uint64, data []byte) {
		s.records = append(s.records[:at:at], append([]msg{{seq: seq, subject: subj, data: data}}, s.records[at:]...)...)
	}
	insert(50, 9001, []byte(`{"person":"forged"}`))
	insert(20, 9000, otherData)
	s.records = append(s.records, msg{seq: 9002, subject: subj, data: []byte{0x0a, 0x01}})
	rep := run(t, keysOf(t, s), s)
	if !rep.OK() {
		t.Fatalf("the log's own records are intact, yet: %v", rep.Problems)
	}
	if rep.Logs[0].Records != 100 || rep.Logs[0].Foreign != 3 || len(rep.Foreign) != 3 {
		t.Fatalf("report %+v, foreign %v", rep.Logs[0], rep.Foreign)
	}
	for i, seq := range []uint64{9000, 9001, 9002} {
		if p := rep.Foreign[i]; p.Kind != verify.NotARecord || p.Seq != seq || !strings.Contains(p.String(), fmt.Sprintf("log gw-1 (audit sequence %d)", seq)) {
			t.Fatalf("foreign message %d: %s", i, p)
		}
	}
}

// newVerifier is verify.New for a configuration known to be valid.
func newVerifier(t *testing.T, td string, keys *checkpoint.Keys) *verify.Verifier {
	t.Helper()
	v, err := verify.New(verify.Config{TrustDomain: td, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
