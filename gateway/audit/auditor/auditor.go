package auditor

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/export"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Selection is what records are read by. Resolve it before use.
type Selection struct {
	CKey, Consumer, Provider, Log string
	Decision                      string // "", "allowed" or "refused"
	From, To                      time.Time

	filters []string
}

// Resolve checks the selection and turns it into subject filters. Its
// errors name the field ("ckey: …").
func (s *Selection) Resolve() error {
	switch s.Decision {
	case "", "allowed", "refused":
	default:
		return fmt.Errorf("decision %q: allowed or refused", s.Decision)
	}
	logTok := "*"
	if s.Log != "" {
		logTok = s.Log
	}
	switch {
	case s.CKey != "":
		// Format 1 records sit on the citizen's subject; format 2 batches
		// hold every citizen's, and Match picks this one's.
		subj, err := record.Subject(logTok, s.CKey)
		if logTok == "*" {
			subj, err = record.CitizenFilter(s.CKey)
		}
		if err != nil {
			return fmt.Errorf("ckey: %w", err)
		}
		s.filters = []string{subj, subject.AuditPrefix + "." + logTok + "." + record.BatchToken}
	case s.Log != "":
		if _, err := record.Subject(s.Log, ""); err != nil {
			return fmt.Errorf("log: %w", err)
		}
		s.filters = []string{record.LogFilter(s.Log)}
	}
	return nil
}

// Narrowed reports whether the selection leaves out any record (an
// export of it is partial).
func (s *Selection) Narrowed() bool {
	return len(s.filters) > 0 || s.Consumer != "" || s.Provider != "" || s.Decision != "" || !s.From.IsZero() || !s.To.IsZero()
}

// Match applies the parts of the selection that subjects cannot.
func (s *Selection) Match(r *auditv1.Record) bool {
	t := r.GetTime().AsTime()
	switch {
	case s.CKey != "" && r.GetCkey() != s.CKey,
		s.Log != "" && r.GetLogId() != s.Log,
		s.Consumer != "" && r.GetConsumer() != s.Consumer,
		s.Provider != "" && r.GetProvider() != s.Provider,
		s.Decision == "allowed" && r.GetDecision() != auditv1.Decision_DECISION_ALLOWED,
		s.Decision == "refused" && r.GetDecision() == auditv1.Decision_DECISION_ALLOWED,
		!s.From.IsZero() && t.Before(s.From),
		!s.To.IsZero() && t.After(s.To):
		return false
	}
	return true
}

// scanOptions start reading at From (records are stored just after their
// decision).
func (s *Selection) scanOptions() stream.ScanOptions {
	o := stream.ScanOptions{Filters: s.filters}
	if !s.From.IsZero() {
		o.StartTime = s.From
	}
	return o
}

// pastEnd: a message stored a minute after To ends the scan.
func (s *Selection) pastEnd(m stream.Msg) bool {
	return !s.To.IsZero() && m.Time.After(s.To.Add(time.Minute))
}

// Streams are the two audit streams, as the auditor reads them.
type Streams struct {
	Records, Checkpoints jetstream.Stream
}

// Open opens the audit streams on nc (the auditor's connection).
func Open(ctx context.Context, nc *nats.Conn) (*Streams, error) {
	js, err := jetstream.New(nc)
	var s Streams
	if err == nil {
		s.Records, err = js.Stream(ctx, subject.AuditStream)
	}
	if err == nil {
		s.Checkpoints, err = js.Stream(ctx, subject.CheckpointStream)
	}
	if err != nil {
		return nil, fmt.Errorf("audit streams: %w", err)
	}
	return &s, nil
}

// Query calls fn with each selected record in stream order, until fn
// returns stream.ErrStop; bad is told the sequence of a message that is
// not a valid record.
func (s *Streams) Query(ctx context.Context, sel *Selection, fn func(stream.Msg, *auditv1.Record) error, bad func(seq uint64)) error {
	return stream.Scan(ctx, s.Records, sel.scanOptions(), func(m stream.Msg) error {
		if sel.pastEnd(m) {
			return stream.ErrStop
		}
		return eachRecord(m, func(m stream.Msg, r *auditv1.Record, err error) error {
			if err != nil {
				bad(m.Seq)
				return nil
			}
			if !sel.Match(r) {
				return nil
			}
			return fn(m, r)
		})
	})
}

