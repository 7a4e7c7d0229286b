package console

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver

	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Store is the console's index of decisions: one row per audit record,
// keyed by its place in the stream (ID: the sequence of the message that
// holds it and its place in that message's batch), with the columns the
// auditor filters by.
// It is read-side only: it follows the audit stream (the records stay the
// truth) and can be rebuilt from it at any time.
type Store struct {
	db *sql.DB
}

const schema = `
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS decisions (
	id          INTEGER PRIMARY KEY,
	seq         INTEGER NOT NULL,
	log         TEXT NOT NULL,
	leaf        INTEGER NOT NULL,
	time_ns     INTEGER NOT NULL,
	consumer    TEXT NOT NULL,
	provider    TEXT NOT NULL,
	service     TEXT NOT NULL,
	method      TEXT NOT NULL,
	ckey        TEXT NOT NULL,
	purpose     TEXT NOT NULL,
	legal_basis TEXT NOT NULL,
	rule        TEXT NOT NULL,
	allowed     INTEGER NOT NULL,
	reason      TEXT NOT NULL,
	code        INTEGER NOT NULL,
	latency_us  INTEGER NOT NULL,
	trace_id    TEXT NOT NULL,
	subject     TEXT NOT NULL,
	data        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (time_ns, id);
CREATE INDEX IF NOT EXISTS decisions_ckey ON decisions (ckey, time_ns, id);
CREATE INDEX IF NOT EXISTS decisions_consumer ON decisions (consumer, time_ns, id);
CREATE INDEX IF NOT EXISTS decisions_provider ON decisions (provider, time_ns, id);
CREATE INDEX IF NOT EXISTS decisions_reason ON decisions (reason, time_ns, id);
CREATE INDEX IF NOT EXISTS decisions_trace ON decisions (trace_id);
`

