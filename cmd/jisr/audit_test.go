package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/highwayhash"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/auditor"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/demodata"
)

// auditFed is a federation run in-process from the same start functions as
// `jisr dev`, but with its parts in hand so a test can stop NATS, switch
// JetStream off and on, or stop the gateway alone. Only the civil registry
// provides (CNSS asks it), which is all the audit tests need.
type auditFed struct {
	g        *process.Env
	logs     *syncBuffer
	nats     *natsserver.Server
	natsOpts process.NATSOptions
	backend  *process.BackendNode
	gw       *process.GatewayNode
	adapters []*process.AdapterNode
	cnss     civilv1.CivilRegistryClient
	cnssConn *grpc.ClientConn
}

func startAuditFed(t *testing.T, dir string) *auditFed {
	t.Helper()
	return startAuditFedWith(t, dir, process.NATSOptions{Listen: "127.0.0.1:-1", Sync: "1s"})
}

func startAuditFedWith(t *testing.T, dir string, natsOpts process.NATSOptions) *auditFed {
	t.Helper()
	// Each federation has its own audit keys, so its own auditor's memory:
	// `audit verify` fails on a checkpoint seen of gw-1 under another key.
	t.Setenv("JISR_AUDIT_SEEN_DIR", filepath.Join(t.TempDir(), "seen"))
	f := &auditFed{logs: &syncBuffer{}, natsOpts: natsOpts}
	f.g = &process.Env{
		FederationPath: "../testdata/federation.yaml",
		CertsDir:       filepath.Join(dir, "certs"),
		DataDir:        dir,
		Log:            slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	fed, err := f.g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(f.g, fed); err != nil {
		t.Fatal(err)
	}
	f.startNATS(t)
	ctx := context.Background()
	if f.backend, err = process.StartBackend(ctx, f.g, process.BackendOptions{Member: "civil-registry", Listen: "127.0.0.1:0", Citizens: 200}); err != nil {
		t.Fatal(err)
	}
	f.startGateway(t)
	for _, m := range []string{"civil-registry", "cnss"} {
		o := process.AdapterOptions{Member: m, Listen: "127.0.0.1:0"}
		if m == "civil-registry" {
			o.Backend = f.backend.Addr
		}
		a, err := process.StartAdapter(ctx, f.g, o)
		if err != nil {
			t.Fatal(err)
		}
		f.adapters = append(f.adapters, a)
		if m == "cnss" {
			cc, err := grpc.NewClient(a.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close() })
			f.cnss, f.cnssConn = civilv1.NewCivilRegistryClient(cc), cc
		}
	}
	t.Cleanup(func() { f.stop(t) })
	cs, err := process.StartConsentService(ctx, f.g) // grants go to the consent service, apart from the gateway
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cs.Stop)
	return f
}

func (f *auditFed) startNATS(t *testing.T) {
	t.Helper()
	s, err := process.StartNATS(context.Background(), f.g, f.natsOpts)
	if err != nil {
		t.Fatal(err)
	}
	f.nats = s
	f.g.NATSURL = s.ClientURL()
	f.natsOpts.Listen = strings.TrimPrefix(s.ClientURL(), "tls://") // the same port after a restart
	if err := process.NATSInit(context.Background(), f.g, nil); err != nil {
		t.Fatal(err)
	}
}

func (f *auditFed) startGateway(t *testing.T) {
	t.Helper()
	gw, err := process.StartGateway(context.Background(), f.g, process.GatewayOptions{HTTPAddr: "127.0.0.1:0", Instance: "gw-1"})
	if err != nil {
		t.Fatalf("gateway: %v\n%s", err, f.logs.String())
	}
	f.gw = gw
}

func (f *auditFed) stopGateway(t *testing.T) {
	t.Helper()
	if f.gw == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.gw.Stop(ctx); err != nil {
		t.Errorf("gateway stop: %v", err)
	}
	f.gw = nil
}

