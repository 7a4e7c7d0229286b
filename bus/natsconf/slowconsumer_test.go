package natsconf

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
)

// The slow-consumer bounds are rendered explicitly, and the server reads them.
func TestSlowConsumerBoundsAreRendered(t *testing.T) {
	t.Parallel()
	fed, err := federation.Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := devca.Init(dir, fed.TrustDomain, fed.Identities()); err != nil {
		t.Fatal(err)
	}
	cert, key := svid.Paths(dir, fed.ID("nats"))
	for _, tc := range []struct {
		name     string
		cfg      Config
		pending  int64
		deadline time.Duration
	}{
		{"defaults", Config{}, 128 << 20, 10 * time.Second},
		{"set", Config{MaxPending: 32 << 20, WriteDeadline: "3s"}, 32 << 20, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.Federation, c.CertFile, c.KeyFile, c.CAFile = fed, cert, key, svid.BundlePath(dir)
			text, err := Render(c)
			if err != nil {
				t.Fatal(err)
			}
			var o server.Options
			if err := o.ProcessConfigString(text); err != nil {
				t.Fatal(err)
			}
			if o.MaxPending != tc.pending || o.WriteDeadline != tc.deadline {
				t.Fatalf("max_pending %d, write_deadline %s; want %d, %s", o.MaxPending, o.WriteDeadline, tc.pending, tc.deadline)
			}
		})
	}
}
