// Package stream defines the two JetStream streams of the audit — JISR_AUDIT
// (the records) and JISR_CHECKPOINTS (the signed checkpoints) — and reads
// them back in order.
//
// Invariant: the streams this package creates or accepts keep every record
// until its retention age: file storage, limits retention, deletes and purges
// denied, and a full stream refuses new records (discard new) instead of
// dropping old ones. Open refuses a stream that does not, and never creates
// one: the operator does (gateway/natsstate, `jisr nats init`).
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/record"
)

// Defaults.
const (
	DefaultMaxAge     = 10 * 365 * 24 * time.Hour // ten years
	DefaultDuplicates = 2 * time.Minute
)

// Sentinel errors.
var (
	// ErrUnsafeStream: an existing stream would let records be deleted or lost.
	ErrUnsafeStream = errors.New("stream: the existing audit stream is not tamper-resistant")
	// ErrMissing: a stream or bucket the federation needs does not exist.
	ErrMissing = errors.New("not created by the operator")
	// ErrConfig: an invalid retention configuration.
	ErrConfig = errors.New("stream: invalid configuration")
)

// Config is the retention configuration of both streams.
type Config struct {
	// MaxAge is how long records are kept (default ten years).
	MaxAge time.Duration
	// CheckpointMaxAge is how long checkpoints are kept (default MaxAge).
	// The newest checkpoint covers every record, so older ones may go first.
	CheckpointMaxAge time.Duration
	// MaxBytes bounds the audit stream's size; when it is reached new records
	// are refused (and the gateway answers Unavailable). 0 = unlimited.
	MaxBytes int64
	// Replicas is the JetStream replication factor (1, 3 or 5; default 1).
	Replicas int
	// Duplicates is the deduplication window of Nats-Msg-Id (default 2 min).
	Duplicates time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.CheckpointMaxAge == 0 {
		c.CheckpointMaxAge = c.MaxAge
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
	switch {
	case c.MaxAge < 0 || c.CheckpointMaxAge < 0:
		return c, fmt.Errorf("%w: max_age must be positive", ErrConfig)
	case c.MaxBytes < 0:
		return c, fmt.Errorf("%w: max_bytes %d must be positive (0 = unlimited)", ErrConfig, c.MaxBytes)
	case c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5:
		return c, fmt.Errorf("%w: replicas %d must be 1, 3 or 5", ErrConfig, c.Replicas)
	case c.Duplicates < time.Second || c.Duplicates > c.MaxAge:
		return c, fmt.Errorf("%w: duplicate window %s must be between 1s and max_age", ErrConfig, c.Duplicates)
	}
	return c, nil
}

// StreamConfigs returns the JetStream configurations of the two streams.
func StreamConfigs(c Config) (audit, checkpoints jetstream.StreamConfig, err error) {
	if c, err = c.withDefaults(); err != nil {
		return audit, checkpoints, err
	}
	base := jetstream.StreamConfig{
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Discard:    jetstream.DiscardNew,
		MaxAge:     c.MaxAge,
		MaxMsgs:    -1,
		Replicas:   c.Replicas,
		Duplicates: c.Duplicates,
		DenyDelete: true,
		DenyPurge:  true,
		// The default: an acknowledgement is sent only after the write reached
		// the operating system, so a crash of the process loses nothing acked.
		PersistMode: jetstream.DefaultPersistMode,
	}
	audit, checkpoints = base, base
	audit.Name = subject.AuditStream
	audit.Description = "jisr audit records: one per gateway decision, leaves of per-instance Merkle logs"
	audit.Subjects = []string{record.AllFilter()}
	audit.MaxBytes = -1
	if c.MaxBytes > 0 {
		audit.MaxBytes = c.MaxBytes
	}
	checkpoints.MaxAge = c.CheckpointMaxAge
	checkpoints.Name = subject.CheckpointStream
	checkpoints.Description = "jisr audit checkpoints: C2SP signed checkpoints of the audit logs"
	checkpoints.Subjects = []string{subject.CheckpointPrefix + ".>"}
	checkpoints.MaxBytes = -1
	return audit, checkpoints, nil
}

// Open binds the two streams and checks that they are tamper-resistant. It
// never creates one: a missing stream is ErrMissing (the operator creates
// them with `jisr nats init`), because a stream recreated empty would start
// the log again from nothing. Retention settings that differ from c are
// logged, not changed (only the operator may update a stream).
func Open(ctx context.Context, js jetstream.JetStream, c Config, log *slog.Logger) (audit, checkpoints jetstream.Stream, err error) {
	acfg, ccfg, err := StreamConfigs(c)
	if err != nil {
		return nil, nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	open := func(want jetstream.StreamConfig) (jetstream.Stream, error) {
		s, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("stream %s does not exist (%w): run `jisr nats init`", want.Name, ErrMissing)
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", want.Name, err)
		}
		have := s.CachedInfo().Config
		if err := Check(have, want); err != nil {
			return nil, err
		}
		if have.MaxAge != want.MaxAge || have.Replicas != want.Replicas || have.MaxBytes != want.MaxBytes {
			log.Warn("the audit stream's retention differs from the configuration; the stored settings apply (changing them is an operator action)",
				"stream", want.Name, "max_age", have.MaxAge, "want_max_age", want.MaxAge,
				"replicas", have.Replicas, "want_replicas", want.Replicas, "max_bytes", have.MaxBytes, "want_max_bytes", want.MaxBytes)
		}
		return s, nil
	}
	if audit, err = open(acfg); err != nil {
		return nil, nil, err
	}
	if checkpoints, err = open(ccfg); err != nil {
		return nil, nil, err
	}
	return audit, checkpoints, nil
}

// Check reports whether an existing stream keeps records as want does.
func Check(have, want jetstream.StreamConfig) error {
	bad := func(what string) error { return fmt.Errorf("%w: %s: %s", ErrUnsafeStream, have.Name, what) }
	switch {
	case !have.DenyDelete:
		return bad("message deletes are allowed")
	case !have.DenyPurge:
		return bad("purges are allowed")
	case have.Retention != jetstream.LimitsPolicy:
		return bad("retention is not limits-based (records could be removed by consumers)")
	case have.Storage != jetstream.FileStorage:
		return bad("storage is not file storage")
	case have.Discard != jetstream.DiscardNew:
		return bad("a full stream would drop old records (discard old)")
	case have.MaxMsgsPerSubject > 0:
		return bad("a per-subject limit would drop old records")
	case have.PersistMode != jetstream.DefaultPersistMode:
		return bad("asynchronous persistence would acknowledge records before they are written")
	case have.AllowRollup:
		return bad("roll-ups would replace records")
	case have.AllowMsgTTL:
		return bad("per-message TTLs would let a publisher shorten retention")
	case len(have.Subjects) != 1 || have.Subjects[0] != want.Subjects[0]:
		return bad(fmt.Sprintf("subjects %v, want %v", have.Subjects, want.Subjects))
	}
	return nil
}

// Msg is one stored message.
type Msg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
	Time    time.Time
	// Pending is how many matching messages were stored after this one when
	// it was delivered (for progress reports).
	Pending uint64
}

