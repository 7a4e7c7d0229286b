package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/certs/svid"
)

// runJisrStdout runs jisr quietly (--log-level error) and returns its
// standard output alone.
func runJisrStdout(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"--log-level", "error"}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// deploy/spire/entries.json is what `jisr spire entries` prints for
// deploy/federation.yaml (regenerate it when the federation changes), and it
// registers every identity the federation needs an SVID for, each on the
// service account of the workload that holds it.
func TestSpireEntriesInDeployAreCurrent(t *testing.T) {
	out, err := runJisrStdout(t, "--federation", "../../deploy/federation.yaml", "spire", "entries")
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("../../deploy/spire/entries.json")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(committed) {
		t.Fatal("deploy/spire/entries.json is stale: run `jisr spire entries > deploy/spire/entries.json`")
	}
	var doc struct {
		Entries []spireEntry `json:"entries"`
	}
	if err := json.Unmarshal(committed, &doc); err != nil {
		t.Fatal(err)
	}
	fed, err := federation.Load("../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bySA := map[string][]string{}
	for _, e := range doc.Entries {
		if e.ParentID == "" || len(e.Selectors) != 2 {
			t.Fatalf("entry %+v: no parent or not both k8s selectors", e)
		}
		bySA[e.Selectors[1].Value] = append(bySA[e.Selectors[1].Value], e.SpiffeID)
	}
	for _, id := range append(fed.Identities(), fed.ID(natsconf.AuditOperator)) {
		if !strings.Contains(string(committed), `"spiffe_id": "`+id.String()+`"`) {
			t.Errorf("no entry for %s", id)
		}
	}
	if got := bySA["sa:jisr-gateway"]; len(got) != 1 || got[0] != fed.ID("gateway").String() {
		t.Errorf("the gateway's service account holds %v, want /gateway", got)
	}
	if got := bySA["sa:jisr-consent"]; len(got) != 1 || got[0] != fed.ID("consent").String() {
		t.Errorf("the consent service's service account holds %v, want /consent (the signing keys' only holder)", got)
	}
	if got := bySA["sa:jisr-operator"]; len(got) != 2 {
		t.Errorf("the operator's job holds %v, want /operator and /audit-operator", got)
	}
	if got := bySA["sa:jisr-adapter-cnss"]; len(got) != 1 || !strings.HasSuffix(got[0], "/member/cnss") {
		t.Errorf("the cnss adapter holds %v", got)
	}
}

func TestSpireEntriesUnixAndRefusals(t *testing.T) {
	fedFlag := []string{"--federation", "../../deploy/federation.yaml", "spire", "entries"}
	out, err := runJisrStdout(t, append(fedFlag, "--selectors", "unix", "--unix-uid", "1001", "--parent", "spiffe://jisr.internal/spire/agent/join_token/x", "--format", "text")...)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "spiffe://jisr.internal/member/tax" &&
			f[1] == "spiffe://jisr.internal/spire/agent/join_token/x" && f[2] == "unix:uid:1001" {
			found = true
		}
	}
	if !found {
		t.Fatalf("text output:\n%s", out)
	}
	// One uid for all: the adapter's and the backend's entries would be the
	// same, which SPIRE refuses; one is printed.
	if n := strings.Count(out, "spiffe://jisr.internal/member/tax "); n != 1 {
		t.Fatalf("%d entries for member/tax on one uid, want 1:\n%s", n, out)
	}
	for _, bad := range [][]string{
		{"--parent", "spiffe://other.domain/spire/node/x"},
		{"--parent", "not a spiffe id"},
		{"--selectors", "docker"},
		{"--format", "yaml"},
	} {
		if _, err := runJisrStdout(t, append(fedFlag, bad...)...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// Under SPIRE `jisr nats-config` names no certificate files: the embedded
// server takes its SVID from the Workload API.
func TestNATSConfigUnderSPIRENamesNoFiles(t *testing.T) {
	t.Setenv(svid.EndpointSocketEnv, "unix:///nonexistent/agent.sock")
	out, err := runJisrStdout(t, "--federation", "../../deploy/federation.yaml", "--certs", t.TempDir(), "nats-config")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "cert_file") || strings.Contains(out, "ca_file") || !strings.Contains(out, "verify_and_map: true") {
		t.Fatalf("rendered:\n%s", out)
	}
	os.Unsetenv(svid.EndpointSocketEnv)
	out, err = runJisrStdout(t, "--federation", "../../deploy/federation.yaml", "--certs", t.TempDir(), "nats-config")
	if err != nil || !strings.Contains(out, "cert_file") {
		t.Fatalf("without SPIRE the files are named: %v\n%s", err, out)
	}
}
