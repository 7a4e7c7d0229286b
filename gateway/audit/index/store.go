package index

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver

	"github.com/jisr-bus/jisr/gateway/audit/tree"
)

// Sentinel errors.
var (
	// ErrNotIndexed: the index does not (yet) hold what was asked.
	ErrNotIndexed = errors.New("index: not indexed yet")
	// ErrBroken: a log's stored records do not chain; no proof is served for it.
	ErrBroken = errors.New("index: the stored log does not chain")
)

// Store keeps the nodes of every log's tree, tileWidth nodes of a level
// to a row.
type Store struct {
	db *sql.DB
	mu sync.Mutex
	// ranges caches each log's compact range [0, size) and its last leaf.
	logs map[string]*logRow
	// Append's prepared multi-row INSERTs, by table and rows, and its
	// reusable argument list.
	stmts map[stmtKey]*sql.Stmt
	args  []any
	rows  []int32     // Append's citizens' rows, by leaf
	added []indexNode // Append's new nodes
}

// indexNode is a node of a log's tree, new in an Append.
type indexNode struct {
	id   compact.NodeID
	hash []byte
}

type stmtKey struct {
	table *insertTable
	rows  int
}

// insertTable is an INSERT of several rows at once.
type insertTable struct {
	head string // up to VALUES
	cols int
}

var (
	insertTiles    = &insertTable{head: "INSERT OR REPLACE INTO tiles (log, level, tile, hashes) VALUES ", cols: 4}
	insertCitizens = &insertTable{head: "INSERT OR REPLACE INTO citizens (epoch, ckey, log, leaf, seq) VALUES ", cols: 5}
)

// insertChunks are the row counts of the INSERTs a batch is split into
// (largest first): few statements, and few shapes to prepare.
var insertChunks = []int{256, 64, 16, 4, 1}

// prepare prepares the INSERTs of every table and chunk size (before any
// transaction: the store has one connection, which a transaction holds).
func (s *Store) prepare() error {
	for _, t := range []*insertTable{insertTiles, insertCitizens} {
		row := "(" + strings.Repeat("?, ", t.cols-1) + "?)"
		for _, rows := range insertChunks {
			var q strings.Builder
			q.WriteString(t.head)
			for i := range rows {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString(row)
			}
			st, err := s.db.Prepare(q.String())
			if err != nil {
				return err
			}
			s.stmts[stmtKey{t, rows}] = st
		}
	}
	return nil
}

// insert inserts rows into t within tx: args holds t.cols values per row.
// Callers hold s.mu.
func (s *Store) insert(ctx context.Context, tx *sql.Tx, t *insertTable, args []any) error {
	for len(args) > 0 {
		rows := len(args) / t.cols
		k := insertChunks[len(insertChunks)-1]
		for _, c := range insertChunks {
			if c <= rows {
				k = c
				break
			}
		}
		if _, err := tx.StmtContext(ctx, s.stmts[stmtKey{t, k}]).ExecContext(ctx, args[:k*t.cols]...); err != nil {
			return fmt.Errorf("index: %w", err)
		}
		args = args[k*t.cols:]
	}
	return nil
}

type logRow struct {
	num     int64
	size    uint64
	prev    []byte
	r       *compact.Range
	lastSeq uint64
	// edge holds, per level, the last tile written (the one the next node
	// of that level goes to, unless it starts a new one).
	edge map[uint]tileRow
}

// tileRow is one row of the tiles table: the hashes of the nodes
// tile*tileWidth, … of one level, concatenated, as many as exist.
type tileRow struct {
	tile   uint64
	hashes []byte
}

// tileWidth is how many nodes of a level one row of the tiles table holds:
// a record adds about two nodes, so a batch of records writes a few rows
// instead of a row per node.
const (
	tileWidth = 64
	hashSize  = 32
)

const schema = `
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS logs (
	num      INTEGER PRIMARY KEY,
	name     TEXT NOT NULL UNIQUE,
	size     INTEGER NOT NULL,
	prev     BLOB,
	last_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles (
	log    INTEGER NOT NULL,
	level  INTEGER NOT NULL,
	tile   INTEGER NOT NULL,
	hashes BLOB NOT NULL,
	PRIMARY KEY (log, level, tile)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);
`

