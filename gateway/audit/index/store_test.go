package index

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/gateway/audit/tree"
)

func leaves(from, n int, prev []byte) ([]Leaf, []byte) {
	out := make([]Leaf, n)
	for i := range out {
		h := tree.LeafHash(fmt.Appendf(nil, "record %d", from+i))
		out[i] = Leaf{Hash: h, Prev: prev, Seq: uint64(from + i + 1)}
		prev = h
	}
	return out, prev
}

func TestStoreProvesEveryLeafAtEverySize(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := OpenStore(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var all []Leaf
	var prev []byte
	for _, n := range []int{1, 2, 5, 13, 20} { // appended in batches of odd sizes
		batch, p := leaves(len(all), n, prev)
		if err := s.Append(ctx, "gw-1", batch); err != nil {
			t.Fatal(err)
		}
		all, prev = append(all, batch...), p
	}
	for size := uint64(1); size <= uint64(len(all)); size++ {
		root, err := s.Root(ctx, "gw-1", size)
		if err != nil {
			t.Fatal(err)
		}
		for i := range size {
			if _, err := s.InclusionProof(ctx, "gw-1", i, size, all[i].Hash, root); err != nil {
				t.Fatalf("leaf %d of %d: %v", i, size, err)
			}
		}
		// A proof for another leaf's hash does not verify.
		if size > 1 {
			if _, err := s.InclusionProof(ctx, "gw-1", 0, size, all[1].Hash, root); err == nil {
				t.Fatalf("size %d: proved a wrong leaf", size)
			}
		}
	}
	if _, err := s.Root(ctx, "gw-1", 42); !errors.Is(err, ErrNotIndexed) {
		t.Fatalf("root beyond the indexed size: %v", err)
	}
}

// storeOfTen is a store in a file (at path) holding leaves 0–9 of gw-1,
// the fourth about ck-1, with its stream position at 10; prev is the last
// leaf's hash.
func storeOfTen(t *testing.T) (s *Store, path string, batch []Leaf, prev []byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "index.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	batch, prev = leaves(0, 10, nil)
	batch[3].CKey = "ck-1"
	if err := s.Append(t.Context(), "gw-1", batch); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPosition(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	return s, path, batch, prev
}

func TestStoreRefusesABrokenChainAndSurvivesReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, path, _, prev := storeOfTen(t)
	bad, _ := leaves(10, 2, tree.LeafHash([]byte("not the previous leaf")))
	if err := s.Append(ctx, "gw-1", bad); !errors.Is(err, ErrBroken) {
		t.Fatalf("a leaf that does not chain: %v", err)
	}
	root10, _ := s.Root(ctx, "gw-1", 10)
	s.Close()

	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	size, last, err := s.Size(ctx, "gw-1")
	if err != nil || size != 10 || string(last) != string(prev) {
		t.Fatalf("reopened at size %d: %v", size, err)
	}
	if pos, _ := s.Position(ctx); pos != 10 {
		t.Fatalf("position %d", pos)
	}
	more, _ := leaves(10, 7, prev)
	if err := s.Append(ctx, "gw-1", more); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Root(ctx, "gw-1", 10); string(r) != string(root10) {
		t.Fatal("the root at size 10 changed after appending")
	}
	if logs, _ := s.Logs(ctx); len(logs) != 1 || logs[0] != "gw-1" {
		t.Fatalf("logs %v", logs)
	}
}

// BenchmarkStoreAppend indexes batches of leaves, each about one of a
// population of citizens (ckeys as long as real ones: base32 of an HMAC),
// in an on-disk store (as the gateway runs it): one op is one batch;
// cpu-ns/leaf is the process's CPU time. batch=512 is a flush of the
// records read from the stream; the gateway's own records are written in
// the larger transactions of their flush (ownFlushRecords). held=N first
// indexes N leaves, unmeasured: what a batch costs once the store holds a
// gateway's records of some hours (the pages a batch changes grow with the
// table where rows are not kept by epoch).
func BenchmarkStoreAppend(b *testing.B) {
	for _, c := range []struct{ citizens, batch, held int }{{10000, 512, 0}, {1000, 512, 0}, {1000, 4096, 0}, {1000, ownFlushRecords, 0}, {1000000, ownFlushRecords, 0},
		{10000, ownFlushRecords, 1 << 20}, {1000000, ownFlushRecords, 1 << 20}} {
		name := fmt.Sprintf("citizens=%d/batch=%d", c.citizens, c.batch)
		if c.held > 0 {
			name += fmt.Sprintf("/held=%d", c.held)
		}
		b.Run(name, func(b *testing.B) {
			s, err := OpenStore(filepath.Join(b.TempDir(), "index.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := b.Context()
			ckeys := make([]string, min(c.citizens, 100000))
			for i := range ckeys {
				h := sha256.Sum256(fmt.Appendf(nil, "citizen %d", i))
				ckeys[i] = base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:])
			}
			var prev []byte
			n := 0
			add := func() {
				batch, p := leaves(n, c.batch, prev)
				for i := range batch {
					k := (n + i) * 7919 % c.citizens
					if k < len(ckeys) {
						batch[i].CKey = ckeys[k]
					} else {
						batch[i].CKey = fmt.Sprintf("%s%07d", ckeys[k%len(ckeys)][:45], k)
					}
				}
				if err := s.Append(ctx, "gw-1", batch); err != nil {
					b.Fatal(err)
				}
				n, prev = n+c.batch, p
			}
			for n < c.held {
				add()
			}
			held := n
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				add()
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(n-held), "cpu-ns/leaf")
		})
	}
}

