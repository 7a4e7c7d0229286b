package process

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// SignFederation signs the federation file named by --federation as
// version, with the governance key at keyPath, into out.
func SignFederation(g *Env, version uint64, keyPath, out string) (*federation.Bundle, error) {
	key, err := federation.LoadGovernanceKey(keyPath)
	if err != nil {
		return nil, err
	}
	file, err := os.ReadFile(g.FederationPath)
	if err != nil {
		return nil, err
	}
	// What the gateway would refuse to apply is refused here: every service
	// must have descriptors, every rule's methods, fields and parameters exist.
	fed, err := federation.Parse(file)
	if err != nil {
		return nil, err
	}
	svcs, sets, err := g.Services()
	if err != nil {
		return nil, err
	}
	if _, err := catalog.New(fed, svcs); err != nil {
		return nil, err
	}
	// The bundle carries the descriptor sets the file names.
	b := &federation.Bundle{Version: version, Created: time.Now().UTC().Truncate(time.Second), Federation: file, Descriptors: sets}
	raw, err := federation.Sign(b, key)
	if err != nil {
		return nil, err
	}
	return b, os.WriteFile(out, raw, 0o644)
}

// TrustedGovernanceKeys reads the governance public key of the certs
// directory.
func TrustedGovernanceKeys(g *Env) ([]ed25519.PublicKey, error) {
	pub, err := federation.LoadGovernancePub(federation.GovernancePubPath(g.CertsDir))
	if err != nil {
		return nil, fmt.Errorf("the governance public key (jisr certs init writes it): %w", err)
	}
	return []ed25519.PublicKey{pub}, nil
}

// FederationBucket opens the bucket of the signed federation versions as
// identity (the operator to publish; the gateway to watch).
func FederationBucket(ctx context.Context, g *Env, identity string) (jetstream.KeyValue, func(), error) {
	nc, src, err := g.Connect(ctx, identity, nats.MaxReconnects(0))
	if err != nil {
		return nil, nil, err
	}
	closeAll := func() { nc.Close(); src.Close() }
	js, err := jetstream.New(nc)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	kv, err := natsstate.OpenBucket(ctx, js, subject.FederationBucket)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return kv, closeAll, nil
}

// Published is the newest federation version in the bucket whose signature
// verifies (nil when none), and the bucket's last revision (0: empty), which
// a publication must extend. A value that does not verify (put there behind
// `publish`'s back) is skipped, as components skip it.
func Published(ctx context.Context, kv jetstream.KeyValue, trusted []ed25519.PublicKey) (*federation.Bundle, *federation.Federation, uint64, error) {
	hist, err := kv.History(ctx, subject.FederationKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil, 0, nil
	}
	if err != nil {
		return nil, nil, 0, err
	}
	last := hist[len(hist)-1].Revision()
	var best *federation.Bundle
	var bestFed *federation.Federation
	for _, e := range hist {
		b, fed, err := federation.Verify(e.Value(), trusted, 0)
		if err == nil && (best == nil || b.Version > best.Version) {
			best, bestFed = b, fed
		}
	}
	return best, bestFed, last, nil
}

// PublishFederation verifies a signed bundle (signature, newer than the
// published version) and puts it in the bucket, as the operator; a
// concurrent publication makes it fail rather than overwrite.
func PublishFederation(ctx context.Context, g *Env, raw []byte) (*federation.Bundle, error) {
	trusted, err := TrustedGovernanceKeys(g)
	if err != nil {
		return nil, err
	}
	kv, done, err := FederationBucket(ctx, g, subject.Operator)
	if err != nil {
		return nil, err
	}
	defer done()
	cur, _, rev, err := Published(ctx, kv, trusted)
	if err != nil {
		return nil, err
	}
	var running uint64
	if cur != nil {
		running = cur.Version
	}
	b, _, err := federation.Verify(raw, trusted, running)
	if err != nil {
		return nil, err
	}
	if rev == 0 {
		_, err = kv.Create(ctx, subject.FederationKey, raw)
	} else {
		_, err = kv.Update(ctx, subject.FederationKey, raw, rev)
	}
	if err != nil {
		return nil, fmt.Errorf("publishing version %d: %w", b.Version, err)
	}
	return b, nil
}

// FederationHistory writes every version kept in the bucket, oldest first,
// with whether its signature verifies.
func FederationHistory(ctx context.Context, g *Env, out io.Writer) error {
	trusted, err := TrustedGovernanceKeys(g)
	if err != nil {
		return err
	}
	kv, done, err := FederationBucket(ctx, g, subject.Operator)
	if err != nil {
		return err
	}
	defer done()
	hist, err := kv.History(ctx, subject.FederationKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		_, err = fmt.Fprintln(out, "no federation version published yet")
		return err
	}
	if err != nil {
		return err
	}
	for _, e := range hist {
		b, _, err := federation.Verify(e.Value(), trusted, 0)
		switch {
		case err != nil && b == nil:
			fmt.Fprintf(out, "revision %d  %s  REFUSED: %v\n", e.Revision(), e.Created().UTC().Format(time.RFC3339), err)
		case err != nil:
			fmt.Fprintf(out, "revision %d  version %d  REFUSED: %v\n", e.Revision(), b.Version, err)
		default:
			fmt.Fprintf(out, "revision %d  version %d  signed %s  published %s  %s\n", e.Revision(), b.Version,
				b.Created.Format(time.RFC3339), e.Created().UTC().Format(time.RFC3339), b.Digest())
		}
	}
	return nil
}