// OpenStore opens (creating) the store at path; ":memory:" keeps it in memory.
func OpenStore(path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)"
	if path == ":memory:" {
		dsn = "file::memory:"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	db.SetMaxOpenConns(1) // one connection also keeps :memory: one database
	// A store of the first schema (keyed by stream sequence, one record
	// per message) cannot hold batches: it is only an index of the
	// stream, so it is dropped and rebuilt.
	var old int
	if err := db.QueryRow(`SELECT COUNT(*) FROM pragma_table_info('decisions') WHERE name = 'seq' AND pk = 1`).Scan(&old); err != nil {
		db.Close()
		return nil, fmt.Errorf("console: %s: %w", path, err)
	}
	if old > 0 {
		if _, err := db.Exec(`DROP TABLE decisions`); err != nil {
			db.Close()
			return nil, fmt.Errorf("console: %s: %w", path, err)
		}
	}
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("console: %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// PlaceBits is how many low bits of a row's ID number its record within
// its message: a batch holds at most record.MaxBatchRecords records.
const PlaceBits = 11

// ID is the key of the record at place (0 first) of the message at
// stream sequence seq: IDs sort as the records are stored.
func ID(seq uint64, place int) uint64 { return seq<<PlaceBits | uint64(place) }

// Row is one decision as the console shows it.
type Row struct {
	ID         uint64 // ID(Seq, place in the batch): unique, in stream order
	Seq        uint64 // the stream sequence of the message holding it
	Log        string
	Leaf       uint64
	Time       time.Time
	Consumer   string
	Provider   string
	Service    string
	Method     string
	CKey       string
	Purpose    string
	LegalBasis string
	Rule       string
	Allowed    bool
	Reason     string
	Code       uint32
	Latency    time.Duration
	TraceID    string
	Subject    string
	Data       []byte // the exact stored record
}

// RowsOf reads the records one message of the audit stream holds (a batch
// of format 2, or the single record of format 1) into rows, in order; a
// record that does not parse is left out. It fails when the message is
// not one of the audit stream's.
func RowsOf(seq uint64, subj string, header map[string][]string, data []byte) ([]Row, error) {
	_, _, _, recs, err := record.Stored(subj, header, data)
	if err != nil {
		return nil, err
	}
	if len(recs) > record.MaxBatchRecords {
		return nil, fmt.Errorf("%w: %d records, at most %d", record.ErrBadBatch, len(recs), record.MaxBatchRecords)
	}
	rows := make([]Row, 0, len(recs))
	for i, b := range recs {
		r, err := record.Parse(b)
		if err != nil {
			continue // `jisr audit verify` names it; the console skips it
		}
		rows = append(rows, rowOf(ID(seq, i), seq, subj, b, r))
	}
	return rows, nil
}

func rowOf(id, seq uint64, subj string, data []byte, r *auditv1.Record) Row {
	return Row{
		ID: id, Seq: seq, Log: r.GetLogId(), Leaf: r.GetLeafIndex(), Time: r.GetTime().AsTime(),
		Consumer: r.GetConsumer(), Provider: r.GetProvider(), Service: r.GetService(), Method: r.GetMethod(),
		CKey: r.GetCkey(), Purpose: r.GetPurpose(), LegalBasis: r.GetLegalBasis(), Rule: r.GetRule(),
		Allowed: r.GetDecision() == auditv1.Decision_DECISION_ALLOWED, Reason: r.GetReason(), Code: r.GetStatusCode(),
		Latency: r.GetLatency().AsDuration(), TraceID: r.GetTraceId(), Subject: subj, Data: data,
	}
}

// Add stores rows in one transaction (a row already stored, by ID, is kept).
func (s *Store) Add(ctx context.Context, rows []Row) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT OR IGNORE INTO decisions
		(id, seq, log, leaf, time_ns, consumer, provider, service, method, ckey, purpose, legal_basis, rule, allowed, reason, code, latency_us, trace_id, subject, data)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer st.Close()
	for _, r := range rows {
		if _, err := st.ExecContext(ctx, int64(r.ID), int64(r.Seq), r.Log, int64(r.Leaf), r.Time.UnixNano(), r.Consumer, r.Provider, r.Service, r.Method,
			r.CKey, r.Purpose, r.LegalBasis, r.Rule, r.Allowed, r.Reason, int64(r.Code), r.Latency.Microseconds(), r.TraceID, r.Subject, r.Data); err != nil {
			return fmt.Errorf("console: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// Position is the stream sequence of the last message stored (maybe only
// in part: a batch's rows may be written in two transactions).
func (s *Store) Position(ctx context.Context) (uint64, error) {
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(id) >> `+strconv.Itoa(PlaceBits)+` FROM decisions`).Scan(&v); err != nil {
		return 0, fmt.Errorf("console: %w", err)
	}
	return uint64(v.Int64), nil
}

// Follow stores every record of the audit stream, from where the store
// stopped, until ctx ends. Rows are written in batches (up to 512 records,
// or what arrived in the last 200 ms).
func (s *Store) Follow(ctx context.Context, records jetstream.Stream, onErr func(error)) {
	for ctx.Err() == nil {
		err := s.follow(ctx, records)
		if ctx.Err() != nil {
			return
		}
		onErr(err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) follow(ctx context.Context, records jetstream.Stream) error {
	pos, err := s.Position(ctx)
	if err != nil {
		return err
	}
	// Read the last message stored again: a batch may have been stored
	// only in part (its rows span two transactions); Add keeps the rows
	// already there.
	batch := make(chan Row, 1024)
	errc := make(chan error, 1)
	go func() {
		defer close(batch)
		errc <- stream.Scan(ctx, records, stream.ScanOptions{StartSeq: max(pos, 1), Follow: true}, func(m stream.Msg) error {
			rows, err := RowsOf(m.Seq, m.Subject, m.Header, m.Data)
			if err != nil {
				return nil // not a record: `jisr audit verify` names it; the console skips it
			}
			for _, r := range rows {
				select {
				case batch <- r:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	}()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var rows []Row
	flush := func() error {
		if len(rows) == 0 {
			return nil
		}
		err := s.Add(context.WithoutCancel(ctx), rows)
		rows = rows[:0]
		return err
	}
	for {
		select {
		case r, ok := <-batch:
			if !ok {
				if err := flush(); err != nil {
					return err
				}
				return <-errc
			}
			rows = append(rows, r)
			if len(rows) >= 512 {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-t.C:
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// Filter selects decisions. Empty fields select everything.
type Filter struct {
	From, To                 time.Time
	Consumer, Provider       string
	Service, Method          string
	LegalBasis, Reason, CKey string
	Decision                 string // "", "allowed" or "refused"
	TraceID                  string
}

// ErrFilter: a filter value is not acceptable.
var ErrFilter = errors.New("console: bad filter")

func (f Filter) where() (string, []any, error) {
	var conds []string
	var args []any
	eq := func(col, v string) {
		if v != "" {
			conds = append(conds, col+" = ?")
			args = append(args, v)
		}
	}
	eq("consumer", f.Consumer)
	eq("provider", f.Provider)
	eq("service", f.Service)
	eq("method", f.Method)
	eq("legal_basis", f.LegalBasis)
	eq("reason", f.Reason)
	eq("ckey", f.CKey)
	eq("trace_id", f.TraceID)
	switch f.Decision {
	case "":
	case "allowed":
		conds = append(conds, "allowed = 1")
	case "refused":
		conds = append(conds, "allowed = 0")
	default:
		return "", nil, fmt.Errorf("%w: decision %q: allowed or refused", ErrFilter, f.Decision)
	}
	if !f.From.IsZero() {
		conds = append(conds, "time_ns >= ?")
		args = append(args, f.From.UnixNano())
	}
	if !f.To.IsZero() {
		conds = append(conds, "time_ns < ?")
		args = append(args, f.To.UnixNano())
	}
	if len(conds) == 0 {
		return "1", nil, nil
	}
	return strings.Join(conds, " AND "), args, nil
}

const columns = `id, seq, log, leaf, time_ns, consumer, provider, service, method, ckey, purpose, legal_basis, rule, allowed, reason, code, latency_us, trace_id, subject`

// Cursor is where a page starts: before the decision at (Time, ID).
// The zero Cursor starts at the newest.
type Cursor struct {
	Time time.Time
	ID   uint64
}

// Next is the cursor of the page after rows.
func Next(rows []Row) Cursor {
	if len(rows) == 0 {
		return Cursor{}
	}
	last := rows[len(rows)-1]
	return Cursor{Time: last.Time, ID: last.ID}
}

// String is the cursor as a URL parameter: <unix ns>.<id>.
func (c Cursor) String() string {
	if c.ID == 0 {
		return ""
	}
	return strconv.FormatInt(c.Time.UnixNano(), 10) + "." + strconv.FormatUint(c.ID, 10)
}

// ParseCursor reads Cursor.String ("" is the zero cursor).
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	t, id, ok := strings.Cut(s, ".")
	ns, err1 := strconv.ParseInt(t, 10, 64)
	n, err2 := strconv.ParseUint(id, 10, 64)
	if !ok || err1 != nil || err2 != nil || n == 0 || n > math.MaxInt64 {
		return Cursor{}, fmt.Errorf("%w: cursor %q", ErrFilter, s)
	}
	return Cursor{Time: time.Unix(0, ns).UTC(), ID: n}, nil
}

// Page returns up to limit decisions selected by f, newest first (by the
// decision's time, then its ID), after the cursor. It walks an index on
// (filter column, time, ID): its cost grows with the page, not with the
// log.
func (s *Store) Page(ctx context.Context, f Filter, c Cursor, limit int) ([]Row, error) {
	return s.query(ctx, f, c, limit, false)
}

func (s *Store) query(ctx context.Context, f Filter, c Cursor, limit int, withData bool) ([]Row, error) {
	where, args, err := f.where()
	if err != nil {
		return nil, err
	}
	if c.ID > 0 {
		ns := c.Time.UnixNano()
		where += " AND (time_ns, id) < (?, ?)" // a row value: an index range
		args = append(args, ns, int64(c.ID))
	}
	cols := columns
	if withData {
		cols += ", data"
	}
	q := `SELECT ` + cols + ` FROM decisions WHERE ` + where + ` ORDER BY time_ns DESC, id DESC`
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var r Row
		var id, seq, leaf, tns, code, lat int64
		dest := []any{&id, &seq, &r.Log, &leaf, &tns, &r.Consumer, &r.Provider, &r.Service, &r.Method, &r.CKey, &r.Purpose,
			&r.LegalBasis, &r.Rule, &r.Allowed, &r.Reason, &code, &lat, &r.TraceID, &r.Subject}
		if withData {
			dest = append(dest, &r.Data)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		r.ID, r.Seq, r.Leaf, r.Time, r.Code, r.Latency = uint64(id), uint64(seq), uint64(leaf), time.Unix(0, tns).UTC(), uint32(code), time.Duration(lat)*time.Microsecond
		out = append(out, r)
	}
	return out, rows.Err()
}

// Each calls fn with every decision f selects, oldest first, with its
// stored bytes (for an export), reading pages of 1000 rows.
func (s *Store) Each(ctx context.Context, f Filter, fn func(Row) error) error {
	where, args, err := f.where()
	if err != nil {
		return err
	}
	var after int64
	for {
		rows, err := s.db.QueryContext(ctx, `SELECT `+columns+`, data FROM decisions WHERE `+where+` AND id > ? ORDER BY id LIMIT 1000`, append(args, after)...)
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		var page []Row
		for rows.Next() {
			var r Row
			var id, seq, leaf, tns, code, lat int64
			if err := rows.Scan(&id, &seq, &r.Log, &leaf, &tns, &r.Consumer, &r.Provider, &r.Service, &r.Method, &r.CKey, &r.Purpose,
				&r.LegalBasis, &r.Rule, &r.Allowed, &r.Reason, &code, &lat, &r.TraceID, &r.Subject, &r.Data); err != nil {
				rows.Close()
				return fmt.Errorf("console: %w", err)
			}
			r.ID, r.Seq, r.Leaf, r.Time, r.Code, r.Latency = uint64(id), uint64(seq), uint64(leaf), time.Unix(0, tns).UTC(), uint32(code), time.Duration(lat)*time.Microsecond
			page = append(page, r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		for _, r := range page {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(page) < 1000 {
			return nil
		}
		after = int64(page[len(page)-1].ID)
	}
}