// citizensSchema: which records are about which citizen (record format 2
// keeps every citizen's records in one batch subject, so the access log
// finds a citizen's records here). The rows are kept by epoch first — a
// log's leaves epochLeaves at a time — then citizen: a write of the newest
// records changes the pages of the newest epochs only, however large the
// table has grown, where rows kept by citizen first put each new record on
// a page of its own once the table outgrows the batch (a page written to
// the WAL, then to the database, for every record). A citizen's records are
// found with one look-up per epoch. An index made before the table existed,
// or kept by citizen first, is rebuilt from the stream.
const citizensSchema = `
DROP TABLE IF EXISTS citizens;
CREATE TABLE citizens (
	epoch INTEGER NOT NULL,
	ckey  TEXT NOT NULL,
	log   INTEGER NOT NULL,
	leaf  INTEGER NOT NULL,
	seq   INTEGER NOT NULL,
	PRIMARY KEY (epoch, ckey, log, leaf)
) WITHOUT ROWID;
DELETE FROM tiles;
DELETE FROM logs;
DELETE FROM meta;
`

// epochLeaves is how many leaves of a log one epoch of the citizens' table
// holds (a power of two: the epoch is leaf >> epochShift). A batch of the
// gateway's own records (ownFlushRecords) spans one or two.
const (
	epochShift  = 16
	epochLeaves = 1 << epochShift
)

// tilesSchema: an index that kept one row per tree node (before tiles) is
// rebuilt from the stream.
const tilesSchema = `
DROP TABLE nodes;
DELETE FROM tiles;
DELETE FROM logs;
DELETE FROM meta;
DELETE FROM citizens;
`

// OpenStore opens (creating) the store at path; ":memory:" keeps it in memory.
func OpenStore(path string) (*Store, error) {
	// temp_store: the statement journal of a many-row INSERT in memory,
	// not in a temporary file. cache_size: a transaction of thousands of
	// records (the gateway's own, ownFlushRecords) changes up to as many
	// pages of the citizens' table; with SQLite's default cache (2 MiB)
	// they spill to the WAL before the commit, and are written twice.
	// wal_autocheckpoint: a page changed by several transactions between
	// two checkpoints is copied back to the database once.
	const pragmas = "_pragma=temp_store(memory)&_pragma=cache_size(-32768)"
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&" + pragmas + "&_pragma=wal_autocheckpoint(4096)"
	if path == ":memory:" {
		dsn = "file::memory:?" + pragmas
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	db.SetMaxOpenConns(1) // one writer; a single connection also keeps :memory: one database
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("index: %s: %w", path, err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pragma_table_info('citizens') WHERE name = 'epoch'`).Scan(&n); err != nil {
		db.Close()
		return nil, fmt.Errorf("index: %s: %w", path, err)
	}
	if n == 0 {
		if err := migrate(db, citizensSchema); err != nil {
			db.Close()
			return nil, fmt.Errorf("index: %s: %w", path, err)
		}
	}
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'nodes'`).Scan(&n); err != nil {
		db.Close()
		return nil, fmt.Errorf("index: %s: %w", path, err)
	}
	if n > 0 {
		if err := migrate(db, tilesSchema); err != nil {
			db.Close()
			return nil, fmt.Errorf("index: %s: %w", path, err)
		}
	}
	s := &Store{db: db, logs: map[string]*logRow{}, stmts: map[stmtKey]*sql.Stmt{}}
	if err := s.prepare(); err != nil {
		s.Close()
		return nil, fmt.Errorf("index: %s: %w", path, err)
	}
	return s, nil
}

// migrate runs a change of the schema in one transaction: a crash half-way
// must not leave the new shape with the old position, which the next start
// would take for an index already rebuilt.
func migrate(db *sql.DB, statements string) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(statements); err != nil {
		return err
	}
	return tx.Commit()
}

// Close closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	for _, st := range s.stmts {
		st.Close()
	}
	clear(s.stmts)
	s.mu.Unlock()
	return s.db.Close()
}

// log loads (creating) a log's row and compact range. Callers hold s.mu.
func (s *Store) log(ctx context.Context, name string) (*logRow, error) {
	if l, ok := s.logs[name]; ok {
		return l, nil
	}
	l := &logRow{edge: map[uint]tileRow{}}
	err := s.db.QueryRowContext(ctx, `SELECT num, size, prev, last_seq FROM logs WHERE name = ?`, name).Scan(&l.num, &l.size, &l.prev, &l.lastSeq)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		res, err := s.db.ExecContext(ctx, `INSERT INTO logs (name, size, prev, last_seq) VALUES (?, 0, NULL, 0)`, name)
		if err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
		if l.num, err = res.LastInsertId(); err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
		l.r = tree.NewEmptyRange(0)
	case err != nil:
		return nil, fmt.Errorf("index: %w", err)
	default:
		ids := compact.RangeNodes(0, l.size, nil)
		hashes, err := s.nodes(ctx, l.num, ids)
		if err != nil {
			return nil, err
		}
		if l.r, err = tree.NewRange(l.size, hashes); err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
	}
	s.logs[name] = l
	return l, nil
}

