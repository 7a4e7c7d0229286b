package bustest

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
)

//go:embed federation.yaml
var federationYAML []byte

//go:embed *.binpb
var descriptorFS embed.FS

// Descriptors returns the content of the reference ministries' descriptor
// sets the test federation names (descriptor_sets), by file name: what
// federation.Load reads beside the file, for a federation parsed from
// FederationYAML.
func Descriptors() map[string][]byte {
	out := map[string][]byte{}
	ents, _ := descriptorFS.ReadDir(".")
	for _, e := range ents {
		b, err := descriptorFS.ReadFile(e.Name())
		if err != nil {
			panic(err)
		}
		out[e.Name()] = b
	}
	return out
}

// FederationYAML returns the test federation: the demo's four members and
// rules. Each call returns a fresh copy, for the caller to change at will.
func FederationYAML() []byte { return bytes.Clone(federationYAML) }

// withDescriptors gives fed the descriptor sets it names that the test bus
// holds, as federation.Load does from the files beside a federation file
// (a test that adds a member of its own adds its set to fed.Descriptors).
func withDescriptors(fed *federation.Federation) {
	sets := Descriptors()
	for _, ref := range fed.DescriptorSets {
		if raw, ok := sets[ref.File]; ok {
			if fed.Descriptors == nil {
				fed.Descriptors = map[string][]byte{}
			}
			fed.Descriptors[ref.File] = raw
		}
	}
}

// Env is a running test bus.
type Env struct {
	Fed    *federation.Federation
	CA     *devca.CA
	Dir    string // certs directory (SVID files, bundle)
	Keyer  *ckey.Keyer
	Server *natsserver.Server
	URL    string
	Log    *slog.Logger // writes to the test's log; the server's goes there too
}

type options struct {
	fed          []byte
	jetstream    bool
	auditAccount bool
}

// Option configures Start.
type Option func(*options)

// WithFederation replaces the test federation file's content.
func WithFederation(yaml []byte) Option { return func(o *options) { o.fed = yaml } }

// WithoutJetStream starts the server without JetStream.
func WithoutJetStream() Option { return func(o *options) { o.jetstream = false } }

// WithAuditAccount starts the server with the audit streams in their own
// account (natsconf.Config.AuditAccount).
func WithAuditAccount() Option { return func(o *options) { o.auditAccount = true } }

// Start brings up a bus for one test and tears it down with t.Cleanup.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	o := options{fed: federationYAML, jetstream: true}
	for _, opt := range opts {
		opt(&o)
	}
	fed, err := federation.Parse(o.fed)
	if err != nil {
		t.Fatalf("bustest: federation: %v", err)
	}
	withDescriptors(fed)
	dir := t.TempDir()
	if _, err := devca.Init(dir, fed.TrustDomain, fed.Identities()); err != nil {
		t.Fatalf("bustest: certs: %v", err)
	}
	ca, err := devca.Load(dir)
	if err != nil {
		t.Fatalf("bustest: CA: %v", err)
	}
	e := &Env{Fed: fed, CA: ca, Dir: dir, Log: Logger(t)}
	key := make([]byte, ckey.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if e.Keyer, err = ckey.New(key); err != nil {
		t.Fatal(err)
	}
	natsID := fed.ID("nats")
	cert, keyFile := svid.Paths(dir, natsID)
	cfg := natsconf.Config{
		Federation: fed, Port: -1,
		CertFile: cert, KeyFile: keyFile, CAFile: svid.BundlePath(dir),
		AuditAccount: o.auditAccount,
	}
	if o.jetstream {
		cfg.StoreDir = filepath.Join(t.TempDir(), "jetstream")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	e.Server, err = natsserver.Start(ctx, cfg, e.Source(t, natsID), e.Log)
	if err != nil {
		t.Fatalf("bustest: NATS: %v", err)
	}
	t.Cleanup(e.Server.Shutdown)
	e.URL = e.Server.ClientURL()
	return e
}

// Source returns a static SVID source for id: the one `jisr certs init`
// wrote for a federation identity, else one freshly issued by the test CA.
func (e *Env) Source(t testing.TB, id spiffeid.ID) svid.Source {
	t.Helper()
	if s, err := x509svid.Load(svid.Paths(e.Dir, id)); err == nil {
		return svid.NewStatic(s, e.CA.Bundle())
	}
	s, err := e.CA.Issue(id)
	if err != nil {
		t.Fatalf("bustest: issue %s: %v", id, err)
	}
	return svid.NewStatic(s, e.CA.Bundle())
}

// ID returns the SPIFFE ID of an identity name: a member name, or one of
// "gateway", "consent", "auditor", "nats".
func (e *Env) ID(identity string) spiffeid.ID {
	if m, err := e.Fed.Member(identity); err == nil {
		return m.ID
	}
	return e.Fed.ID(identity)
}

// Connect connects as identity and closes the connection at cleanup.
func (e *Env) Connect(t testing.TB, identity string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := e.Dial(identity, e.Source(t, e.ID(identity)), opts...)
	if err != nil {
		t.Fatalf("bustest: connect as %s: %v", identity, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Dial connects as identity with a given SVID source (for tests that bring
// their own, possibly bad, certificates).
func (e *Env) Dial(identity string, src svid.Source, opts ...nats.Option) (*nats.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := []nats.Option{nats.MaxReconnects(0), nats.Timeout(3 * time.Second)}
	return bus.Connect(ctx, bus.Config{URL: e.URL, Identity: identity, Source: src, ServerID: e.Fed.ID("nats")}, bus.WithNATSOptions(append(base, opts...)...))
}
