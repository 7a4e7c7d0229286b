package bustest

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
)

// Run starts a bus outside a test — for Example functions, which get no
// testing.TB: the same dev CA, SVIDs and NATS server as Start, with the
// certificates under dir/certs and JetStream under dir/jetstream. Stop it
// with e.Server.Shutdown; connect with DialAs.
func Run(dir string, opts ...Option) (*Env, error) {
	o := options{fed: federationYAML, jetstream: true}
	for _, opt := range opts {
		opt(&o)
	}
	fed, err := federation.Parse(o.fed)
	if err != nil {
		return nil, fmt.Errorf("bustest: federation: %w", err)
	}
	withDescriptors(fed)
	certs := filepath.Join(dir, "certs")
	if _, err := devca.Init(certs, fed.TrustDomain, fed.Identities()); err != nil {
		return nil, fmt.Errorf("bustest: certs: %w", err)
	}
	e := &Env{Fed: fed, Dir: certs}
	if e.CA, err = devca.Load(certs); err != nil {
		return nil, fmt.Errorf("bustest: CA: %w", err)
	}
	key := make([]byte, ckey.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if e.Keyer, err = ckey.New(key); err != nil {
		return nil, err
	}
	natsID := fed.ID("nats")
	cert, keyFile := svid.Paths(certs, natsID)
	cfg := natsconf.Config{Federation: fed, Port: -1, CertFile: cert, KeyFile: keyFile, CAFile: svid.BundlePath(certs)}
	if o.jetstream {
		cfg.StoreDir = filepath.Join(dir, "jetstream")
	}
	s, err := x509svid.Load(cert, keyFile)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if e.Server, err = natsserver.Start(ctx, cfg, svid.NewStatic(s, e.CA.Bundle()), nil); err != nil {
		return nil, fmt.Errorf("bustest: NATS: %w", err)
	}
	e.URL = e.Server.ClientURL()
	return e, nil
}

// DialAs connects as a federation identity (a member name, "gateway",
// "operator", …) with the SVID `jisr certs init` wrote for it.
func (e *Env) DialAs(identity string, opts ...nats.Option) (*nats.Conn, error) {
	s, err := x509svid.Load(svid.Paths(e.Dir, e.ID(identity)))
	if err != nil {
		return nil, fmt.Errorf("bustest: SVID of %s: %w", identity, err)
	}
	return e.Dial(identity, svid.NewStatic(s, e.CA.Bundle()), opts...)
}
