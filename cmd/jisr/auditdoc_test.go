package main

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// TestAuditDocExamplesRun runs the `jisr audit` examples of docs/audit.md
// ("Reading the log") as they are written, against a running federation
// with records: every line succeeds, except `verify --file` of an export
// narrowed by --since, which the doc says is refused (a partial export
// cannot be verified as a whole). Only the paths change (into a temporary
// directory), and `tail` does not follow.
func TestAuditDocExamplesRun(t *testing.T) {
	dir := t.TempDir()
	f := startAuditFed(t, dir)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// A refused query is a record too.
	_, _ = f.cnss.GetPerson(md(ctx, "jisr-purpose", "amo-enrolment"), &civilv1.GetPersonRequest{Eid: eidN(1)})
	trusted := process.TrustedCheckpointPath(dir, "gw-1")
	bustest.Eventually(t, 60*time.Second, func() error {
		_, err := os.Stat(trusted)
		return err
	})

	doc, err := os.Open("../../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	defer doc.Close()
	out := t.TempDir()
	ran := 0
	sc := bufio.NewScanner(doc)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "jisr audit ") {
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		args := strings.Fields(strings.TrimPrefix(line, "jisr "))
		for i, a := range args {
			switch {
			case strings.HasSuffix(a, ".jsonl"):
				args[i] = filepath.Join(out, a)
			case a == "/var/lib/jisr/audit/gw-1.checkpoint":
				args[i] = trusted
			}
		}
		if args[1] == "tail" {
			args = append(args, "--follow=false")
		}
		ran++
		_, stderr, err := f.cli(args...)
		partial := args[1] == "verify" && len(args) > 3 && strings.HasSuffix(args[3], "nov.jsonl")
		switch {
		case partial && err == nil:
			t.Errorf("%s: a partial export verified, though the doc says it cannot", line)
		case !partial && err != nil:
			t.Errorf("%s: %v\n%s", line, err, stderr)
		}
	}
	if ran < 8 {
		t.Fatalf("ran %d examples of docs/audit.md, expected its sh block of `jisr audit` lines", ran)
	}
}
