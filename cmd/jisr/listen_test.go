package main

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// A port already in use makes process.StartGateway and process.StartAdapter return the
// error (they used to panic on a nil node), and what they had started is
// stopped: the gateway's HTTP server no longer listens when its gRPC port
// was the one taken.
func TestListenErrorsAreReturned(t *testing.T) {
	f := startAuditFed(t, t.TempDir())
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().String()
	free := loopbackAddr(t)
	ctx := t.Context()

	for _, tc := range []struct {
		name  string
		start func() error
	}{
		{"gateway HTTP", func() error {
			n, err := process.StartGateway(ctx, f.g, process.GatewayOptions{HTTPAddr: busy, Instance: "gw-2"})
			if n != nil {
				t.Error("a node with the error")
			}
			return err
		}},
		{"gateway gRPC", func() error {
			n, err := process.StartGateway(ctx, f.g, process.GatewayOptions{HTTPAddr: free, GRPCAddr: busy, Instance: "gw-2"})
			if n != nil {
				t.Error("a node with the error")
			}
			return err
		}},
		{"adapter", func() error {
			n, err := process.StartAdapter(ctx, f.g, process.AdapterOptions{Member: "tax", Listen: busy})
			if n != nil {
				t.Error("a node with the error")
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.start(); !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("err = %v; want address already in use", err)
			}
		})
	}
	// The gateway whose gRPC port was taken shut its HTTP server down.
	if c, err := net.DialTimeout("tcp", free, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("%s still listens after the gateway failed to start", free)
	}
}