func (s *Store) nodes(ctx context.Context, log int64, ids []compact.NodeID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	var last tileRow
	lastLevel := uint(0)
	for i, id := range ids {
		tile, pos := id.Index/tileWidth, int(id.Index%tileWidth)
		if last.hashes == nil || lastLevel != id.Level || last.tile != tile {
			hashes, err := s.tile(ctx, s.db, log, id.Level, tile)
			if err != nil {
				return nil, err
			}
			last, lastLevel = tileRow{tile: tile, hashes: hashes}, id.Level
		}
		if (pos+1)*hashSize > len(last.hashes) {
			return nil, fmt.Errorf("%w: node (%d,%d)", ErrNotIndexed, id.Level, id.Index)
		}
		out[i] = last.hashes[pos*hashSize : (pos+1)*hashSize : (pos+1)*hashSize]
	}
	return out, nil
}

// tile reads one row of the tiles table (empty when there is none).
func (s *Store) tile(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, log int64, level uint, tile uint64) ([]byte, error) {
	var hashes []byte
	err := q.QueryRowContext(ctx, `SELECT hashes FROM tiles WHERE log = ? AND level = ? AND tile = ?`, log, level, int64(tile)).Scan(&hashes)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("index: %w", err)
	}
	return hashes, nil
}

// Leaf is one record to index.
type Leaf struct {
	Hash []byte
	Prev []byte // the record's prev_leaf_hash
	Seq  uint64 // the stream sequence of the message holding it
	CKey string // the citizen it is about ("" for none)
}

// Access is where one record about a citizen is stored.
type Access struct {
	Log  string
	Leaf uint64
	Seq  uint64
}

// Citizen lists where the indexed records about the citizen ckey are, by
// log and leaf: one look-up in each epoch, up to the largest log's last.
func (s *Store) Citizen(ctx context.Context, ckey string) ([]Access, error) {
	rows, err := s.db.QueryContext(ctx, `
WITH RECURSIVE epochs(e) AS (
	SELECT 0 UNION ALL SELECT e + 1 FROM epochs WHERE e < (SELECT coalesce(max(size), 0) FROM logs) >> `+strconv.Itoa(epochShift)+`
)
SELECT l.name, c.leaf, c.seq FROM epochs JOIN citizens c ON c.epoch = epochs.e AND c.ckey = ? JOIN logs l ON l.num = c.log
ORDER BY l.name, c.leaf`, ckey)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	defer rows.Close()
	var out []Access
	for rows.Next() {
		var a Access
		var leaf, seq int64
		if err := rows.Scan(&a.Log, &leaf, &seq); err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
		a.Leaf, a.Seq = uint64(leaf), uint64(seq)
		out = append(out, a)
	}
	return out, rows.Err()
}

// Size returns how many leaves of a log are indexed, and the leaf hash of
// the last one.
func (s *Store) Size(ctx context.Context, name string) (uint64, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.log(ctx, name)
	if err != nil {
		return 0, nil, err
	}
	return l.size, l.prev, nil
}

