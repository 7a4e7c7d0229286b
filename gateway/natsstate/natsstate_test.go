package natsstate_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestNothingButTheOperatorCreatesAndNothingOpensWhatIsMissing(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	c := ctx(t)
	// Before `jisr nats init`: the gateway, the consent service and the
	// auditor's tools refuse to start, naming what is missing.
	if _, err := consent.OpenStore(c, env.Connect(t, "gateway")); !errors.Is(err, natsstate.ErrMissing) {
		t.Fatalf("consent store without buckets: %v", err)
	}
	if _, err := consent.OpenStore(c, env.Connect(t, "consent")); !errors.Is(err, natsstate.ErrMissing) {
		t.Fatalf("consent store without buckets: %v", err)
	}
	kp, _, err := checkpoint.EnsureKey(t.TempDir(), "gw-1", checkpoint.Origin("jisr.internal", "gw-1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = audit.Open(c, audit.Config{Conn: env.Connect(t, "gateway"), TrustDomain: "jisr.internal", LogID: "gw-1", Key: kp})
	if !errors.Is(err, natsstate.ErrMissing) {
		t.Fatalf("audit log without streams: %v", err)
	}
	if got := err.Error(); !contains(got, subject.AuditStream) || !contains(got, "jisr nats init") {
		t.Fatalf("the error does not say what is missing and what to do: %q", got)
	}
	// Nobody but the operator may create one (each attempt is refused by
	// the server: the request never gets an answer).
	specs, err := natsstate.All(stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, id := range []string{"gateway", "consent", "auditor", "cnss"} {
		js, err := jetstream.New(env.Connect(t, id))
		if err != nil {
			t.Fatal(err)
		}
		for _, sp := range specs {
			wg.Go(func() {
				cc, cancel := context.WithTimeout(c, 3*time.Second)
				defer cancel()
				if _, err := js.CreateStream(cc, sp.Config); err == nil {
					t.Errorf("%s created %s", id, sp.Name())
				}
			})
		}
	}
	wg.Wait()

	// The operator creates them all; a second run finds and checks them.
	op := env.Connect(t, "operator")
	rs, err := natsstate.Init(c, op, stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(specs) || len(specs) != 7 { // two audit streams, four consent buckets, the federation bucket
		t.Fatalf("%d results for %d specs", len(rs), len(specs))
	}
	for _, r := range rs {
		if !r.Created {
			t.Errorf("%s not created", r.Name())
		}
	}
	rs, err = natsstate.Init(c, op, stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Created {
			t.Errorf("%s created twice", r.Name())
		}
	}
	if _, err := consent.OpenStore(c, env.Connect(t, "gateway")); err != nil {
		t.Fatal(err)
	}
	if _, err := consent.OpenStore(c, env.Connect(t, "consent")); err != nil {
		t.Fatal(err)
	}
}

func TestEveryStreamAndBucketRefusesRewrites(t *testing.T) {
	t.Parallel()
	specs, err := natsstate.All(stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range specs {
		c := sp.Config
		if !c.DenyDelete || !c.DenyPurge || c.AllowRollup || c.AllowMsgTTL || c.Discard != jetstream.DiscardNew ||
			c.Retention != jetstream.LimitsPolicy || c.Storage != jetstream.FileStorage {
			t.Errorf("%s: %+v", sp.Name(), c)
		}
		if err := natsstate.Check(c, sp); err != nil {
			t.Errorf("%s fails its own check: %v", sp.Name(), err)
		}
	}
	if natsstate.BucketMaxAge < consent.MaxTTL {
		t.Fatalf("a bucket forgets a key (%s) before its token expires (%s)", natsstate.BucketMaxAge, consent.MaxTTL)
	}
}

func TestOpenRefusesABucketThatCanBeRewrittenAndInitHardensIt(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		modify   func(*jetstream.StreamConfig)
		hardened bool // Init can take the right away
	}{
		{"purges", func(c *jetstream.StreamConfig) { c.DenyPurge = false }, true},
		{"deletes", func(c *jetstream.StreamConfig) { c.DenyDelete = false }, true},
		{"roll-ups", func(c *jetstream.StreamConfig) { c.AllowRollup, c.DenyPurge = true, false }, true},
		{"discard old", func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld }, true},
		{"message TTLs", func(c *jetstream.StreamConfig) { c.AllowMsgTTL = true }, false},
		{"other subjects", func(c *jetstream.StreamConfig) { c.Subjects = append(c.Subjects, "jisr.extra") }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := bustest.Start(t)
			cx := ctx(t)
			op := env.Connect(t, "operator")
			js, err := jetstream.New(op)
			if err != nil {
				t.Fatal(err)
			}
			b := natsstate.Buckets()[1] // revocations
			cfg := b.Config
			c.modify(&cfg)
			if _, err := js.CreateStream(cx, cfg); err != nil {
				t.Fatal(err)
			}
			cjs, err := jetstream.New(env.Connect(t, "consent")) // the bucket's writer
			if err != nil {
				t.Fatal(err)
			}
			kv, err := cjs.KeyValue(cx, b.Bucket)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(cx, "jti-1", []byte("revoked")); err != nil {
				t.Fatal(err)
			}
			gjs, err := jetstream.New(env.Connect(t, "gateway"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := natsstate.OpenBucket(cx, gjs, b.Bucket); !errors.Is(err, natsstate.ErrUnsafe) {
				t.Fatalf("opened a bucket that allows %s: %v", c.name, err)
			}
			rs, err := natsstate.Init(cx, op, stream.Config{})
			if !c.hardened {
				if !errors.Is(err, natsstate.ErrUnsafe) {
					t.Fatalf("init accepted a bucket with %s: %v", c.name, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("init did not harden a bucket that allows %s: %v", c.name, err)
			}
			for _, r := range rs {
				if r.Hardened != (r.Bucket == b.Bucket) {
					t.Errorf("%s hardened %v", r.Name(), r.Hardened)
				}
			}
			if _, err := consent.OpenStore(cx, env.Connect(t, "gateway")); err != nil {
				t.Fatal(err)
			}
			if err := kv.Purge(cx, "jti-1"); err == nil {
				t.Fatal("a key was purged after hardening")
			}
			st, err := js.Stream(cx, b.Stream)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Purge(cx); err == nil {
				t.Fatal("the bucket was purged after hardening")
			}
			if e, err := kv.Get(cx, "jti-1"); err != nil || string(e.Value()) != "revoked" {
				t.Fatalf("the revocation after hardening: %v %v", e, err)
			}
		})
	}
}

// The hardened buckets still work as key-value buckets for what the
// federation does with them, and refuse a purge.
func TestHardenedBucketsStillWork(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	c := ctx(t)
	if _, err := natsstate.Init(c, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	// Each bucket with its writer: the consent service records grants and
	// revocations, the gateway counts uses.
	cjs, err := jetstream.New(env.Connect(t, "consent"))
	if err != nil {
		t.Fatal(err)
	}
	gjs, err := jetstream.New(env.Connect(t, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range natsstate.Buckets() {
		js := cjs
		if b.Bucket == subject.UsageBucket {
			js = gjs
		}
		kv, err := natsstate.OpenBucket(c, js, b.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		w, err := kv.Watch(c, "k.>")
		if err != nil {
			t.Fatal(err)
		}
		if e := <-w.Updates(); e != nil { // end of the (empty) initial values
			t.Fatalf("%s: unexpected initial value %v", b.Bucket, e)
		}
		rev, err := kv.Create(c, "k.1", []byte("1"))
		if err != nil {
			t.Fatalf("%s create: %v", b.Bucket, err)
		}
		if _, err := kv.Create(c, "k.1", []byte("x")); err == nil {
			t.Fatalf("%s: create of an existing key", b.Bucket)
		}
		if rev, err = kv.Update(c, "k.1", []byte("2"), rev); err != nil {
			t.Fatalf("%s update: %v", b.Bucket, err)
		}
		if _, err := kv.Put(c, "k.2", []byte("v")); err != nil {
			t.Fatalf("%s put: %v", b.Bucket, err)
		}
		if e, err := kv.Get(c, "k.1"); err != nil || string(e.Value()) != "2" || e.Revision() != rev {
			t.Fatalf("%s get: %v %v", b.Bucket, e, err)
		}
		// One value per key: the watch may skip the value k.1 replaced, but
		// delivers every key's latest.
		seen := map[string]string{}
		for seen["k.1"] != "2" || seen["k.2"] != "v" {
			select {
			case e := <-w.Updates():
				if e == nil {
					t.Fatalf("%s watch: nil update", b.Bucket)
				}
				seen[e.Key()] = string(e.Value())
			case <-c.Done():
				t.Fatalf("%s watch: %v (seen %v)", b.Bucket, c.Err(), seen)
			}
		}
		_ = w.Stop()
		if err := kv.Purge(c, "k.1"); err == nil {
			t.Fatalf("%s: a key was purged", b.Bucket)
		}
		if e, err := kv.Get(c, "k.1"); err != nil || string(e.Value()) != "2" {
			t.Fatalf("%s after the refused purge: %v %v", b.Bucket, e, err)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// natsconf (in the bus module) names the streams in its deny lists; they
// must be exactly the ones this package creates.
func TestEveryStreamIsProtectedInThePermissions(t *testing.T) {
	t.Parallel()
	fed, err := federation.Parse(bustest.FederationYAML())
	if err != nil {
		t.Fatal(err)
	}
	specs, err := natsstate.All(stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	perms := natsconf.Permissions(fed)
	for id, p := range perms {
		if id == fed.ID(subject.Operator).String() {
			continue
		}
		for _, sp := range specs {
			for _, api := range []string{"DELETE", "PURGE", "UPDATE", "MSG.DELETE"} {
				subj := "$JS.API.STREAM." + api + "." + sp.Stream
				if slices.Contains(p.PublishAllow, subj) || slices.Contains(p.PublishAllow, "$JS.API.>") {
					t.Errorf("%s may publish %s", id, subj)
				}
				if (id == fed.ID("gateway").String() || id == fed.ID("consent").String() || id == fed.ID("auditor").String()) &&
					!slices.Contains(p.PublishDeny, subj) {
					t.Errorf("%s is not denied %s", id, subj)
				}
			}
		}
	}
}
