// Package natsstate is the one list of the JetStream streams and key-value
// buckets the federation keeps its state in, with their configurations: the
// audit records and checkpoints, and the consent service's grants,
// revocations and use counters.
//
// Invariant: only the operator identity creates them (Init, run by
// `jisr nats init` and by `jisr dev` at start). Every other part only opens
// them and refuses to start when one is missing or can be rewritten — a
// stream recreated empty would silently forget records, revocations or use
// counts. Every one of them denies deletes and purges, allows no roll-up
// and no per-message TTL, and refuses new messages when full (discard new).
package natsstate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
)

// BucketMaxAge is how long a key of the consent buckets is kept: longer than
// the longest-lived consent token (90 days), so a revocation or a use count
// outlives the token it is about.
const BucketMaxAge = 91 * 24 * time.Hour

// Sentinel errors.
var (
	// ErrMissing: a stream or bucket does not exist (run `jisr nats init`).
	ErrMissing = stream.ErrMissing
	// ErrUnsafe: an existing stream or bucket could be rewritten.
	ErrUnsafe = stream.ErrUnsafeStream
)

// Spec is one stream, or one key-value bucket and its stream.
type Spec struct {
	// Stream is the JetStream stream name (KV_<bucket> for a bucket).
	Stream string
	// Bucket is the key-value bucket name; "" for a plain stream.
	Bucket string
	Config jetstream.StreamConfig
}

// Name is the bucket's name for a bucket, else the stream's.
func (s Spec) Name() string {
	if s.Bucket != "" {
		return s.Bucket
	}
	return s.Stream
}

// Buckets returns the consent service's buckets: grants, revocations, use
// counters.
func Buckets() []Spec {
	return []Spec{
		bucket(subject.ConsentBucket, "jisr consent grants, by citizen key"),
		bucket(subject.RevocationBucket, "jisr revoked consent token IDs"),
		bucket(subject.UsageBucket, "jisr consent token use counters"),
		bucket(subject.RequestBucket, "jisr consent requests and their lifecycle, by citizen key"),
	}
}

// FederationHistory is how many versions of the federation bundle its
// bucket keeps (nats.go's largest key-value history).
const FederationHistory = 64

// Federation returns the bucket of the signed federation bundles
// (`jisr federation publish` writes, components watch): one key, its last
// FederationHistory versions kept.
func Federation() Spec {
	b := bucket(subject.FederationBucket, "jisr signed federation bundles, by version")
	b.Config.MaxMsgsPerSubject = FederationHistory
	return b
}

func bucket(name, desc string) Spec {
	s := subject.BucketStream(name)
	return Spec{Stream: s, Bucket: name, Config: jetstream.StreamConfig{
		Name:        s,
		Description: desc,
		Subjects:    []string{subject.BucketKeys(name)},
		// One value per key (what nats.go's KeyValue expects of a bucket).
		MaxMsgsPerSubject: 1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		MaxAge:            BucketMaxAge,
		Duplicates:        2 * time.Minute,
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Replicas:          1,
		AllowDirect:       true,
		// Unlike nats.go's default buckets: no purge (of the stream, or of a
		// key through a roll-up), no message delete, no per-message TTL.
		DenyDelete:  true,
		DenyPurge:   true,
		AllowRollup: false,
		AllowMsgTTL: false,
		Discard:     jetstream.DiscardNew,
	}}
}

// All returns every stream and bucket, the audit streams configured by c.
func All(c stream.Config) ([]Spec, error) {
	audit, ckpts, err := stream.StreamConfigs(c)
	if err != nil {
		return nil, err
	}
	out := []Spec{{Stream: audit.Name, Config: audit}, {Stream: ckpts.Name, Config: ckpts}}
	for _, b := range append(Buckets(), Federation()) {
		if c.Replicas > 0 {
			b.Config.Replicas = c.Replicas
		}
		out = append(out, b)
	}
	return out, nil
}

// Check reports whether an existing stream has the protections want has.
func Check(have jetstream.StreamConfig, want Spec) error {
	if want.Bucket == "" {
		return stream.Check(have, want.Config)
	}
	bad := func(what string) error { return fmt.Errorf("%w: bucket %s: %s", ErrUnsafe, want.Bucket, what) }
	switch {
	case !have.DenyDelete:
		return bad("message deletes are allowed")
	case !have.DenyPurge:
		return bad("purges are allowed")
	case have.AllowRollup:
		return bad("roll-ups (key purges) are allowed")
	case have.AllowMsgTTL:
		return bad("per-message TTLs are allowed")
	case have.Discard != jetstream.DiscardNew:
		return bad("a full bucket would drop old values (discard old)")
	case have.Retention != jetstream.LimitsPolicy:
		return bad("retention is not limits-based")
	case have.MaxMsgsPerSubject < 1:
		return bad("it is not a key-value bucket (no per-key limit)")
	case have.Mirror != nil || len(have.Sources) > 0 || have.RePublish != nil:
		return bad("it mirrors, sources or republishes")
	case len(have.Subjects) != 1 || have.Subjects[0] != want.Config.Subjects[0]:
		return bad(fmt.Sprintf("subjects %v, want %v", have.Subjects, want.Config.Subjects))
	}
	return nil
}

