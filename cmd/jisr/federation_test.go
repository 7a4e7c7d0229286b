package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// A new access rule, signed and published as federation version 1, is in
// force at the running gateway without a restart; a tampered bundle and an
// older one are refused, and the running version stays.
func TestFederationSignedVersionAppliedWithoutRestart(t *testing.T) {
	f := startDev(t)
	dir := t.TempDir()
	g := &process.Env{FederationPath: f.g.FederationPath, CertsDir: f.g.CertsDir, NATSURL: f.demo.Endpoints["nats"], Log: slog.New(slog.DiscardHandler)}
	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		root := newRootCmd()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--certs", g.CertsDir, "--nats", g.NATSURL, "--log-level", "error"}, args...))
		if err := root.Execute(); err != nil {
			t.Fatalf("jisr %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	eid := f.demo.Citizens[0].EID
	isAlive := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", "estate-tax"))
		_, err := civilv1.NewCivilRegistryClient(f.dial(t, "tax")).IsAlive(ctx, &civilv1.IsAliveRequest{Eid: eid})
		return err
	}
	if err := isAlive(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("before the new rule: %v", err)
	}
	if got := reflectionList(t, f.dial(t, "civil-registry")); slices.Contains(got, "jisr.tax.v1.Tax") {
		t.Fatalf("before version 1 the civil-registry adapter offers Tax: %v", got)
	}

	// Version 1: the testdata federation plus one mandate.
	base, err := os.ReadFile(g.FederationPath)
	if err != nil {
		t.Fatal(err)
	}
	v1 := filepath.Join(dir, "federation-v1.yaml")
	rule := `
  - name: tax-estate-death-check
    consumer: tax
    provider: civil-registry
    service: jisr.civilregistry.v1.CivilRegistry
    methods: [IsAlive]
    purposes: [estate-tax]
    legal_basis: mandate
    law: "Code général des impôts, art. 214"
  - name: civil-registry-tax-clearance
    consumer: civil-registry
    provider: tax
    service: jisr.tax.v1.Tax
    methods: [GetTaxClearance]
    purposes: [birth-registration]
    legal_basis: mandate
    law: "test: the civil registry's adapter offers Tax once this version is in force"
`
	withJustice := bytes.Replace(base, []byte("\nmembers:\n"), []byte("\nmembers:\n  - name: justice\n    title: Ministry of justice\n"), 1)
	if bytes.Equal(withJustice, base) {
		t.Fatal("no members: section to add justice to")
	}
	// The rule goes first in rules: (other sections, event_rules, follow it).
	withRule := bytes.Replace(withJustice, []byte("\nrules:\n"), []byte("\nrules:"+rule), 1)
	if bytes.Equal(withRule, withJustice) {
		t.Fatal("no rules: section to add the mandate to")
	}
	if err := os.WriteFile(v1, withRule, 0o644); err != nil {
		t.Fatal(err)
	}
	copyDescriptorSets(t, g.FederationPath, filepath.Dir(v1))
	// Justice's SVID (as `jisr certs init` issues it for the new file): the
	// NATS server does not know it before version 1.
	g1 := &process.Env{FederationPath: v1, CertsDir: g.CertsDir, NATSURL: g.NATSURL, Log: slog.New(slog.DiscardHandler)}
	fed1, err := g1.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(g1, fed1); err != nil {
		t.Fatal(err)
	}
	connectJustice := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		nc, src, err := g1.Connect(ctx, "justice", nats.MaxReconnects(0))
		if err != nil {
			return err
		}
		nc.Close()
		src.Close()
		return nil
	}
	if err := connectJustice(); err == nil {
		t.Fatal("justice connected before the version that adds it")
	}
	bundle := filepath.Join(dir, "v1.json")
	run("--federation", v1, "federation", "sign", "--version", "1", "-o", bundle)
	if d := run("--federation", g.FederationPath, "federation", "diff", g.FederationPath, bundle); !strings.Contains(d, "+ rule tax-estate-death-check: tax → civil-registry") {
		t.Fatalf("diff:\n%s", d)
	}
	run("--federation", g.FederationPath, "federation", "publish", bundle)
	// A version the gateway could not apply is not even signed.
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, bytes.Replace(mustReadFile(t, v1), []byte("methods: [IsAlive]\n    purposes: [estate-tax]"), []byte("methods: [IsImmortal]\n    purposes: [estate-tax]"), 1), 0o644)
	root := newRootCmd()
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	root.SetArgs([]string{"--certs", g.CertsDir, "--federation", broken, "federation", "sign", "--version", "5", "-o", filepath.Join(dir, "broken.json")})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "IsImmortal") {
		t.Fatalf("signed a federation whose rule names an unknown method: %v", err)
	}
	bustest.Eventually(t, 20*time.Second, func() error { return isAlive() })
	// The civil registry's running adapter took version 1 too: its
	// reflection now offers Tax, which no rule let it call before.
	bustest.Eventually(t, 20*time.Second, func() error {
		return bustest.Check(slices.Contains(reflectionList(t, f.dial(t, "civil-registry")), "jisr.tax.v1.Tax"), "the civil-registry adapter does not offer Tax")
	})
	bustest.Eventually(t, 20*time.Second, connectJustice) // the NATS server took version 1 too

	// The catalogue of the published version lists the new rule for tax.
	if out := run("--federation", g.FederationPath, "services", "--published", "--as", "tax"); !strings.Contains(out, "federation version 1") || !strings.Contains(out, "tax-estate-death-check") {
		t.Fatalf("jisr services --published --as tax:\n%s", out)
	}

	// Each query's audit record names the federation version that decided it.
	versions := map[string]uint64{}
	for _, m := range auditorRecordsOf(t, g) {
		_, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data) // a group-commit batch, or one record
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range recs {
			r, err := record.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if r.GetConsumer() == "tax" && r.GetMethod() == "IsAlive" {
				versions[r.GetDecision().String()] = r.GetFederationVersion()
			}
		}
	}
	if len(versions) != 2 || versions["DECISION_REFUSED"] != 0 || versions["DECISION_ALLOWED"] != 1 {
		t.Fatalf("federation versions in the audit records: %v", versions)
	}

	// Tampered (the purpose changed inside the signed payload) and older
	// bundles, put in the bucket behind `publish`'s back: refused.
	raw, _ := os.ReadFile(bundle)
	var s federation.Signed
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	var b federation.Bundle
	if err := json.Unmarshal(s.Payload, &b); err != nil {
		t.Fatal(err)
	}
	b.Version = 2
	b.Federation = bytes.Replace(b.Federation, []byte("[estate-tax]"), []byte("[estate-tax, marketing]"), 1)
	s.Payload, _ = json.Marshal(b)
	tampered, _ := json.Marshal(s)
	kv, done, err := process.FederationBucket(t.Context(), g, subject.Operator)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	for _, bad := range []struct {
		raw    []byte
		reason string
	}{{tampered, "bad_signature"}, {raw, "not_newer"}} {
		if _, err := kv.Put(t.Context(), subject.FederationKey, bad.raw); err != nil {
			t.Fatal(err)
		}
		bustest.Eventually(t, 20*time.Second, func() error {
			if !strings.Contains(f.logs.String(), "reason="+bad.reason) {
				return fmt.Errorf("no refusal %s logged", bad.reason)
			}
			return nil
		})
	}
	if err := isAlive(); err != nil {
		t.Fatalf("version 1 no longer in force after the refused bundles: %v", err)
	}
	// `publish` itself refuses both.
	for _, p := range []string{bundle} {
		var out bytes.Buffer
		root := newRootCmd()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs([]string{"--certs", g.CertsDir, "--nats", g.NATSURL, "--federation", g.FederationPath, "--log-level", "error", "federation", "publish", p})
		if err := root.Execute(); err == nil {
			t.Fatal("publish accepted a bundle while the bucket's newest is refused or not older")
		}
	}
	// A newer, well-signed version goes through after the refused ones.
	bundle2 := filepath.Join(dir, "v2.json")
	run("--federation", v1, "federation", "sign", "--version", "2", "-o", bundle2)
	run("--federation", g.FederationPath, "federation", "publish", bundle2)
	bustest.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(f.logs.String(), "federation version in force") || !strings.Contains(f.logs.String(), "version=2") {
			return fmt.Errorf("version 2 not in force")
		}
		return nil
	})
	h := run("--federation", g.FederationPath, "federation", "history")
	if !strings.Contains(h, "version 1") || !strings.Contains(h, "version 2") || strings.Count(h, "REFUSED") != 1 {
		t.Fatalf("history:\n%s", h)
	}
}

// auditorRecordsOf reads every stored message of the audit stream as the
// auditor (a batch of records each, or one record: split with record.Stored).
func auditorRecordsOf(t *testing.T, g *process.Env) []stream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	records, closeFn, err := auditorRecords(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	var out []stream.Msg
	if err := stream.Scan(ctx, records, stream.ScanOptions{}, func(m stream.Msg) error { out = append(out, m); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func reflectionList(t *testing.T, cc *grpc.ClientConn) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.CloseSend()
	if err := st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}

// copyDescriptorSets copies the descriptor sets the federation file fedPath
// names (the reference ministries') into dir, beside a new federation file.
func copyDescriptorSets(t *testing.T, fedPath, dir string) {
	t.Helper()
	fed, err := federation.Load(fedPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, raw := range fed.Descriptors {
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
