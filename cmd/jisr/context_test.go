package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func runJisr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// A saved context fills the global flags not given; a flag or JISR_CONTEXT
// still wins; subcommands' help shows the global flags on one line.
func TestContextSaveUseAndPrecedence(t *testing.T) {
	t.Setenv("JISR_CONTEXT_DIR", t.TempDir())
	t.Setenv("JISR_CONTEXT", "")
	t.Setenv("JISR_NATS", "")
	if _, err := runJisr(t, "--nats", "tls://10.0.0.1:4222", "--certs", "/etc/jisr/certs", "context", "save", "prod"); err != nil {
		t.Fatal(err)
	}
	if _, err := runJisr(t, "--nats", "tls://127.0.0.1:4999", "context", "save", "dev"); err != nil {
		t.Fatal(err)
	}
	if _, err := runJisr(t, "context", "use", "prod"); err != nil {
		t.Fatal(err)
	}
	out, err := runJisr(t, "context", "show")
	if err != nil || !strings.Contains(out, "context    prod") || !strings.Contains(out, "tls://10.0.0.1:4222") || !strings.Contains(out, "/etc/jisr/certs") {
		t.Fatalf("show with prod in use: %v\n%s", err, out)
	}
	if out, _ := runJisr(t, "--nats", "tls://flag:1", "context", "show"); !strings.Contains(out, "tls://flag:1") {
		t.Errorf("the flag did not win over the context:\n%s", out)
	}
	t.Setenv("JISR_CONTEXT", "dev")
	if out, _ := runJisr(t, "context", "show"); !strings.Contains(out, "tls://127.0.0.1:4999") {
		t.Errorf("JISR_CONTEXT=dev did not choose dev:\n%s", out)
	}
	if out, _ := runJisr(t, "context", "list"); !strings.Contains(out, "* dev") || !strings.Contains(out, "  prod") {
		t.Errorf("list:\n%s", out)
	}
	t.Setenv("JISR_CONTEXT", "nosuch")
	if _, err := runJisr(t, "context", "show"); err == nil || !strings.Contains(err.Error(), `no context "nosuch"`) {
		t.Errorf("an unknown context: %v", err)
	}
	t.Setenv("JISR_CONTEXT", "")

	help, _ := runJisr(t, "consent", "grant", "--help")
	if !strings.Contains(help, "  --certs --data --federation --log-format --log-level --nats --otlp --trace-memory\n") || strings.Contains(help, "Global Flags:") {
		t.Errorf("consent grant --help does not show the global flags on one line:\n%s", help)
	}
}