// Result is what Init found or did for one spec.
type Result struct {
	Spec
	Created bool
	// Hardened: the existing stream allowed rewrites (a bucket made by an
	// older jisr or by nats.go's defaults) and Init took those rights away.
	Hardened bool
	// Replicated: the existing stream had fewer replicas than asked, and
	// Init raised them.
	Replicated bool
}

// Init creates every missing stream and bucket and checks every existing
// one. It changes an existing one only to take rights away — deny deletes
// and purges, no roll-ups, discard new — which JetStream allows and which
// removes nothing stored; what it cannot make safe (per-message TTLs, other
// subjects, storage or retention) it refuses, naming it. It runs on the
// operator's connection, the only identity allowed the JetStream
// management API.
func Init(ctx context.Context, nc *nats.Conn, c stream.Config) ([]Result, error) {
	specs, err := All(c)
	if err != nil {
		return nil, err
	}
	return InitSpecs(ctx, nc, specs)
}

// InitSplit is Init for a server that keeps the audit streams in their own
// account (natsconf.Config.AuditAccount): the buckets on fedOp, the
// operator's connection, and the audit streams on auditOp, the connection
// of the audit account's operator (natsconf.AuditOperator).
func InitSplit(ctx context.Context, fedOp, auditOp *nats.Conn, c stream.Config) ([]Result, error) {
	specs, err := All(c)
	if err != nil {
		return nil, err
	}
	var auditSpecs, fedSpecs []Spec
	for _, sp := range specs {
		if sp.Bucket == "" {
			auditSpecs = append(auditSpecs, sp)
		} else {
			fedSpecs = append(fedSpecs, sp)
		}
	}
	out, err := InitSpecs(ctx, auditOp, auditSpecs)
	if err != nil {
		return out, err
	}
	more, err := InitSpecs(ctx, fedOp, fedSpecs)
	return append(out, more...), err
}

// InitSpecs creates or checks the streams and buckets of specs on nc, as Init.
func InitSpecs(ctx context.Context, nc *nats.Conn, specs []Spec) ([]Result, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, sp := range specs {
		r := Result{Spec: sp}
		s, err := js.Stream(ctx, sp.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s, err = js.CreateStream(ctx, sp.Config)
			r.Created = err == nil
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created concurrently
				s, err = js.Stream(ctx, sp.Stream)
			}
		}
		if err != nil {
			return out, fmt.Errorf("natsstate: %s: %w", sp.Name(), err)
		}
		if err := Check(s.CachedInfo().Config, sp); err != nil {
			h, ok := hardened(s.CachedInfo().Config, sp)
			if !ok {
				return out, err
			}
			if s, err = js.UpdateStream(ctx, h); err != nil {
				return out, fmt.Errorf("natsstate: %s: taking away rewrites: %w", sp.Name(), err)
			}
			if err := Check(s.CachedInfo().Config, sp); err != nil {
				return out, err
			}
			r.Hardened = true
		}
		// More replicas than the stream has (a single server grown into a
		// hub): JetStream copies what is stored to the new peers.
		if have := s.CachedInfo().Config; sp.Config.Replicas > have.Replicas {
			have.Replicas = sp.Config.Replicas
			if _, err := js.UpdateStream(ctx, have); err != nil {
				return out, fmt.Errorf("natsstate: %s: raising replicas to %d: %w", sp.Name(), have.Replicas, err)
			}
			r.Replicated = true
		}
		out = append(out, r)
	}
	return out, nil
}

// hardened is have with every right to rewrite taken away, when that is all
// that separates it from want.
func hardened(have jetstream.StreamConfig, want Spec) (jetstream.StreamConfig, bool) {
	if have.AllowMsgTTL || have.Storage != want.Config.Storage || have.Retention != want.Config.Retention ||
		len(have.Subjects) != 1 || have.Subjects[0] != want.Config.Subjects[0] ||
		have.Mirror != nil || len(have.Sources) > 0 || have.RePublish != nil {
		return have, false
	}
	have.DenyDelete, have.DenyPurge, have.AllowRollup = true, true, false
	have.Discard = jetstream.DiscardNew
	return have, true
}

// OpenBucket binds an existing bucket after checking its protections. A
// missing bucket is ErrMissing: it is never created here.
func OpenBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	var want *Spec
	for _, b := range append(Buckets(), Federation()) {
		if b.Bucket == name {
			want = &b
		}
	}
	if want == nil {
		return nil, fmt.Errorf("natsstate: %q is not one of the federation's buckets", name)
	}
	s, err := js.Stream(ctx, want.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("bucket %s does not exist (%w): run `jisr nats init`", name, ErrMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", name, err)
	}
	if err := Check(s.CachedInfo().Config, *want); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", name, err)
	}
	return kv, nil
}

// Log writes what Init did, one line per stream or bucket.
func Log(log *slog.Logger, rs []Result) {
	for _, r := range rs {
		log.Info("JetStream state", "name", r.Name(), "stream", r.Stream, "created", r.Created, "hardened", r.Hardened, "replicas", r.Config.Replicas)
	}
}
