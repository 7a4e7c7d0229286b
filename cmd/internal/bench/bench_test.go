package bench

import (
	"context"
	"errors"
	"testing"
)

// TestRunRejectsAnIncompleteConfig: a run missing what it requires stops
// before it starts a single process, and names the missing field.
func TestRunRejectsAnIncompleteConfig(t *testing.T) {
	clients := func(Env) Clients { return nil }
	full := Config{Exe: "/bin/jisr", Federation: "federation.yaml", Out: t.TempDir(), Clients: clients}
	for _, tc := range []struct {
		name string
		cfg  func(c *Config)
		opts []Option
	}{
		{"no binary", func(c *Config) { c.Exe = "" }, nil},
		{"no federation file", func(c *Config) { c.Federation = "" }, nil},
		{"no report directory", func(c *Config) { c.Out = "" }, nil},
		{"no clients", func(c *Config) { c.Clients = nil }, nil},
		{"no concurrency", func(*Config) {}, []Option{WithConcurrency()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := full
			tc.cfg(&cfg)
			if err := Run(context.Background(), cfg, tc.opts...); !errors.Is(err, ErrConfig) {
				t.Fatalf("Run: %v, want ErrConfig", err)
			}
		})
	}
}