// Latest returns the last n selected records and the stream's last
// sequence, where Follow goes on.
func (s *Streams) Latest(ctx context.Context, sel *Selection, n int) ([]stream.Msg, uint64, error) {
	info, err := s.Records.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	last := info.State.LastSeq
	// Read from where they may start (all of them when a filter narrows
	// the stream), keep n.
	o := stream.ScanOptions{Filters: sel.filters}
	if len(sel.filters) == 0 && sel.Consumer == "" && sel.Provider == "" && sel.Decision == "" && last >= uint64(n) {
		o.StartSeq = last - uint64(n) + 1
	}
	var ring []stream.Msg
	if n <= 0 || last == 0 {
		return nil, last, nil
	}
	err = stream.Scan(ctx, s.Records, o, func(m stream.Msg) error {
		if m.Seq > last {
			return stream.ErrStop
		}
		return eachRecord(m, func(m stream.Msg, r *auditv1.Record, err error) error {
			if err == nil && sel.Match(r) {
				ring = append(ring, m)
				if len(ring) > n {
					ring = ring[1:]
				}
			}
			return nil
		})
	})
	return ring, last, err
}

// Follow calls fn with each selected record stored after sequence after,
// until ctx ends.
func (s *Streams) Follow(ctx context.Context, sel *Selection, after uint64, fn func(stream.Msg, *auditv1.Record) error) error {
	o := stream.ScanOptions{Filters: sel.filters, StartSeq: after + 1, Follow: true}
	return stream.Scan(ctx, s.Records, o, func(m stream.Msg) error {
		return eachRecord(m, func(m stream.Msg, r *auditv1.Record, err error) error {
			if err != nil || !sel.Match(r) {
				return nil
			}
			return fn(m, r)
		})
	})
}

// Export writes the header, every checkpoint, then the selected records
// (every record, readable or not, unless the selection narrows), and
// reports how many records it wrote.
func (s *Streams) Export(ctx context.Context, enc *export.Encoder, hdr export.Header, sel *Selection) (int, error) {
	if err := enc.Header(hdr); err != nil {
		return 0, err
	}
	err := stream.Scan(ctx, s.Checkpoints, stream.ScanOptions{}, func(m stream.Msg) error {
		return enc.Checkpoint(m.Seq, m.Subject, m.Data)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	err = stream.Scan(ctx, s.Records, sel.scanOptions(), func(m stream.Msg) error {
		if sel.pastEnd(m) {
			return stream.ErrStop
		}
		return eachRecord(m, func(m stream.Msg, r *auditv1.Record, err error) error {
			if err != nil {
				r = nil
			} else if hdr.Partial && !sel.Match(r) {
				return nil
			}
			n++
			return enc.Record(m.Seq, m.Subject, m.Data, r)
		})
	})
	if err != nil {
		return 0, err
	}
	return n, enc.Flush()
}

// Progress is told how far a verification is.
type Progress interface {
	Start(what string, total uint64)
	Add(n int)
}

// Verify feeds every checkpoint, then every record stored when it began,
// to v (then v.Finish reports).
func (s *Streams) Verify(ctx context.Context, v *verify.Verifier, prog Progress) error {
	ci, err := s.Checkpoints.Info(ctx)
	if err != nil {
		return err
	}
	prog.Start("checkpoints", ci.State.Msgs)
	if err := stream.Scan(ctx, s.Checkpoints, stream.ScanOptions{}, func(m stream.Msg) error {
		v.AddCheckpoint(m.Seq, m.Subject, m.Data)
		prog.Add(1)
		return nil
	}); err != nil {
		return err
	}
	ri, err := s.Records.Info(ctx)
	if err != nil {
		return err
	}
	prog.Start("records", ri.State.Msgs)
	return stream.Scan(ctx, s.Records, stream.ScanOptions{Batch: 2048}, func(m stream.Msg) error {
		if m.Seq > ri.State.LastSeq {
			return stream.ErrStop // written after the verification began
		}
		v.AddMessage(m.Seq, m.Subject, m.Header, m.Data)
		prog.Add(1)
		return nil
	})
}

// eachRecord calls fn with each record a stored message holds (format 2:
// every record of the batch, as a message with the batch's sequence and
// subject and the record's bytes; format 1: the message), parsed, or with
// the error that makes it unreadable (a batch that does not split: once,
// with the whole message).
func eachRecord(m stream.Msg, fn func(stream.Msg, *auditv1.Record, error) error) error {
	_, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data)
	if err != nil {
		return fn(m, nil, err)
	}
	for _, data := range recs {
		rm := m
		rm.Data = data
		r, err := record.Parse(data)
		if err := fn(rm, r, err); err != nil {
			return err
		}
	}
	return nil
}
