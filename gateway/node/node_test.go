package node_test

import (
	"testing"

	"github.com/jisr-bus/jisr/gateway/node"
)

// The node's end-to-end behaviour (a replica answering, draining, refusing
// plaintext off loopback) is tested in cmd/jisr, with the adapters; here,
// that an incomplete Config is refused before anything starts.
func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	if _, err := node.New(node.Config{}); err == nil {
		t.Fatal("an empty Config accepted")
	}
	if _, err := node.New(node.Config{Instance: "gw-1", HTTPAddr: "127.0.0.1:0"}); err == nil {
		t.Fatal("a Config without federation, keys, connection or sign-in accepted")
	}
}
