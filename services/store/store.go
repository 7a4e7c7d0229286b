package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/jisr-bus/jisr/services/demodata"
)

// Spec describes one ministry's store.
type Spec struct {
	Name    string
	Version int
	Schema  []string          // CREATE statements
	Inserts map[string]string // statement name → INSERT
	// Seed writes one citizen's rows; block holds the citizen's block
	// (its household and neighbours), for rows that need both.
	Seed func(ins map[string]*sql.Stmt, c *demodata.Citizen, block []demodata.Citizen) error
}

// Config holds what Open requires.
type Config struct {
	// Path is the SQLite file; its directory is created if missing.
	Path string
	// Spec is the ministry's store.
	Spec Spec
}

type options struct {
	citizens int
	seed     uint64
	progress func(done, total int)
	log      *slog.Logger
}

// Option configures Open with an optional setting.
type Option func(*options)

// WithCitizens sets the population (default 10,000; rounded up to blocks of four).
func WithCitizens(n int) Option { return func(o *options) { o.citizens = n } }

// WithSeed sets the generator seed (default demodata.DefaultSeed).
func WithSeed(s uint64) Option { return func(o *options) { o.seed = s } }

// WithProgress is called while seeding.
func WithProgress(f func(done, total int)) Option { return func(o *options) { o.progress = f } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// ErrConfig reports a missing Config field; the message names it.
var ErrConfig = errors.New("store: invalid configuration")

// ErrBadPopulation is returned for a population below one block.
var ErrBadPopulation = errors.New("store: the population must be at least 4 citizens")

// Open opens the store at path, seeding it first when it is missing or was
// seeded for another schema version, seed or population.
func Open(ctx context.Context, cfg Config, opts ...Option) (*sql.DB, error) {
	switch {
	case cfg.Path == "":
		return nil, fmt.Errorf("%w: Path is required", ErrConfig)
	case cfg.Spec.Name == "":
		return nil, fmt.Errorf("%w: Spec.Name is required", ErrConfig)
	}
	path, spec := cfg.Path, cfg.Spec
	o := options{citizens: 10000, seed: demodata.DefaultSeed, log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.citizens < 4 {
		return nil, ErrBadPopulation
	}
	o.citizens = demodata.Population(o.citizens)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if !current(path, spec, o) {
		start := time.Now()
		o.log.Info("seeding store", "store", spec.Name, "citizens", o.citizens, "path", path)
		if err := seed(ctx, path, spec, o); err != nil {
			return nil, fmt.Errorf("store %s: seeding: %w", spec.Name, err)
		}
		o.log.Info("store seeded", "store", spec.Name, "took", time.Since(start).Round(time.Millisecond))
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=query_only(1)&_pragma=mmap_size(1073741824)&_pragma=cache_size(-16000)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// current reports whether path holds this spec's data for o.
func current(path string, spec Spec, o options) bool {
	if _, err := os.Stat(path); err != nil {
		return false
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return false
	}
	defer db.Close()
	var version, citizens int
	var seed int64
	err = db.QueryRow("SELECT schema_version, seed, citizens FROM jisr_meta").Scan(&version, &seed, &citizens)
	return err == nil && version == spec.Version && uint64(seed) == o.seed && citizens == o.citizens
}

func seed(ctx context.Context, path string, spec Spec, o options) (err error) {
	tmp := path + ".seeding"
	os.Remove(tmp)
	db, err := sql.Open("sqlite", "file:"+tmp+"?_pragma=journal_mode(OFF)&_pragma=synchronous(OFF)")
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	defer func() {
		db.Close()
		if err != nil {
			os.Remove(tmp)
		}
	}()
	schema := append([]string{"CREATE TABLE jisr_meta (schema_version INTEGER, seed INTEGER, citizens INTEGER, seeded_at TEXT)"}, spec.Schema...)
	for _, s := range schema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	ins := map[string]*sql.Stmt{}
	for name, q := range spec.Inserts {
		if ins[name], err = tx.PrepareContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	blocks := demodata.Blocks(o.citizens)
	for b := 0; b < blocks; b++ {
		if b%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if o.progress != nil {
				o.progress(b*4, o.citizens)
			}
		}
		blk := demodata.Block(o.seed, b)
		for k := range blk {
			if err := spec.Seed(ins, &blk[k], blk[:]); err != nil {
				return err
			}
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO jisr_meta VALUES (?, ?, ?, ?)", spec.Version, int64(o.seed), o.citizens, time.Now().UTC().Format(time.RFC3339)); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if o.progress != nil {
		o.progress(o.citizens, o.citizens)
	}
	if err := db.Close(); err != nil {
		return err
	}
	// Remove a stale WAL of the store being replaced before the rename.
	os.Remove(path + "-wal")
	os.Remove(path + "-shm")
	return os.Rename(tmp, path)
}

// Date formats a demo date as stored (ISO 8601); the zero date is NULL.
func Date(d demodata.Date) any {
	if d.Y == 0 {
		return nil
	}
	return d.String()
}

// digits reads a run of ASCII digits (the stored dates' YYYY-MM-DD
// without fmt, which allocates).
func digits(s string) (int32, bool) {
	var n int32
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int32(s[i]-'0')
	}
	return n, true
}

// Int reads a stored integer written as decimal text (a column packed into
// a text row): an optional minus sign and digits.
func Int(s string) (int64, bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// ParseDate reads a stored date.
func ParseDate(s sql.NullString) (y, m, d int32) {
	if !s.Valid {
		return 0, 0, 0
	}
	if v := s.String; len(v) == 10 && v[4] == '-' && v[7] == '-' {
		y, ok1 := digits(v[0:4])
		m, ok2 := digits(v[5:7])
		d, ok3 := digits(v[8:10])
		if ok1 && ok2 && ok3 {
			return y, m, d
		}
	}
	return scanDate(s.String)
}

// scanDate reads any other form as ParseDate always did (apart, so that its
// variables escape to the heap only on this path).
func scanDate(s string) (y, m, d int32) {
	fmt.Sscanf(s, "%d-%d-%d", &y, &m, &d)
	return y, m, d
}
