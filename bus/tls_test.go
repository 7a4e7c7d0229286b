package bus_test

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/jisr-bus/jisr/bus/bustest"
)

// TestNATSRefusesTLS12 dials the federation's NATS server as a member with
// a valid SVID but TLS 1.2 at most: refused. The same member with TLS 1.3
// connects, so the refusal is the version's.
func TestNATSRefusesTLS12(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bustest.WithoutJetStream())
	src := env.Source(t, env.ID("cnss"))
	dial := func(maxVersion uint16) error {
		c := &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: maxVersion}
		tlsconfig.HookMTLSClientConfig(c, src, src, tlsconfig.AuthorizeID(env.Fed.ID("nats")))
		nc, err := nats.Connect(env.URL, nats.Secure(c), nats.MaxReconnects(0), nats.Timeout(5*time.Second),
			nats.CustomInboxPrefix("_INBOX.cnss"))
		if err == nil {
			nc.Close()
		}
		return err
	}
	if err := dial(tls.VersionTLS13); err != nil {
		t.Fatalf("TLS 1.3 client refused: %v", err)
	}
	if err := dial(tls.VersionTLS12); err == nil {
		t.Fatal("the NATS server accepted a TLS 1.2 client")
	}
}
