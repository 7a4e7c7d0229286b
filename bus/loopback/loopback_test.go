package loopback_test

import (
	"testing"

	"github.com/jisr-bus/jisr/bus/loopback"
)

func TestIs(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:7001": true, "127.3.4.5:1": true, "[::1]:4317": true, "localhost:4317": true, "localhost": true, "::1": true,
		"0.0.0.0:7001": false, "10.0.0.8:4317": false, "collector.example:4317": false, "[::]:80": false, "": false, ":7001": false,
	} {
		if got := loopback.Is(addr); got != want {
			t.Errorf("Is(%q) = %v, want %v", addr, got, want)
		}
	}
}