// cpuTime is the process's CPU time so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A batch larger than one multi-row INSERT (64 rows) is indexed whole:
// every leaf proves, every citizen row is there, and nothing else.
func TestStoreIndexesABatchOfManyInserts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := OpenStore(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch, _ := leaves(0, 157, nil) // 64+64+16+4+4+4+1 rows of citizens, more of nodes
	for i := range batch {
		if i%2 == 0 {
			batch[i].CKey = fmt.Sprintf("ck-%d", i%3)
		}
	}
	if err := s.Append(ctx, "gw-1", batch); err != nil {
		t.Fatal(err)
	}
	size := uint64(len(batch))
	root, err := s.Root(ctx, "gw-1", size)
	if err != nil {
		t.Fatal(err)
	}
	for i, lf := range batch {
		if _, err := s.InclusionProof(ctx, "gw-1", uint64(i), size, lf.Hash, root); err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
	}
	for c := range 3 {
		got, err := s.Citizen(ctx, fmt.Sprintf("ck-%d", c))
		if err != nil {
			t.Fatal(err)
		}
		var want []Access
		for i, lf := range batch {
			if lf.CKey == fmt.Sprintf("ck-%d", c) {
				want = append(want, Access{Log: "gw-1", Leaf: uint64(i), Seq: lf.Seq})
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ck-%d: %v, want %v", c, got, want)
		}
	}
}

// Nodes are stored tileWidth to a row: a log of several tiles per level,
// appended in batches that do not end on a tile and reopened in between,
// proves every leaf at sizes on and around the tiles' bounds, with the
// roots a compact range computes.
func TestStoreTilesSurviveReopenAndProveAcrossTiles(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "index.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	var all []Leaf
	var prev []byte
	for len(all) < 300 {
		if len(all) == 148 {
			s.Close()
			if s, err = OpenStore(path); err != nil {
				t.Fatal(err)
			}
		}
		batch, p := leaves(len(all), 37, prev)
		if err := s.Append(ctx, "gw-1", batch); err != nil {
			t.Fatalf("after %d leaves: %v", len(all), err)
		}
		all, prev = append(all, batch...), p
	}
	defer s.Close()
	want := tree.NewEmptyRange(0)
	roots := map[uint64][]byte{}
	for i, lf := range all {
		if err := want.Append(lf.Hash, nil); err != nil {
			t.Fatal(err)
		}
		roots[uint64(i+1)], _ = tree.Root(want)
	}
	for _, size := range []uint64{1, 2, 63, 64, 65, 127, 128, 129, 148, 185, 256, 299, uint64(len(all))} {
		root, err := s.Root(ctx, "gw-1", size)
		if err != nil || !slices.Equal(root, roots[size]) {
			t.Fatalf("root at %d: %x, %v; want %x", size, root, err, roots[size])
		}
		for i := range size {
			if _, err := s.InclusionProof(ctx, "gw-1", i, size, all[i].Hash, root); err != nil {
				t.Fatalf("leaf %d of %d: %v", i, size, err)
			}
		}
	}
}

// An index of an older shape is emptied, to be rebuilt from the stream:
// one that kept a row per tree node (before tiles), or its citizens' rows
// by citizen first (before epochs).
func TestStoreOfAnOlderShapeIsRebuilt(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		shape string
		sql   []string
	}{
		{"node rows", []string{`CREATE TABLE nodes (log INTEGER, level INTEGER, idx INTEGER, hash BLOB)`}},
		{"rows by citizen", []string{`DROP TABLE citizens`,
			`CREATE TABLE citizens (ckey TEXT NOT NULL, log INTEGER NOT NULL, leaf INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (ckey, log, leaf)) WITHOUT ROWID`,
			`INSERT INTO citizens VALUES ('ck-1', 1, 3, 4)`}},
	} {
		t.Run(c.shape, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			s, path, batch, _ := storeOfTen(t)
			for _, q := range c.sql {
				if _, err := s.db.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			s, err := OpenStore(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			size, _, err := s.Size(ctx, "gw-1")
			pos, _ := s.Position(ctx)
			acc, _ := s.Citizen(ctx, "ck-1")
			if err != nil || size != 0 || pos != 0 || len(acc) != 0 {
				t.Fatalf("after reopening an index of %s: size %d, position %d, %d citizen rows, %v", c.shape, size, pos, len(acc), err)
			}
			if err := s.Append(ctx, "gw-1", batch); err != nil {
				t.Fatal(err)
			}
			if acc, err := s.Citizen(ctx, "ck-1"); err != nil || len(acc) != 1 || acc[0].Leaf != 3 {
				t.Fatalf("rebuilt: %v, %v", acc, err)
			}
		})
	}
}

// A citizen's records are found in every epoch of the citizens' table
// (rows kept by epoch, then citizen), of every log, whichever log is
// longer; a batch that crosses from one epoch into the next files each
// row in its own.
func TestStoreFindsACitizenInEveryEpoch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := OpenStore(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const ck = "CITIZEN-A"
	// gw-1: 2.5 epochs in batches of 40,000 (the second crosses into the
	// next epoch), the citizen at leaves spread over all of them; gw-2: a
	// few leaves, the citizen at its first.
	mark := map[int]bool{0: true, 1: true, epochLeaves - 1: true, epochLeaves: true, 70000: true, 2*epochLeaves + 1: true, 5*epochLeaves/2 - 1: true}
	var want []Access
	var prev []byte
	for from := 0; from < 5*epochLeaves/2; from += 40000 {
		batch, p := leaves(from, min(40000, 5*epochLeaves/2-from), prev)
		for i := range batch {
			batch[i].CKey = fmt.Sprintf("other-%d", (from+i)%97)
			if mark[from+i] {
				batch[i].CKey = ck
				want = append(want, Access{Log: "gw-1", Leaf: uint64(from + i), Seq: batch[i].Seq})
			}
		}
		if err := s.Append(ctx, "gw-1", batch); err != nil {
			t.Fatal(err)
		}
		prev = p
	}
	other, _ := leaves(0, 3, nil)
	other[0].CKey = ck
	if err := s.Append(ctx, "gw-2", other); err != nil {
		t.Fatal(err)
	}
	want = append(want, Access{Log: "gw-2", Leaf: 0, Seq: other[0].Seq})
	got, err := s.Citizen(ctx, ck)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("listed %v,\nwant %v", got, want)
	}
	var epochs, misfiled int
	if err := s.db.QueryRowContext(ctx, `SELECT count(DISTINCT epoch) FROM citizens WHERE ckey = ?`, ck).Scan(&epochs); err != nil || epochs != 3 {
		t.Fatalf("the citizen's rows are in %d epochs (%v), want 3", epochs, err)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM citizens WHERE epoch != leaf >> ?`, epochShift).Scan(&misfiled); err != nil || misfiled != 0 {
		t.Fatalf("%d rows filed under another epoch than their leaf's (%v)", misfiled, err)
	}
	if got, _ := s.Citizen(ctx, "nobody"); len(got) != 0 {
		t.Fatalf("listed %v for a citizen never seen", got)
	}
}
