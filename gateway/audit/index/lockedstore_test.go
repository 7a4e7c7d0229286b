package index_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/index"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// ownFixture is an index following the audit streams on a real store
// file, with gw-1's records handed over in process as the gateway does.
type ownFixture struct {
	ctx  context.Context
	l    *audit.Log
	ix   *index.Index
	path string
	ck   string
	// others counts gw-1's records about no citizen (the log's own, at
	// its start).
	others uint64
}

func startOwnFixture(t *testing.T) *ownFixture {
	t.Helper()
	b := startAuditBus(t, 90*time.Second, "gw-1")
	ctx, env, l := b.ctx, b.env, b.logs["gw-1"]
	path := filepath.Join(t.TempDir(), "index.db")
	ix, store := b.newIndex(t, path)
	handOver(ix, l, "", nil)
	stop := follow(ctx, ix)
	t.Cleanup(func() { stop(); store.Close() })
	f := &ownFixture{ctx: ctx, l: l, ix: ix, path: path, ck: env.Keyer.CKey("AB1")}
	if err := f.append(ctx); err != nil {
		t.Fatal(err)
	}
	size, _ := l.Size()
	if _, err := ix.WaitFor(ctx, "gw-1", size); err != nil { // the first whole flush is behind
		t.Fatal(err)
	}
	where, err := ix.Citizen(ctx, f.ck)
	if err != nil || len(where) != 1 {
		t.Fatalf("listed %v (%v), want the one record", where, err)
	}
	f.others = size - 1
	return f
}

func (f *ownFixture) append(ctx context.Context) error {
	return f.l.Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: f.ck, Code: codes.OK, Allowed: true})
}

// allListed checks that every record of gw-1 is indexed and listed to the
// citizen (every one is about it).
func (f *ownFixture) allListed(t *testing.T) {
	t.Helper()
	if err := f.append(f.ctx); err != nil {
		t.Fatal(err)
	}
	size, _ := f.l.Size()
	wctx, wcancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer wcancel()
	if _, err := f.ix.WaitFor(wctx, "gw-1", size); err != nil {
		t.Errorf("gw-1's %d records are not all indexed: %v", size, err)
	}
	where, err := f.ix.Citizen(f.ctx, f.ck)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(where)) != size-f.others {
		t.Fatalf("%d records listed to the citizen, want all %d", len(where), size-f.others)
	}
}

// otherConn is a second connection to the store's file: another process.
func otherConn(t *testing.T, f *ownFixture) *sql.Conn {
	t.Helper()
	other, err := sql.Open("sqlite", "file:"+f.path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	conn, err := other.Conn(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// The index's store is derived data on a local disk that another process
// can hold (an operator's sqlite3 shell, a backup) or that can stall.
// While it is locked the gateway's own records must still be committed at
// the audit log's pace: the handover (AddCommitted) runs on the log's
// sequencer, before the replies waiting on it are released, and must
// never wait for the store's I/O.
func TestALockedIndexStoreDoesNotStallTheAuditLog(t *testing.T) {
	t.Parallel()
	f := startOwnFixture(t)
	conn := otherConn(t, f)
	// Held for longer than a whole flush's interval (5 s): a flush waits
	// on it for its busy timeout.
	if _, err := conn.ExecContext(f.ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	locked := time.Now()
	for time.Since(locked) < 8*time.Second {
		actx, acancel := context.WithTimeout(f.ctx, 3*time.Second) // a flush waits 5 s on the lock
		err := f.append(actx)
		acancel()
		if err != nil {
			t.Fatalf("after %v with the index's store locked, an audit append waited on it: %v", time.Since(locked).Round(time.Millisecond), err)
		}
	}
	if _, err := conn.ExecContext(f.ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	f.allListed(t)
}

// A write of the store that fails (a full disk, an I/O error; here a
// trigger another process installed refuses it) while the index position
// is still written must not lose the records it held: they are written
// by a later flush, and until then listed to their citizen.
func TestAFailedIndexWriteLosesNoRecord(t *testing.T) {
	t.Parallel()
	f := startOwnFixture(t)
	conn := otherConn(t, f)
	if _, err := conn.ExecContext(f.ctx, `CREATE TRIGGER fail_citizens BEFORE INSERT ON citizens BEGIN SELECT RAISE(ABORT, 'injected write failure'); END`); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if err := f.append(f.ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Past a whole flush (ownFlushEvery): it fails.
	for start := time.Now(); time.Since(start) < 6*time.Second; {
		if err := f.append(f.ctx); err != nil {
			t.Fatal(err)
		}
		size, _ := f.l.Size()
		where, err := f.ix.Citizen(f.ctx, f.ck)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(where)) != size-f.others {
			t.Fatalf("after %v, %d records listed to the citizen, want all %d: %v", time.Since(start).Round(time.Millisecond), len(where), size-f.others, where)
		}
	}
	// No more records: the last of them go through a failing flush too,
	// and nothing is pending after it.
	bustest.Eventually(t, 20*time.Second, func() error {
		return bustest.Check(index.OwnPending(f.ix) == 0, fmt.Sprintf("%d of gw-1's records still pending", index.OwnPending(f.ix)))
	})
	if _, err := conn.ExecContext(f.ctx, `DROP TRIGGER fail_citizens`); err != nil {
		t.Fatal(err)
	}
	// With no new record to carry them, the held-back records are written
	// at the next whole flush.
	size, _ := f.l.Size()
	wctx, wcancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer wcancel()
	if _, err := f.ix.WaitFor(wctx, "gw-1", size); err != nil {
		t.Fatalf("with no new record, gw-1's %d records are not all indexed: %v", size, err)
	}
	f.allListed(t)
}
