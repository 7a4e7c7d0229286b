package console_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/console"
)

// The gateway's log stores a batch of records per message (group commit):
// the console keeps one row per record, each with its own key, pages
// through all of them, and a store stopped in the middle of a batch
// (its rows written in two transactions) gets the rest of it on restart.
func TestEveryRecordOfABatchIsARowAndAResumeKeepsThem(t *testing.T) {
	h := newHarness(t, false)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			d := allowed("cnss", fmt.Sprintf("EE%06d", i), h, "GetPerson")
			if err := h.log.Append(t.Context(), d); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	js, err := jetstream.New(h.env.Connect(t, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	records, err := js.Stream(t.Context(), subject.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	// What the stream holds, as rows (and which message is a real batch).
	var want []console.Row
	var batchSeq uint64
	if err := stream.Scan(t.Context(), records, stream.ScanOptions{}, func(m stream.Msg) error {
		rows, err := console.RowsOf(m.Seq, m.Subject, m.Header, m.Data)
		if err != nil {
			return err
		}
		if len(rows) > 1 && batchSeq == 0 {
			batchSeq = m.Seq
		}
		want = append(want, rows...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(want) != n || batchSeq == 0 {
		t.Fatalf("the stream holds %d records, the first batch of several at %d: want %d records, some batched", len(want), batchSeq, n)
	}
	batchSubj, _ := record.BatchSubject("gw-1")

	check := func(t *testing.T, s *console.Store) {
		t.Helper()
		// Small pages: every record once, each under its batch's sequence
		// and subject, with its own bytes.
		got := map[uint64]console.Row{}
		leaves := map[uint64]bool{}
		var c console.Cursor
		for {
			rows, err := s.Page(t.Context(), console.Filter{}, c, 7)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				if _, dup := got[r.ID]; dup || leaves[r.Leaf] {
					t.Fatalf("row %d (leaf %d) twice", r.ID, r.Leaf)
				}
				got[r.ID], leaves[r.Leaf] = r, true
			}
			if len(rows) < 7 {
				break
			}
			c = console.Next(rows)
		}
		if len(got) != n {
			t.Fatalf("%d rows paged, want %d", len(got), n)
		}
		var last uint64
		err := s.Each(t.Context(), console.Filter{}, func(r console.Row) error {
			w := got[r.ID]
			if r.ID <= last || r.Seq != w.Seq || r.Seq != r.ID>>console.PlaceBits || r.Subject != batchSubj || len(r.Data) == 0 {
				return fmt.Errorf("row %+v after %d", r, last)
			}
			rec, err := record.Parse(r.Data)
			if err != nil || rec.GetLeafIndex() != r.Leaf || rec.GetCkey() != r.CKey {
				return fmt.Errorf("row %d: its bytes are not its record: %v", r.ID, err)
			}
			last = r.ID
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	h.waitRows(t, console.Filter{}, n)
	check(t, h.store)

	// A store that stopped after writing part of a batch.
	s, err := console.OpenStore(filepath.Join(t.TempDir(), "console.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var part []console.Row
	for _, r := range want {
		if r.Seq < batchSeq || r.ID == console.ID(batchSeq, 0) {
			part = append(part, r)
		}
	}
	if err := s.Add(t.Context(), part); err != nil {
		t.Fatal(err)
	}
	if pos, err := s.Position(t.Context()); err != nil || pos != batchSeq {
		t.Fatalf("position %d, %v: want %d", pos, err, batchSeq)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.Follow(ctx, records, func(err error) { t.Log(err) }); close(done) }()
	defer func() { stop(); <-done }()
	bustest.Eventually(t, 20*time.Second, func() error {
		rows, err := s.Page(t.Context(), console.Filter{}, console.Cursor{}, 0)
		if err != nil {
			return err
		}
		return bustest.Check(len(rows) == n, "all rows after the restart")
	})
	check(t, s)
}

// An old store (keyed by stream sequence, one record per message) is an
// index of the stream only: it is dropped and rebuilt, not misread.
func TestAStoreOfTheFirstSchemaIsRebuilt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE decisions (seq INTEGER PRIMARY KEY, log TEXT NOT NULL, data BLOB NOT NULL);
		INSERT INTO decisions VALUES (41, 'gw-1', x'00')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := console.OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.Position(t.Context()); err != nil || n != 0 {
		t.Fatalf("position %d, %v: want 0 (rebuilt from the stream)", n, err)
	}
	fill(t, s, 10)
	if rows, err := s.Page(t.Context(), console.Filter{}, console.Cursor{}, 0); err != nil || len(rows) != 10 {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
}
