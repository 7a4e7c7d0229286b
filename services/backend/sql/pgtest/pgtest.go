// Package pgtest starts a throwaway PostgreSQL server for tests: initdb in a
// fresh temporary directory, the server on a Unix socket only (no TCP port,
// so parallel runs never collide), trust authentication for the test's own
// user, stopped and removed at the test's end.
//
// It finds PostgreSQL's binaries in $JISR_PG_BIN, on the PATH, or under
// /usr/lib/postgresql/*/bin (Debian's postgresql package; .ci/run installs
// it). PostgreSQL refuses to run as root, so under root the server runs as
// the "postgres" system user the package creates.
//
// Invariant: a test that asks for PostgreSQL gets a running server or
// fails; it is never skipped.
package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running throwaway PostgreSQL server.
type Server struct {
	// URL connects to the "postgres" database as the superuser "jisr".
	URL    string
	dir    string
	cmd    *exec.Cmd
	log    *syncBuffer
	t      testing.TB
	exited chan error
}

// Bin finds the directory of PostgreSQL's binaries.
func Bin() (string, error) {
	if d := os.Getenv("JISR_PG_BIN"); d != "" {
		return d, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL not found ($JISR_PG_BIN, PATH, /usr/lib/postgresql/*/bin): install it (apt-get install postgresql; .ci/run does)")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Start starts a server for t, stopped at t's cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Bin()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir(): its parent is private to root, and under root the
	// server runs as the postgres user, who must reach its directory.
	dir, err := os.MkdirTemp("", "jisr-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{dir: dir, log: &syncBuffer{}, t: t}
	t.Cleanup(func() { s.Stop(); os.RemoveAll(dir) })
	cred, err := credential(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "jisr", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=50")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	s.URL = fmt.Sprintf("host=%s port=5432 user=jisr dbname=postgres sslmode=disable", dir)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.URL)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			break
		}
		select {
		case werr := <-exited:
			s.cmd = nil
			t.Fatalf("postgres exited: %v\n%s", werr, s.log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres did not accept connections within 60s: %v\n%s", err, s.log)
		}
	}
	s.exited = exited
	return s
}

// Stop stops the server (fast shutdown) and waits for it; safe to call twice.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Exec runs SQL statements (schema, data) as the superuser.
func (s *Server) Exec(sqls ...string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range sqls {
		if _, err := conn.Exec(ctx, q); err != nil {
			s.t.Fatalf("%s: %v", q, err)
		}
	}
}

// credential is the identity the server runs as: ours, or the postgres
// user's under root (dir is handed to it).
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user to run it as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// syncBuffer is the server's log, written by exec's copier while a failing
// test may read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
