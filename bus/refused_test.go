package bus_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
)

// TestConnectRefusedIsErrNoServers: when nothing listens at the NATS URL,
// Connect's error wraps nats.ErrNoServers (nats.go's error when every dial
// was refused), so callers tell "no server running" with errors.Is (jisr's
// hint to start one) instead of matching the error's text.
func TestConnectRefusedIsErrNoServers(t *testing.T) {
	env := bustest.Start(t, bustest.WithoutJetStream())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.Config{URL: "tls://" + addr, Identity: "cnss", Source: env.Source(t, env.ID("cnss")), ServerID: env.Fed.ID("nats")},
		bus.WithNATSOptions(nats.MaxReconnects(0), nats.Timeout(3*time.Second)))
	if err == nil {
		nc.Close()
		t.Fatalf("connected to %s, where nothing listens", addr)
	}
	if !errors.Is(err, nats.ErrNoServers) {
		t.Fatalf("err = %v, want one that wraps nats.ErrNoServers", err)
	}
}