// Append indexes the next leaves of a log, in one transaction. Each must
// chain to the one before.
func (s *Store) Append(ctx context.Context, name string, leaves []Leaf) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.log(ctx, name)
	if err != nil {
		return err
	}
	r := tree.Clone(l.r)
	prev, size, lastSeq := l.prev, l.size, l.lastSeq
	added := s.added[:0]
	visit := func(id compact.NodeID, h []byte) { added = append(added, indexNode{id, h}) }
	for _, lf := range leaves {
		if !equal(lf.Prev, prev) {
			return fmt.Errorf("%w: log %s, leaf %d", ErrBroken, name, size)
		}
		if err := r.Append(lf.Hash, visit); err != nil {
			return fmt.Errorf("index: %w", err)
		}
		prev, size, lastSeq = lf.Hash, size+1, max(lastSeq, lf.Seq)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	defer tx.Rollback()
	// The new nodes go to the tiles at each level's edge: each tile
	// touched is written once, whole; and many rows go in one INSERT (a
	// statement's execution, not the row, is what costs in the driver).
	edge := maps.Clone(l.edge)
	type tileWrite struct {
		level  uint
		tile   uint64
		hashes []byte
	}
	var writes []tileWrite
	for _, n := range added {
		lvl := n.id.Level
		tile, pos := n.id.Index/tileWidth, int(n.id.Index%tileWidth)
		t, ok := edge[lvl]
		if !ok || t.tile != tile {
			t = tileRow{tile: tile}
			if pos > 0 { // this level's edge, not in memory since the store opened
				if t.hashes, err = s.tile(ctx, tx, l.num, lvl, tile); err != nil {
					return err
				}
			}
		}
		if len(t.hashes) != pos*hashSize {
			return fmt.Errorf("index: log %s: tile (%d,%d) holds %d nodes, not %d", name, lvl, tile, len(t.hashes)/hashSize, pos)
		}
		w := len(writes) - 1
		for w >= 0 && (writes[w].level != lvl || writes[w].tile != tile) {
			w--
		}
		if w < 0 {
			// The first node for this tile in this Append: append to a copy,
			// the store's edge stays as it is until the commit.
			t.hashes = slices.Clip(t.hashes)
			writes = append(writes, tileWrite{level: lvl, tile: tile})
			w = len(writes) - 1
		}
		t.hashes = append(t.hashes, n.hash...)
		writes[w].hashes = t.hashes
		edge[lvl] = t
	}
	args := s.args[:0]
	for _, w := range writes {
		args = append(args, l.num, int64(w.level), int64(w.tile), w.hashes)
	}
	if err := s.insert(ctx, tx, insertTiles, args); err != nil {
		return err
	}
	// The citizens' rows in key order — epoch, then citizen —: the B-tree
	// is walked once, from page to page, rather than entered afresh at
	// random for each row.
	rows := s.rows[:0]
	for i := range leaves {
		if leaves[i].CKey != "" {
			rows = append(rows, int32(i))
		}
	}
	epoch := func(i int32) uint64 { return (l.size + uint64(i)) >> epochShift }
	slices.SortFunc(rows, func(a, b int32) int {
		if c := cmp.Compare(epoch(a), epoch(b)); c != 0 {
			return c
		}
		return strings.Compare(leaves[a].CKey, leaves[b].CKey)
	})
	s.rows = rows
	args = args[:0]
	for _, i := range rows {
		lf := &leaves[i]
		args = append(args, int64(epoch(i)), lf.CKey, l.num, int64(l.size)+int64(i), int64(lf.Seq))
	}
	if err := s.insert(ctx, tx, insertCitizens, args); err != nil {
		return err
	}
	clear(args)
	s.args = args[:0]
	clear(added) // the hashes are the tiles' now
	s.added = added[:0]
	if _, err := tx.ExecContext(ctx, `UPDATE logs SET size = ?, prev = ?, last_seq = ? WHERE num = ?`, int64(size), prev, int64(lastSeq), l.num); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	l.r, l.prev, l.size, l.lastSeq, l.edge = r, prev, size, lastSeq, edge
	return nil
}

// Root returns the root of a log's tree at a size no larger than what is indexed.
func (s *Store) Root(ctx context.Context, name string, size uint64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.log(ctx, name)
	if err != nil {
		return nil, err
	}
	if size > l.size {
		return nil, fmt.Errorf("%w: log %s has %d leaves indexed, not %d", ErrNotIndexed, name, l.size, size)
	}
	if size == l.size {
		return tree.Root(l.r)
	}
	hashes, err := s.nodes(ctx, l.num, compact.RangeNodes(0, size, nil))
	if err != nil {
		return nil, err
	}
	r, err := tree.NewRange(size, hashes)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	return tree.Root(r)
}

// InclusionProof returns the RFC 6962 audit path of leaf index in the tree
// of a log at size, checked against root before it is returned.
func (s *Store) InclusionProof(ctx context.Context, name string, index, size uint64, leafHash, root []byte) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	s.mu.Lock()
	l, err := s.log(ctx, name)
	if err == nil && size > l.size {
		err = fmt.Errorf("%w: log %s has %d leaves indexed, not %d", ErrNotIndexed, name, l.size, size)
	}
	var hashes [][]byte
	if err == nil {
		hashes, err = s.nodes(ctx, l.num, nodes.IDs)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	p, err := nodes.Rehash(hashes, tree.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	if err := tree.VerifyInclusion(index, size, leafHash, p, root); err != nil {
		return nil, fmt.Errorf("index: the proof of leaf %d in log %s does not verify: %w", index, name, err)
	}
	return p, nil
}

// Position is the stream sequence up to which the audit stream is indexed.
func (s *Store) Position(ctx context.Context) (uint64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'audit_seq'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("index: %w", err)
	}
	return uint64(v), nil
}

// SetPosition records the stream sequence up to which the audit stream is indexed.
func (s *Store) SetPosition(ctx context.Context, seq uint64) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('audit_seq', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, int64(seq)); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	return nil
}

// Logs lists the logs the store knows.
func (s *Store) Logs(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM logs ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

func equal(a, b []byte) bool { return string(a) == string(b) }
