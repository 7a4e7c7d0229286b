package auditor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Printer writes records as a table (for people) or as JSON lines, one
// {seq, subject, record} object each (for tools).
type Printer struct {
	json bool
	tw   *tabwriter.Writer
	out  io.Writer
	n    int
}

// NewPrinter writes to out; Flush at the end.
func NewPrinter(out io.Writer, asJSON bool) *Printer {
	p := &Printer{json: asJSON, out: out}
	if !asJSON {
		p.tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(p.tw, "TIME\tLOG:LEAF\tCONSUMER\tPROVIDER\tMETHOD\tPURPOSE\tBASIS\tDECISION\tFIELDS\tTRACE")
	}
	return p
}

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// Print writes one record.
func (p *Printer) Print(m stream.Msg, r *auditv1.Record) error {
	p.n++
	if p.json {
		rec, err := jsonOpts.Marshal(r)
		if err != nil {
			return err
		}
		line, err := json.Marshal(struct {
			Seq     uint64          `json:"seq"`
			Subject string          `json:"subject"`
			Record  json.RawMessage `json:"record"`
		}{m.Seq, m.Subject, rec})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(p.out, string(line))
		return err
	}
	decision := "allowed"
	if r.GetDecision() != auditv1.Decision_DECISION_ALLOWED {
		decision = "refused " + r.GetReason() + " (" + codes.Code(r.GetStatusCode()).String() + ")"
	}
	basis := r.GetLegalBasis()
	if r.GetLaw() != "" {
		basis += ": " + r.GetLaw()
	}
	method := r.GetMethod()
	if svc := r.GetService(); svc != "" {
		method = svc[strings.LastIndex(svc, ".")+1:] + "/" + method
	}
	fields := strings.Join(r.GetFields(), ",")
	if fields == "" && r.GetDecision() == auditv1.Decision_DECISION_ALLOWED {
		fields = "(whole reply)"
	}
	fmt.Fprintf(p.tw, "%s\t%s:%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
		r.GetTime().AsTime().UTC().Format(time.RFC3339), r.GetLogId(), r.GetLeafIndex(), dash(r.GetConsumer()), dash(r.GetProvider()),
		dash(method), dash(r.GetPurpose()), dash(basis), decision, dash(fields), dash(r.GetTraceId()))
	return nil
}

// Flush writes what the table holds.
func (p *Printer) Flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Count is how many records were printed.
func (p *Printer) Count() int { return p.n }

// WriteReport writes a verification report: a line per log, the
// messages that are not records, then OK or the problems.
func WriteReport(w io.Writer, rep *verify.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LOG\tRECORDS\tCHECKPOINTS\tSIGNED SIZE\tNOT YET SIGNED\tDUPLICATES\tSTATUS")
	for _, l := range rep.Logs {
		st := "ok"
		if l.FirstBad != nil {
			st = fmt.Sprintf("FIRST BAD RECORD: %d (%s)", l.FirstBad.Leaf, l.FirstBad.Kind)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", l.ID, l.Records, l.Checkpoints, l.CheckpointSize, l.Uncovered, l.Duplicates, st)
	}
	tw.Flush()
	writeForeign(w, rep)
	if rep.OK() {
		fmt.Fprintf(w, "\nOK: %d record(s) and %d checkpoint(s) verified.\n", rep.Records, rep.CheckpointMsgs)
		return
	}
	fmt.Fprintf(w, "\nFAILED: %d problem(s):\n", len(rep.Problems))
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

func writeForeign(w io.Writer, rep *verify.Report) {
	if len(rep.Foreign) == 0 {
		return
	}
	fmt.Fprintf(w, "\nWARNING: %d message(s) on the audit subjects are not records of their log; they change nothing in the logs, but only the gateway may publish there:\n", len(rep.Foreign))
	for _, p := range rep.Foreign {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// Tail prints the latest n selected records, then (when follow) the new
// ones as they come, until ctx ends.
func (s *Streams) Tail(ctx context.Context, sel *Selection, n int, follow bool, p *Printer) error {
	ring, last, err := s.Latest(ctx, sel, n)
	if err != nil {
		return err
	}
	for _, m := range ring {
		r, _ := record.Parse(m.Data)
		if err := p.Print(m, r); err != nil {
			return err
		}
	}
	if err := p.Flush(); err != nil || !follow {
		return err
	}
	err = s.Follow(ctx, sel, last, func(m stream.Msg, r *auditv1.Record) error {
		if err := p.Print(m, r); err != nil {
			return err
		}
		return p.Flush()
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// PrintQuery writes the records sel selects with p, at most limit (0:
// all), as `jisr audit query` does: a record that does not parse is named
// on info by its sequence, and so is the count (unless asJSON).
func (s *Streams) PrintQuery(ctx context.Context, sel *Selection, p *Printer, limit int, asJSON bool, info io.Writer) error {
	err := s.Query(ctx, sel, func(m stream.Msg, r *auditv1.Record) error {
		if err := p.Print(m, r); err != nil {
			return err
		}
		if limit > 0 && p.Count() >= limit {
			return stream.ErrStop
		}
		return nil
	}, func(seq uint64) {
		fmt.Fprintf(info, "sequence %d is not a valid record (run jisr audit verify)\n", seq)
	})
	if ferr := p.Flush(); err == nil {
		err = ferr
	}
	if err == nil && !asJSON {
		fmt.Fprintf(info, "%d record(s)\n", p.Count())
	}
	return err
}