func (f *auditFed) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, a := range f.adapters {
		_ = a.Stop(ctx)
	}
	f.adapters = nil
	f.stopGateway(t)
	if f.backend != nil {
		_ = f.backend.Stop(ctx)
		f.backend = nil
	}
	if f.nats != nil {
		f.nats.Shutdown()
		f.nats = nil
	}
}

// cli runs a jisr command in-process against this federation.
func (f *auditFed) cli(args ...string) (stdout, stderr string, err error) {
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(""))
	root.SetArgs(append([]string{"--federation", f.g.FederationPath, "--certs", f.g.CertsDir, "--data", f.g.DataDir,
		"--nats", f.g.NATSURL, "--log-level", "error"}, args...))
	err = root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func eidN(i int) string { return demodata.EID(demodata.DefaultSeed, i) }

func md(ctx context.Context, kv ...string) context.Context {
	return metadata.NewOutgoingContext(ctx, metadata.Pairs(kv...))
}

// auditRecords reads every record as the auditor.
func (f *auditFed) auditRecords(t *testing.T) []stream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	records, closeFn, err := auditorRecords(ctx, f.g)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	var out []stream.Msg
	if err := stream.Scan(ctx, records, stream.ScanOptions{}, func(m stream.Msg) error { out = append(out, recordsOf(m)...); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// recordsOf returns the records a stored message holds, each as a message
// with its batch's sequence and subject and the record's bytes (record
// format 2), or the message itself (format 1, or not a batch).
func recordsOf(m stream.Msg) []stream.Msg {
	_, _, batch, recs, err := record.Stored(m.Subject, m.Header, m.Data)
	if err != nil || !batch {
		return []stream.Msg{m}
	}
	out := make([]stream.Msg, len(recs))
	for i, data := range recs {
		out[i] = m
		out[i].Data = data
	}
	return out
}

func TestEveryQueryHasExactlyOneRecordWithoutEIDAndVerifies(t *testing.T) {
	f := startAuditFed(t, t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	fed, err := f.g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	keyer, err := f.g.Keyer()
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := dev.Consents(ctx, fed, keyer, f.gw.ConsentService(), []string{eidN(40), eidN(41), eidN(42)})
	if err != nil {
		t.Fatal(err)
	}
	tokenFor := map[string]string{}
	for _, d := range tokens {
		if d.Consumer == "cnss" && d.Provider == "civil-registry" && slices.Contains(d.Methods, "GetPerson") {
			tokenFor[d.Citizen] = d.Token
		}
	}
	type query struct {
		eid     string
		call    func(context.Context, string) error
		allowed bool
	}
	isAlive := func(purpose string) func(context.Context, string) error {
		return func(ctx context.Context, eid string) error {
			_, err := f.cnss.IsAlive(md(ctx, "jisr-purpose", purpose), &civilv1.IsAliveRequest{Eid: eid})
			return err
		}
	}
	getPerson := func(token string) func(context.Context, string) error {
		return func(ctx context.Context, eid string) error {
			_, err := f.cnss.GetPerson(md(ctx, "jisr-purpose", "amo-enrolment", "jisr-consent", token), &civilv1.GetPersonRequest{Eid: eid})
			return err
		}
	}
	var queries []query
	for i := range 30 { // a mandate: allowed without a token
		queries = append(queries, query{eidN(i), isAlive("pension-continuity"), true})
	}
	for i := 30; i < 35; i++ { // consent required, none given
		queries = append(queries, query{eidN(i), isAlive("amo-enrolment"), false})
	}
	for i := 35; i < 40; i++ { // no rule for this purpose
		queries = append(queries, query{eidN(i), isAlive("marketing"), false})
	}
	for i := 40; i < 43; i++ { // with the citizen's consent
		queries = append(queries, query{eidN(i), getPerson(tokenFor[eidN(i)]), true})
	}
	queries = append(queries, query{eidN(43), getPerson(tokenFor[eidN(40)]), false}) // another citizen's token

	var wg sync.WaitGroup
	for _, q := range queries {
		wg.Go(func() {
			err := q.call(ctx, q.eid)
			if (err == nil) != q.allowed {
				t.Errorf("a query: %v (want allowed %v)", err, q.allowed)
			}
		})
	}
	wg.Wait()

	msgs := f.auditRecords(t)
	if len(msgs) != len(queries) {
		t.Fatalf("%d records for %d queries", len(msgs), len(queries))
	}
	byCKey := map[string]*auditv1.Record{}
	keyer, _ = f.g.Keyer()
	for _, m := range msgs {
		r, err := record.Parse(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if byCKey[r.GetCkey()] != nil {
			t.Fatalf("two records about one query's citizen")
		}
		byCKey[r.GetCkey()] = r
	}
	for _, q := range queries {
		r := byCKey[keyer.CKey(q.eid)]
		if r == nil {
			t.Fatalf("no record for the query about %s", q.eid)
		}
		if (r.GetDecision() == auditv1.Decision_DECISION_ALLOWED) != q.allowed {
			t.Fatalf("record decision %v, query allowed %v", r.GetDecision(), q.allowed)
		}
		for _, m := range msgs { // no eID of the run in any record or subject
			if bytes.Contains(m.Data, []byte(q.eid)) || strings.Contains(m.Subject, q.eid) {
				t.Fatalf("a record carries the eID %s", q.eid)
			}
		}
	}
	if r := byCKey[keyer.CKey(eidN(40))]; r.GetTokenId() == "" || r.GetLegalBasis() != "consent" || len(r.GetFields()) == 0 {
		t.Fatalf("consent record %v", r)
	}
	if r := byCKey[keyer.CKey(eidN(0))]; r.GetLaw() == "" || r.GetLegalBasis() != "mandate" {
		t.Fatalf("mandate record %v", r)
	}

	// The auditor's tools see the same.
	out, _, err := f.cli("audit", "query", "--citizen", eidN(40))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "CivilRegistry/GetPerson") || strings.Contains(out, eidN(40)) {
		t.Fatalf("query --citizen:\n%s", out)
	}
	out, _, err = f.cli("audit", "query", "--consumer", "cnss", "--decision", "refused", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "\n"); n != 11 {
		t.Fatalf("%d refused records in JSON, want 11:\n%s", n, out)
	}
	var line struct {
		Seq    uint64
		Record map[string]any
	}
	if err := json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &line); err != nil || line.Record["decision"] != "DECISION_REFUSED" {
		t.Fatalf("JSON line %v: %v", line, err)
	}
	out, _, err = f.cli("audit", "tail", "-n", "3", "--follow=false")
	if err != nil || strings.Count(strings.TrimSpace(out), "\n") != 3 {
		t.Fatalf("tail: %v\n%s", err, out)
	}
	out, _, err = f.cli("audit", "verify")
	if err != nil || !strings.Contains(out, "OK:") {
		t.Fatalf("verify while running: %v\n%s", err, out)
	}

	// After the gateway stops, its final checkpoint covers every record.
	f.stopGateway(t)
	out, _, err = f.cli("audit", "verify", "-q")
	if err != nil || !strings.Contains(out, "OK:") {
		t.Fatalf("verify after stop: %v\n%s", err, out)
	}
	if row := logRow(out, "gw-1"); len(row) < 5 || row[1] != fmt.Sprint(len(queries)) || row[3] != fmt.Sprint(len(queries)) || row[4] != "0" {
		t.Fatalf("the final checkpoint does not cover every record:\n%s", out)
	}

	// An export verifies offline; a citizen's export is marked partial.
	export := filepath.Join(t.TempDir(), "audit.jsonl")
	if _, _, err := f.cli("audit", "export", "--out", export); err != nil {
		t.Fatal(err)
	}
	if out, _, err := f.cli("audit", "verify", "--file", export); err != nil || !strings.Contains(out, "OK:") {
		t.Fatalf("verify --file: %v\n%s", err, out)
	}
	partial := filepath.Join(t.TempDir(), "citizen.jsonl")
	if _, _, err := f.cli("audit", "export", "--citizen", eidN(0), "--out", partial); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(partial)
	if !bytes.Contains(b, []byte(`"partial":true`)) || bytes.Count(b, []byte(`"type":"record"`)) != 1 || bytes.Contains(b, []byte(eidN(0))) {
		t.Fatalf("partial export:\n%s", b)
	}
	if _, _, err := f.cli("audit", "verify", "--file", partial); err == nil {
		t.Fatal("a partial export verified as a whole")
	}
	// Editing the export is caught too.
	tampered := filepath.Join(t.TempDir(), "tampered.jsonl")
	lines := strings.Split(string(mustRead(t, export)), "\n")
	for i, l := range lines {
		if strings.Contains(l, `"type":"record"`) {
			lines = append(lines[:i:i], lines[i+1:]...) // drop the first record
			break
		}
	}
	if err := os.WriteFile(tampered, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, err := f.cli("audit", "verify", "--file", tampered); err == nil || !strings.Contains(out, "record 0") {
		t.Fatalf("verify of an export missing its first record: %v\n%s", err, out)
	}

	// No eID in any log line either.
	logs := f.logs.String()
	for _, q := range queries {
		if strings.Contains(logs, q.eid) {
			t.Fatalf("the logs contain the eID %s", q.eid)
		}
	}
}

// logRow returns the fields of a log's row in verify's report: log,
// records, checkpoints, signed size, not yet signed, duplicates, status.
func logRow(report, log string) []string {
	for _, l := range strings.Split(report, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == log {
			return f
		}
	}
	return nil
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJetStreamDownWithholdsRepliesAndServiceResumes(t *testing.T) {
	f := startAuditFed(t, t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	call := func(i int) error {
		_, err := f.cnss.IsAlive(md(ctx, "jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: eidN(i)})
		return err
	}
	var mu sync.Mutex
	var answered []int // citizens whose query got a reply with data
	note := func(i int, err error) {
		if err == nil {
			mu.Lock()
			answered = append(answered, i)
			mu.Unlock()
		}
	}
	for i := range 10 {
		if err := call(i); err != nil {
			t.Fatal(err)
		}
		note(i, nil)
	}
	js := f.nats.NATS()
	js.DisableJetStream()
	// The gateway says so: its consent state (the revocation watch) is gone.
	f.waitReadyz(t, http.StatusServiceUnavailable)
	for i := 10; i < 20; i++ {
		err := call(i)
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("query with JetStream down: %v, want Unavailable", err)
		}
		if !strings.Contains(err.Error(), "audit") {
			t.Fatalf("the refusal does not say the audit is unavailable: %v", err)
		}
	}
	// Bring JetStream back the way an operator would: restart the NATS
	// server on the same port and store (switching JetStream back on in a
	// live embedded server does not restore its account's streams). The
	// gateway, adapters and backend are not restarted: they reconnect and
	// the service resumes by itself.
	f.nats.Shutdown()
	f.startNATS(t)
	i := 100
	bustest.Eventually(t, 30*time.Second, func() error {
		if err := call(i); err != nil {
			i++
			return fmt.Errorf("service did not resume: %w\n%s", err, f.logs.String())
		}
		note(i, nil)
		return nil
	})
	f.waitReadyz(t, http.StatusOK)
	for i := 20; i < 40; i++ {
		err := call(i)
		if err != nil {
			t.Fatal(err)
		}
		note(i, err)
	}
	// Every reply released has its record; the log still verifies.
	keyer, _ := f.g.Keyer()
	have := map[string]bool{}
	for _, m := range f.auditRecords(t) {
		r, _ := record.Parse(m.Data)
		if r.GetDecision() == auditv1.Decision_DECISION_ALLOWED {
			have[r.GetCkey()] = true
		}
	}
	for _, i := range answered {
		if !have[keyer.CKey(eidN(i))] {
			t.Fatalf("a reply was released for citizen %d without a record", i)
		}
	}
	f.stopGateway(t)
	if out, _, err := f.cli("audit", "verify"); err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
}

// blkRecord is one message in a JetStream file store block:
// [4 length|header bit][8 seq][8 ts][2 subject length][subject][4 header length, headers][payload][8 checksum].
type blkRecord struct {
	off, size              int
	seq                    uint64
	subj                   string
	hdrOff, msgOff, msgEnd int
	hasHdr                 bool
}

func parseBlock(b []byte) []blkRecord {
	var out []blkRecord
	le := binary.LittleEndian
	for off := 0; off+22 <= len(b); {
		word := le.Uint32(b[off:])
		rl := int(word &^ (1 << 31))
		if rl < 30 || off+rl > len(b) {
			break
		}
		sl := int(le.Uint16(b[off+20:]))
		r := blkRecord{off: off, size: rl, seq: le.Uint64(b[off+4:]), subj: string(b[off+22 : off+22+sl]), hasHdr: word&(1<<31) != 0}
		p := off + 22 + sl
		r.hdrOff = p
		if r.hasHdr {
			p += 4 + int(le.Uint32(b[p:]))
		}
		r.msgOff, r.msgEnd = p, off+rl-8
		out = append(out, r)
		off += rl
	}
	return out
}

// reseal recomputes a record's checksum as the file store does (HighwayHash
// keyed with the stream name and block index), so JetStream itself accepts
// the edit: what a careful attacker with the disk would do.
func reseal(b []byte, r blkRecord, streamName string, block int) {
	key := sha256.Sum256(fmt.Appendf(nil, "%s-%d", streamName, block))
	h, _ := highwayhash.NewDigest64(key[:])
	h.Write(b[r.off+4 : r.off+20])
	h.Write([]byte(r.subj))
	if r.hasHdr {
		hl := int(binary.LittleEndian.Uint32(b[r.hdrOff:]))
		h.Write(b[r.hdrOff+4 : r.hdrOff+4+hl])
	}
	h.Write(b[r.msgOff:r.msgEnd])
	copy(b[r.msgEnd:r.msgEnd+8], h.Sum(nil))
}

func TestVerifyNamesARecordEditedOrDeletedOnDisk(t *testing.T) {
	for _, c := range []struct {
		name string
		want string
		edit func(t *testing.T, b []byte, target blkRecord) []byte
	}{
		{"edited and resealed", "altered: log gw-1, record 7", func(t *testing.T, b []byte, r blkRecord) []byte {
			i := bytes.Index(b[r.msgOff:r.msgEnd], []byte("pension-continuity"))
			if i < 0 {
				t.Fatal("purpose not found in the stored record")
			}
			copy(b[r.msgOff+i:], "income-verificatio") // same length: the reader sees another purpose
			reseal(b, r, subject.AuditStream, 1)
			return b
		}},
		{"one byte flipped", "missing: log gw-1, record 7", func(t *testing.T, b []byte, r blkRecord) []byte {
			b[r.msgOff+10] ^= 0x20 // JetStream drops the message whose checksum fails
			return b
		}},
		{"deleted", "missing: log gw-1, record 7", func(t *testing.T, b []byte, r blkRecord) []byte {
			return append(b[:r.off:r.off], b[r.off+r.size:]...)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startAuditFed(t, t.TempDir())
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			for i := range 12 {
				if _, err := f.cnss.IsAlive(md(ctx, "jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: eidN(i)}); err != nil {
					t.Fatal(err)
				}
			}
			f.stopGateway(t) // the final checkpoint covers all twelve
			storeDir := f.nats.NATS().JetStreamConfig().StoreDir
			f.nats.Shutdown()
			f.nats = nil

			dir := filepath.Join(storeDir, "$G", "streams", subject.AuditStream, "msgs")
			blk := filepath.Join(dir, "1.blk")
			b := mustRead(t, blk)
			recs := parseBlock(b)
			if len(recs) != 12 {
				t.Fatalf("%d messages in the block", len(recs))
			}
			b = c.edit(t, b, recs[7])
			if err := os.WriteFile(blk, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_ = os.Remove(filepath.Join(dir, "index.db")) // let JetStream rebuild its state from the blocks
			f.startNATS(t)

			out, _, err := f.cli("audit", "verify")
			if err == nil {
				t.Fatalf("verify passed on a tampered store:\n%s", out)
			}
			if !strings.Contains(out, c.want) || !strings.Contains(out, "FIRST BAD RECORD: 7") {
				t.Fatalf("verify does not name record 7:\n%s", out)
			}
		})
	}
}

func TestAuditCLIUsageErrors(t *testing.T) {
	f := &auditFed{g: &process.Env{FederationPath: "../testdata/federation.yaml", CertsDir: t.TempDir(), DataDir: t.TempDir(), NATSURL: "tls://127.0.0.1:1"}}
	for _, args := range [][]string{
		{"audit", "query", "--citizen", "not an eid"},
		{"audit", "query", "--decision", "maybe"},
		{"audit", "query", "--since", "yesterday-ish"},
		{"audit", "query", "--citizen", "AB1", "--ckey", "X"},
		{"audit", "tail", "-n", "-1"},
	} {
		_, _, err := f.cli(args...)
		var ue process.UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
		if err != nil && strings.Contains(err.Error(), "not an eid") {
			t.Errorf("%v: the error echoes the eID argument", args)
		}
	}
}

// waitReadyz waits until the gateway's /readyz answers with code.
func (f *auditFed) waitReadyz(t *testing.T, code int) {
	t.Helper()
	bustest.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + f.gw.Addr() + "/readyz")
		if err != nil {
			return fmt.Errorf("/readyz did not answer %d: %w", code, err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			return fmt.Errorf("/readyz did not answer %d: %s", code, resp.Status)
		}
		return nil
	})
}

// eraseAuditStreams is an insider with the NATS server's disk: it stops
// NATS, removes the audit and checkpoint streams from the JetStream store,
// starts NATS again and creates both streams again, empty (as the operator
// identity once the federation has one, else as the gateway).
func (f *auditFed) eraseAuditStreams(t *testing.T) {
	t.Helper()
	storeDir := f.nats.NATS().JetStreamConfig().StoreDir
	f.nats.Shutdown()
	f.nats = nil
	n := 0
	err := filepath.WalkDir(storeDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && filepath.Base(filepath.Dir(p)) == "streams" && (d.Name() == subject.AuditStream || d.Name() == subject.CheckpointStream) {
			n++
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil || n != 2 {
		t.Fatalf("erased %d streams: %v", n, err)
	}
	f.startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	acfg, ccfg, err := stream.StreamConfigs(stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"operator", "gateway"} {
		nc, src, err := f.g.Connect(ctx, id)
		if err != nil {
			continue
		}
		js, _ := jetstream.New(nc)
		_, err1 := js.CreateStream(ctx, acfg)
		_, err2 := js.CreateStream(ctx, ccfg)
		nc.Close()
		src.Close()
		if err1 == nil && err2 == nil {
			return
		}
	}
	t.Fatal("no identity could create the audit streams again")
}

func TestAnErasedLogIsRefusedAndVerifyNamesTheMissingRecords(t *testing.T) {
	dir := t.TempDir()
	f := startAuditFed(t, dir)
	seen := filepath.Join(t.TempDir(), "seen")
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	for i := range 9 {
		if _, err := f.cnss.IsAlive(md(ctx, "jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: eidN(i)}); err != nil {
			t.Fatal(err)
		}
	}
	f.stopGateway(t) // its final checkpoint covers the nine records
	trusted := process.TrustedCheckpointPath(dir, "gw-1")
	if b, err := os.ReadFile(trusted); err != nil || !strings.Contains(string(b), "/audit/gw-1\n9\n") {
		t.Fatalf("the gateway's trusted checkpoint: %v\n%s", err, b)
	}
	// The auditor verifies, and keeps what it saw.
	if out, _, err := f.cli("audit", "verify", "--seen-dir", seen); err != nil || !strings.Contains(out, "OK: 9 record(s)") {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	f.eraseAuditStreams(t)

	// The gateway refuses to append to the erased log.
	gw, err := process.StartGateway(ctx, f.g, process.GatewayOptions{HTTPAddr: "127.0.0.1:0", Instance: "gw-1"})
	if err == nil {
		f.gw = gw
		t.Fatal("the gateway started on an erased audit log")
	}
	if !errors.Is(err, audit.ErrNotExtended) || !strings.Contains(err.Error(), "log gw-1") ||
		!strings.Contains(err.Error(), "covers 9 records, the stored log holds 0: records 0 to 8 are missing") {
		t.Fatalf("gateway start: %v, want ErrNotExtended naming the log and the sizes", err)
	}
	// Without memory of what was there, the empty streams verify: that is
	// what the trusted and the seen checkpoints are for.
	if out, _, err := f.cli("audit", "verify", "--seen-dir", "none"); err != nil {
		t.Fatalf("verify of empty streams: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"audit", "verify", "--seen-dir", "none", "--trusted", trusted},
		{"audit", "verify", "--seen-dir", seen},
	} {
		out, _, err := f.cli(args...)
		if !errors.Is(err, auditor.ErrVerifyFailed) {
			t.Fatalf("%v passed on an erased log:\n%s", args, out)
		}
		if !strings.Contains(out, "not-extended: log gw-1: records 0 to 8 are missing") {
			t.Fatalf("%v does not name the missing records:\n%s", args, out)
		}
	}
}

func TestAForgedMessageOnTheAuditSubjectIsNamedAndTheGatewayStarts(t *testing.T) {
	f := startAuditFed(t, t.TempDir())
	seen := filepath.Join(t.TempDir(), "seen")
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	call := func(i int) {
		t.Helper()
		if _, err := f.cnss.IsAlive(md(ctx, "jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: eidN(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		call(i)
	}
	// A message that is not a record, on the log's own subject (what a
	// forged reply of the gateway once stored there).
	nc, src, err := f.g.Connect(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	defer nc.Close()
	keyer, _ := f.g.Keyer()
	subj, _ := record.Subject("gw-1", keyer.CKey(eidN(1)))
	js, _ := jetstream.New(nc)
	ack, err := js.Publish(ctx, subj, []byte("not a record"))
	if err != nil {
		t.Fatal(err)
	}
	// And one on its batch subject (record format 2) that is not a batch.
	bsubj, _ := record.BatchSubject("gw-1")
	back, err := js.Publish(ctx, bsubj, []byte("not a batch"))
	if err != nil {
		t.Fatal(err)
	}
	f.stopGateway(t)
	f.startGateway(t) // it starts, and skips the messages
	for _, seq := range []uint64{ack.Sequence, back.Sequence} {
		if !strings.Contains(f.logs.String(), fmt.Sprintf("seq=%d", seq)) {
			t.Fatalf("the gateway did not log the forged message's sequence %d:\n%s", seq, f.logs.String())
		}
	}
	for i := 3; i < 6; i++ {
		call(i)
	}
	f.stopGateway(t)
	want := fmt.Sprintf("not-a-record: log gw-1 (audit sequence %d)", ack.Sequence)
	out, _, err := f.cli("audit", "verify", "--seen-dir", seen)
	if wantBatch := fmt.Sprintf("not-a-record: log gw-1 (audit sequence %d)", back.Sequence); !strings.Contains(out, wantBatch) {
		t.Fatalf("verify does not name the forged batch %q:\n%s", wantBatch, out)
	}
	if err != nil || !strings.Contains(out, want) || logRow(out, "gw-1")[1] != "6" {
		t.Fatalf("verify: %v, want OK with six records and a warning %q:\n%s", err, want, out)
	}
	if out, _, err := f.cli("audit", "verify", "--seen-dir", seen, "--strict"); !errors.Is(err, auditor.ErrVerifyFailed) || !strings.Contains(out, want) {
		t.Fatalf("verify --strict: %v\n%s", err, out)
	}
}

// An insider erases the log, the gateway's trusted checkpoint and its audit
// key: the gateway restarts with a new key on a new, empty log, and keeps
// writing. The auditor's memory still holds the checkpoint it saw of gw-1,
// signed by the old key: verify fails, naming the log whose key changed,
// instead of passing the new log because the old key is gone.
func TestALogSeenBeforeUnderAnotherKeyFailsVerify(t *testing.T) {
	dir := t.TempDir()
	f := startAuditFed(t, dir)
	seen := filepath.Join(t.TempDir(), "seen")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	isAlive := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := f.cnss.IsAlive(md(ctx, "jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: eidN(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	isAlive(3)
	f.stopGateway(t)
	if out, _, err := f.cli("audit", "verify", "--seen-dir", seen); err != nil || !strings.Contains(out, "OK: 3 record(s)") {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	f.eraseAuditStreams(t)
	for _, p := range []string{process.TrustedCheckpointPath(dir, "gw-1"), filepath.Join(process.AuditKeyDir(f.g.CertsDir), "gw-1.key"), filepath.Join(process.AuditKeyDir(f.g.CertsDir), "gw-1.pub")} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	f.startGateway(t) // a new key, a new log
	// The adapters reconnect to the restarted NATS server in their own time.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := f.cnss.IsAlive(md(ctx, "jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: eidN(0)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer after the restart: %v", err)
		}
	}
	isAlive(4)
	f.stopGateway(t)
	// Without the auditor's memory, the new log verifies on its own.
	if out, _, err := f.cli("audit", "verify", "--seen-dir", "none"); err != nil {
		t.Fatalf("verify of the new log: %v\n%s", err, out)
	}
	out, _, err := f.cli("audit", "verify", "--seen-dir", seen)
	if err == nil {
		t.Fatalf("verify passed a log seen before under another key:\n%s", out)
	}
	if !strings.Contains(err.Error(), "gw-1") || !strings.Contains(err.Error(), "key") {
		t.Fatalf("verify does not say which log's key changed: %v\n%s", err, out)
	}
}

// The same insider, but the gateway begins again under another instance
// name, and the old log's key is removed from the trusted keys: the log the
// auditor saw has vanished, keys and all. Verify fails, naming it.
func TestALogSeenBeforeWhoseKeyIsGoneFailsVerify(t *testing.T) {
	dir := t.TempDir()
	f := startAuditFed(t, dir)
	seen := filepath.Join(t.TempDir(), "seen")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := f.cnss.IsAlive(md(ctx, "jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: eidN(0)}); err != nil {
		t.Fatal(err)
	}
	f.stopGateway(t)
	if out, _, err := f.cli("audit", "verify", "--seen-dir", seen); err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	f.eraseAuditStreams(t)
	for _, p := range []string{process.TrustedCheckpointPath(dir, "gw-1"), filepath.Join(process.AuditKeyDir(f.g.CertsDir), "gw-1.key"), filepath.Join(process.AuditKeyDir(f.g.CertsDir), "gw-1.pub")} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	gw, err := process.StartGateway(ctx, f.g, process.GatewayOptions{HTTPAddr: "127.0.0.1:0", Instance: "gw-2"})
	if err != nil {
		t.Fatal(err)
	}
	f.gw = gw
	f.stopGateway(t)
	if out, _, err := f.cli("audit", "verify", "--seen-dir", "none"); err != nil {
		t.Fatalf("verify without memory: %v\n%s", err, out)
	}
	out, _, err := f.cli("audit", "verify", "--seen-dir", seen)
	if err == nil {
		t.Fatalf("verify passed after a log seen before vanished with its key:\n%s", out)
	}
	if !strings.Contains(err.Error(), "gw-1") {
		t.Fatalf("verify does not name the vanished log: %v\n%s", err, out)
	}
}

// auditorRecords opens the audit stream as the auditor identity would.
func auditorRecords(ctx context.Context, g *process.Env) (jetstream.Stream, func(), error) {
	st, closeFn, err := process.AuditorStreams(ctx, g)
	if err != nil {
		return nil, nil, err
	}
	return st.Records, closeFn, nil
}
