//go:build spire

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/status"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// spireTTL is the X.509-SVID lifetime the test registers: SPIRE's agent
// renews an SVID at half its life, so every identity rotates every ~15 s.
const spireTTL = 30

// spire is a SPIRE server and agent, the real binaries (make spire), on
// loopback and unix sockets in a temporary directory.
type spire struct {
	bin, dir   string
	serverSock string
	agentSock  string
	agentID    string
	procs      []*exec.Cmd
	serverLog  *bytes.Buffer
	agentLog   *bytes.Buffer
}

func spireBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("JISR_SPIRE_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin")
	}
	for _, b := range []string{"spire-server", "spire-agent"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("%s not found in %s: run `make spire` (or make test-spire)", b, bin)
		}
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *spire) start(t *testing.T, args ...string) *bytes.Buffer {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(s.bin, args[0]), args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.procs = append(s.procs, cmd)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", args[0], out.String())
		}
	})
	return &out
}

func (s *spire) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(s.bin, args[0]), args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func startSPIRE(t *testing.T, td string) *spire {
	t.Helper()
	// Unix socket paths are short: not under t.TempDir's long name.
	dir, err := os.MkdirTemp("", "jisr-spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &spire{bin: spireBin(t), dir: dir, serverSock: filepath.Join(dir, "server.sock"), agentSock: filepath.Join(dir, "agent.sock")}
	port := freePort(t)
	serverConf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "INFO"
  ca_key_type = "ec-p256"
  ca_ttl = "24h"
  default_x509_svid_ttl = "%ds"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`, port, s.serverSock, td, filepath.Join(dir, "server"), spireTTL, filepath.Join(dir, "server", "datastore.sqlite3"))
	if err := os.WriteFile(filepath.Join(dir, "server.conf"), []byte(serverConf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.serverLog = s.start(t, "spire-server", "run", "-config", filepath.Join(dir, "server.conf"))
	bustest.Eventually(t, 60*time.Second, func() error {
		_, err := exec.Command(filepath.Join(s.bin, "spire-server"), "healthcheck", "-socketPath", s.serverSock).CombinedOutput()
		return err
	})
	out := s.run(t, "spire-server", "token", "generate", "-socketPath", s.serverSock, "-ttl", "600")
	m := regexp.MustCompile(`Token: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no token in %q", out)
	}
	s.agentID = fmt.Sprintf("spiffe://%s/spire/agent/join_token/%s", td, m[1])
	agentConf := fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = %q
  insecure_bootstrap = true
  join_token = %q
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(dir, "agent"), port, s.agentSock, td, m[1])
	if err := os.WriteFile(filepath.Join(dir, "agent.conf"), []byte(agentConf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.agentLog = s.start(t, "spire-agent", "run", "-config", filepath.Join(dir, "agent.conf"))
	bustest.Eventually(t, 60*time.Second, func() error {
		_, err := exec.Command(filepath.Join(s.bin, "spire-agent"), "healthcheck", "-socketPath", s.agentSock).CombinedOutput()
		return err
	})
	return s
}

// TestSPIREFederation runs the federation on a real SPIRE: the registration
// entries are `jisr spire entries`' (unix selector: this test's uid, so the
// one test process receives every SVID and each component keeps its own by
// SPIFFE ID; the gateway's process holds /gateway and /consent). Every
// component takes its SVID from the Workload API; the NATS server's
// configuration names no certificate file and refuses the dev CA's SVIDs.
// 16 callers query through the cnss adapter while SPIRE rotates every SVID
// three times (30-second SVIDs), so that every connection outlives the SVID
// it was opened with and is closed and reopened: no call fails, every
// rotation is logged, and every reply has its audit record.
func TestSPIREFederation(t *testing.T) {
	dir := t.TempDir()
	fedPath := "../testdata/federation.yaml"
	g := &process.Env{FederationPath: fedPath}
	fed, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	sp := startSPIRE(t, fed.TrustDomain.Name())

	// The entries, from `jisr spire entries`, loaded into the server.
	entries, err := runJisrStdout(t, "--federation", fedPath, "spire", "entries", "--selectors", "unix",
		"--unix-uid", fmt.Sprint(os.Getuid()), "--parent", sp.agentID, "--x509-ttl", fmt.Sprint(spireTTL))
	if err != nil {
		t.Fatal(err)
	}
	entriesFile := filepath.Join(dir, "entries.json")
	if err := os.WriteFile(entriesFile, []byte(entries), 0o600); err != nil {
		t.Fatal(err)
	}
	sp.run(t, "spire-server", "entry", "create", "-socketPath", sp.serverSock, "-data", entriesFile)
	shown := sp.run(t, "spire-server", "entry", "show", "-socketPath", sp.serverSock)
	want := append(fed.Identities(), fed.ID(natsconf.AuditOperator))
	for _, id := range want {
		if !strings.Contains(shown, id.String()) {
			t.Fatalf("SPIRE has no entry for %s:\n%s", id, shown)
		}
	}
	endpoint := "unix://" + sp.agentSock
	// The agent serves an SVID for every identity once it has synced.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	bustest.Eventually(t, 90*time.Second, func() error {
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		defer fcancel()
		svids, err := workloadapi.FetchX509SVIDs(fctx, workloadapi.WithAddr(endpoint))
		if err != nil {
			return err
		}
		served := map[string]bool{}
		for _, s := range svids {
			served[s.ID.String()] = true
		}
		for _, id := range want {
			if !served[id.String()] {
				return fmt.Errorf("the agent does not serve %s yet", id)
			}
		}
		return nil
	})

	t.Setenv(svid.EndpointSocketEnv, endpoint)
	monitor := freePort(t) // the NATS server's monitoring port, for jisr status
	// NATS, nats init, backend, gateway, consent service, adapters: all from the Workload API.
	f := startAuditFedWith(t, dir, process.NATSOptions{Listen: "127.0.0.1:-1", Sync: "1s", HTTPPort: monitor})

	// The NATS server's configuration names no file; it trusts SPIRE's
	// bundle only: the dev CA's SVIDs (written by certs init) are refused.
	conf, err := os.ReadFile(f.nats.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(conf, []byte("cert_file")) || bytes.Contains(conf, []byte("ca_file")) {
		t.Fatalf("the NATS configuration names certificate files:\n%s", conf)
	}
	devSrc, err := svid.NewFileSource(ctx, filepath.Join(f.g.CertsDir, "svid", "member-cnss.pem"), filepath.Join(f.g.CertsDir, "svid", "member-cnss.key"), svid.BundlePath(f.g.CertsDir))
	if err != nil {
		t.Fatal(err)
	}
	defer devSrc.Close()
	if nc, err := bus.Connect(ctx, bus.Config{URL: f.g.NATSURL, Identity: "cnss", Source: devSrc, ServerID: fed.ID("nats")},
		bus.WithNATSOptions(nats.MaxReconnects(0), nats.Timeout(3*time.Second))); err == nil {
		nc.Close()
		t.Fatal("NATS accepted an SVID of the dev CA under SPIRE")
	}

	// Load across rotations.
	const callers = 16
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var kindsMu sync.Mutex
	kinds := map[string]int{} // failed calls by code and message
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				qctx, qcancel := context.WithTimeout(ctx, 20*time.Second)
				began := time.Now()
				_, err := f.cnss.IsAlive(md(qctx, "jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: eidN((c*1000 + i) % 200)})
				qcancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					kindsMu.Lock()
					kinds[status.Code(err).String()+": "+status.Convert(err).Message()]++
					kindsMu.Unlock()
					t.Logf("call %d of caller %d, sent %s, failed after %s: %v", i, c, began.UTC().Format("15:04:05.000"), time.Since(began).Round(time.Millisecond), err)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	// Every hub identity and the adapters rotate at least three times: SPIRE
	// renews at half-life, so by the third renewal the SVID each connection
	// was opened with has expired, and the NATS server has closed the
	// connection (a connection lasts no longer than its SVID): the clients
	// reconnect, with their current SVID, under load.
	count := func(id string) int {
		n := 0
		for _, line := range strings.Split(f.logs.String(), "\n") {
			if strings.Contains(line, "SVID rotated by the Workload API") && strings.Contains(line, "spiffe_id="+id+" ") {
				n++
			}
		}
		return n
	}
	ids := []string{fed.ID("nats").String(), fed.ID("gateway").String(), fed.ID("consent").String(), "spiffe://jisr.internal/member/cnss", "spiffe://jisr.internal/member/civil-registry"}
	bustest.Eventually(t, 4*time.Minute, func() error {
		for _, id := range ids {
			if n := count(id); n < 3 {
				return fmt.Errorf("%s rotated %d times", id, n)
			}
		}
		return nil
	})
	close(stop)
	wg.Wait()
	t.Logf("%d calls succeeded, %d failed, across rotations %v", ok.Load(), failed.Load(), func() []int {
		var out []int
		for _, id := range ids {
			out = append(out, count(id))
		}
		return out
	}())
	n := 0
	for _, line := range strings.Split(f.logs.String(), "\n") {
		if n < 80 && (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || strings.Contains(line, "reconnected to NATS") || strings.Contains(line, "renewed SVID")) {
			t.Log(line)
			n++
		}
	}
	reconnects := strings.Count(f.logs.String(), "reconnected to NATS")
	t.Logf("%d reconnections with a renewed SVID", reconnects)
	if reconnects == 0 {
		t.Fatal("no connection outlived its first SVID: the test did not exercise the expiry of a connection's SVID")
	}
	if ok.Load() == 0 {
		t.Fatal("no call made")
	}
	// Across the rotations no call fails: not because of the audit log (a
	// group commit whose acknowledgement was lost with a connection is
	// republished under the same Nats-Msg-Id, gateway/audit), nor because a
	// caller's, the gateway's or a provider's connection was reopened (each
	// connection reconnects on its own, staggered, before its SVID expires,
	// once its calls in flight have ended and the requests it received are
	// answered — its responders stop receiving first — and a request that
	// found no responder meanwhile is asked again, bus).
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed across the %d reconnections: %v (first: %v)", n, ok.Load()+n, reconnects, kinds, firstErr.Load())
	}
	// Service resumes: after the reconnections every call succeeds.
	for i := range 50 {
		qctx, qcancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := f.cnss.IsAlive(md(qctx, "jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: eidN(i)})
		qcancel()
		if err != nil {
			t.Fatalf("after the rotations, call %d: %v", i, err)
		}
		ok.Add(1)
	}
	// jisr status, as the operator, shows each connected member's SVID
	// expiry: the SPIRE SVID (30 s) its connection presented, read from the
	// NATS server, although the operator's Workload API serves no member's.
	js, _ := runJisrStdout(t, "--federation", fedPath, "--certs", f.g.CertsDir, "--nats", f.g.NATSURL,
		"status", "--json", "--monitor", fmt.Sprintf("http://127.0.0.1:%d", monitor))
	var hub process.Status
	if err := json.Unmarshal([]byte(js), &hub); err != nil {
		t.Fatalf("jisr status --json: %v\n%s", err, js)
	}
	shownMembers := 0
	for _, m := range hub.Members {
		if m.Member != "cnss" && m.Member != "civil-registry" {
			continue
		}
		shownMembers++
		if m.SVIDExpires == nil || !strings.HasPrefix(m.SVIDSource, "connection on ") ||
			!m.SVIDExpires.After(time.Now()) || m.SVIDExpires.After(time.Now().Add((spireTTL+5)*time.Second)) {
			t.Fatalf("jisr status: member %s: SVID expiry %v from %q, want the %d-second SPIRE SVID its connection presented\n%s", m.Member, m.SVIDExpires, m.SVIDSource, spireTTL, js)
		}
		t.Logf("jisr status: member %s connected to %v, SVID expires %s (%s)", m.Member, m.Connected, m.SVIDExpires.Format(time.RFC3339), m.SVIDSource)
	}
	if shownMembers != 2 {
		t.Fatalf("jisr status shows %d of the 2 connected members:\n%s", shownMembers, js)
	}
	// No reply without its record; a record without a reply only for a call
	// that failed (its acknowledgement was lost with the connection).
	if n := int64(len(f.auditRecords(t))); n < ok.Load() || n > ok.Load()+failed.Load() {
		t.Fatalf("%d audit records for %d replies and %d failed calls", n, ok.Load(), failed.Load())
	}
}