// ScanOptions selects what Scan reads.
type ScanOptions struct {
	// Filters are subject filters; none = every message.
	Filters []string
	// StartSeq starts at this sequence (0 = the first message); StartTime,
	// when set and StartSeq is 0, at the first message stored at or after it.
	StartSeq  uint64
	StartTime time.Time
	// Follow keeps delivering new messages after the stored ones, until ctx ends.
	Follow bool
	// Batch is how many messages one fetch asks for (default 512).
	Batch int
}

// ErrStop may be returned by a Scan callback to end the scan without error.
var ErrStop = errors.New("stream: stop scanning")

// Scan calls fn for each matching message of s in stream order, from the
// start position up to the last message stored when Scan began (or forever
// with Follow). It reads through an ephemeral consumer that acknowledges
// nothing and removes nothing.
func Scan(ctx context.Context, s jetstream.Stream, o ScanOptions, fn func(Msg) error) error {
	if o.Batch <= 0 {
		o.Batch = 512
	}
	cfg := jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	}
	switch {
	case o.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.StartSeq
	case !o.StartTime.IsZero():
		t := o.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	switch len(o.Filters) {
	case 0:
	case 1:
		cfg.FilterSubject = o.Filters[0]
	default:
		cfg.FilterSubjects = o.Filters
	}
	cons, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("stream %s: read: %w", s.CachedInfo().Config.Name, err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = s.DeleteConsumer(dctx, name) // ephemeral: it also goes away on its own after a minute
	}()
	if cons.CachedInfo().NumPending == 0 && !o.Follow {
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(o.Batch, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("stream %s: read: %w", s.CachedInfo().Config.Name, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("stream %s: read: %w", s.CachedInfo().Config.Name, err)
			}
			err = fn(Msg{Seq: meta.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data(), Time: meta.Timestamp, Pending: meta.NumPending})
			if errors.Is(err, ErrStop) {
				return nil
			}
			if err != nil {
				return err
			}
			if meta.NumPending == 0 && !o.Follow {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("stream %s: read: %w", s.CachedInfo().Config.Name, err)
		}
		if got == 0 && !o.Follow {
			// Nothing arrived: messages may have aged out since the consumer was made.
			info, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("stream %s: read: %w", s.CachedInfo().Config.Name, err)
			}
			if info.NumPending == 0 {
				return nil
			}
		}
	}
}
