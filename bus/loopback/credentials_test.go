package loopback_test

import (
	"crypto/tls"
	"errors"
	"net/url"
	"testing"

	"github.com/jisr-bus/jisr/bus/loopback"
)

// Moved from services/adapter (TestPlaintextOnlyOnLoopback) with
// ServerCredentials.
func TestServerPlaintextOnlyOnLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:7003": true, "localhost:7003": true, "[::1]:7003": true, "0.0.0.0:7003": false, "10.1.2.3:7003": false, ":7003": false} {
		_, err := loopback.ServerCredentials(addr, nil)
		if ok != (err == nil) {
			t.Errorf("%s: err = %v", addr, err)
		}
		if !ok && !errors.Is(err, loopback.ErrPlaintext) {
			t.Errorf("%s: err = %v, want ErrPlaintext", addr, err)
		}
	}
	if opts, err := loopback.ServerCredentials("10.1.2.3:7003", &tls.Config{}); err != nil || len(opts) != 1 {
		t.Errorf("with TLS off loopback: %d options, %v; want TLS", len(opts), err)
	}
}

func TestClientPlaintextOnlyOnLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:7003": true, "localhost:7003": true, "[::1]:7003": true, "10.1.2.3:7003": false, "backend.example:7003": false} {
		c, err := loopback.ClientCredentials(addr, nil)
		if ok != (err == nil) || ok && c.Info().SecurityProtocol != "insecure" {
			t.Errorf("%s: %v, %v", addr, c, err)
		}
		if !ok && !errors.Is(err, loopback.ErrPlaintext) {
			t.Errorf("%s: err = %v, want ErrPlaintext", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:7003", "10.1.2.3:7003"} {
		if c, err := loopback.ClientCredentials(addr, &tls.Config{}); err != nil || c.Info().SecurityProtocol != "tls" {
			t.Errorf("%s with TLS: %v, %v; want TLS", addr, c, err)
		}
	}
}

func TestSecureURL(t *testing.T) {
	for raw, want := range map[string]bool{
		"https://idp.example/": true, "http://127.0.0.1:9000/": true, "http://localhost/cb": true, "http://[::1]:80/": true,
		"http://idp.example/": false, "http://0.0.0.0/": false, "ftp://127.0.0.1/": false, "HTTP://idp.example/": false,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := loopback.SecureURL(u); got != want {
			t.Errorf("SecureURL(%s) = %v, want %v", raw, got, want)
		}
	}
}
