//go:build postgres

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/services/backend/sql/pgtest"
)

// The onboarding tour of docs/onboarding.md, whole: a fifth member, justice,
// joins a running `jisr dev` with no rebuild and no restart. Its service
// (jisr.justice.v1.CriminalRecord, not linked into jisr) comes from its
// descriptor set, named with its digest in the federation file; the
// version is signed and published; the gateway, the NATS server and CNSS's
// adapter take it while they run; justice's adapter starts, in front of
// `jisr backend sql` over PostgreSQL; CNSS then asks HasConviction through
// its own, unrestarted adapter, and `jisr services --as cnss` shows the new
// service after and not before.
func TestOnboardingTourJusticeFromPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	member := "../../deploy/members/justice/"
	schema, err := os.ReadFile(member + "justice.sql")
	if err != nil {
		t.Fatal(err)
	}
	f := startDev(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("jisr dev's log:\n%s", f.logs.String())
		}
	})
	convicted, clean := f.demo.Citizens[0].EID, f.demo.Citizens[1].EID
	pg.Exec(string(schema), fmt.Sprintf("INSERT INTO justice.record (eid, convictions) VALUES ('%s', 2), ('%s', 0)", convicted, clean))
	t.Setenv("JISR_JUSTICE_DATABASE_URL", pg.URL)

	dir := t.TempDir()
	g := f.g
	run := func(fedPath string, args ...string) string {
		t.Helper()
		var out bytes.Buffer
		root := newRootCmd()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--federation", fedPath, "--certs", g.CertsDir, "--nats", f.demo.Endpoints["nats"], "--log-level", "error"}, args...))
		if err := root.Execute(); err != nil {
			t.Fatalf("jisr %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	before := run(g.FederationPath, "services", "--as", "cnss")
	if strings.Contains(before, "CriminalRecord") {
		t.Fatalf("before the tour cnss may call:\n%s", before)
	}

	// 1. Its descriptor set beside the new federation file, named there with
	// its digest; its member and its rule added.
	set, err := os.ReadFile(member + "justice.binpb")
	if err != nil {
		t.Fatal(err)
	}
	copyDescriptorSets(t, g.FederationPath, dir) // the reference ministries'
	for _, name := range []string{"justice.binpb", "justice.yaml"} {
		b, err := os.ReadFile(member + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base, err := os.ReadFile(g.FederationPath)
	if err != nil {
		t.Fatal(err)
	}
	fedPath := filepath.Join(dir, "federation.yaml")
	if err := os.WriteFile(fedPath, addJustice(t, base, descset.Digest(set)), 0o644); err != nil {
		t.Fatal(err)
	}
	// 2. Its SVID (jisr certs init issues what is missing for the new file).
	g1 := &process.Env{FederationPath: fedPath, CertsDir: g.CertsDir, NATSURL: f.demo.Endpoints["nats"], Log: slog.New(slog.DiscardHandler)}
	fed1, err := g1.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(g1, fed1); err != nil {
		t.Fatal(err)
	}
	// 3. Signed (the bundle carries the descriptor set) and published.
	bundle := filepath.Join(dir, "v1.json")
	run(fedPath, "federation", "sign", "--version", "1", "-o", bundle)
	if d := run(g.FederationPath, "federation", "diff", g.FederationPath, bundle); !strings.Contains(d, "justice") {
		t.Fatalf("diff:\n%s", d)
	}
	run(g.FederationPath, "federation", "publish", bundle)
	// The NATS server applies the version from its watch, a moment after
	// the publication: justice may connect once it has (an adapter whose
	// first connection is refused exits, as it should).
	bustest.Eventually(t, 30*time.Second, func() error {
		cctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		nc, src, err := g1.Connect(cctx, "justice", nats.MaxReconnects(0))
		if err != nil {
			return err
		}
		nc.Close()
		src.Close()
		return nil
	})

	// 4. Its backend, `jisr backend sql`, and its adapter, as processes of
	// their own would run them.
	backend, adapterAddr := loopbackAddr(t), loopbackAddr(t)
	background(t, fedPath, g, f.demo.Endpoints["nats"], "backend", "sql", "--config", filepath.Join(dir, "justice.yaml"), "--listen", backend)
	background(t, fedPath, g, f.demo.Endpoints["nats"], "adapter", "--member", "justice", "--listen", adapterAddr, "--backend", backend)

	// 5. CNSS asks through its running adapter: the predicate's answer comes
	// from PostgreSQL.
	svcs, err := descset.Parse(set)
	if err != nil {
		t.Fatal(err)
	}
	md := svcs[0].Methods().ByName("HasConviction")
	ask := func(eid string) (bool, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", "pension-continuity"))
		req := dynamicpb.NewMessage(md.Input())
		req.Set(md.Input().Fields().ByName("eid"), protoreflect.ValueOfString(eid))
		resp := dynamicpb.NewMessage(md.Output())
		if err := f.dial(t, "cnss").Invoke(ctx, "/jisr.justice.v1.CriminalRecord/HasConviction", req, resp); err != nil {
			return false, err
		}
		return resp.Get(md.Output().Fields().ByName("convicted")).Bool(), nil
	}
	bustest.Eventually(t, 60*time.Second, func() error {
		yes, err := ask(convicted)
		if err != nil {
			return err
		}
		return bustest.Check(yes, "HasConviction is false for a person with convictions")
	})
	if no, err := ask(clean); err != nil || no {
		t.Fatalf("HasConviction for a clean record: %v %v", no, err)
	}
	// CNSS's adapter offers the new service in its reflection.
	if got := reflectionList(t, f.dial(t, "cnss")); !strings.Contains(strings.Join(got, " "), "jisr.justice.v1.CriminalRecord") {
		t.Fatalf("cnss's adapter lists %v", got)
	}

	// 6. The catalogue: what cnss may call now.
	after := run(fedPath, "services", "--as", "cnss")
	if !strings.Contains(after, "jisr.justice.v1.CriminalRecord") || !strings.Contains(after, "HasConviction") {
		t.Fatalf("after the tour cnss may call:\n%s", after)
	}
	if pub := run(g.FederationPath, "services", "--published", "--as", "cnss"); !strings.Contains(pub, "CriminalRecord") {
		t.Fatalf("the published version's catalogue for cnss:\n%s", pub)
	}
}

// addJustice adds what deploy/members/justice/federation-justice.yaml
// lists to a federation file.
func addJustice(t *testing.T, base []byte, digest string) []byte {
	t.Helper()
	y := bytes.Replace(base, []byte("\ndescriptor_sets:\n"), []byte(`
descriptor_sets:
  - file: justice.binpb
    sha256: `+digest+`
`), 1)
	y = bytes.Replace(y, []byte("\nmembers:\n"), []byte(`
members:
  - name: justice
    title: Ministry of justice
    provides: [jisr.justice.v1.CriminalRecord]
`), 1)
	y = bytes.Replace(y, []byte("\nrules:\n"), []byte(`
rules:
  - name: cnss-criminal-record
    consumer: cnss
    provider: justice
    service: jisr.justice.v1.CriminalRecord
    methods: [HasConviction]
    purposes: [pension-continuity]
    legal_basis: mandate
    law: "Code de procédure pénale, art. 658 (bulletin n° 3)"
`), 1)
	if bytes.Count(y, []byte("justice")) < 4 {
		t.Fatal("no members: or rules: section in the federation file")
	}
	return y
}

// background runs one jisr command with the federation file fedPath until
// the test ends.
func background(t *testing.T, fedPath string, g *process.Env, natsURL string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	root := newRootCmd()
	root.SetOut(io.Discard)
	root.SetArgs(append([]string{"--federation", fedPath, "--certs", g.CertsDir, "--nats", natsURL, "--log-level", "warn"}, args...))
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("jisr %v: %v", args, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("jisr %v did not stop", args)
		}
	})
}
