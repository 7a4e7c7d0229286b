// Package export is the audit log's export file, documented in
// docs/audit.md: JSON Lines, a header (format, trust domain, time, the
// logs' public keys, the selection of a partial export), every signed
// checkpoint, then the records — each line with the exact stored bytes
// (base64, what the Merkle tree hashes) and a readable copy.
//
// An [Encoder] writes one; a [Decoder] reads one back, line by line, and
// checks its shape; [LoadInto] feeds a whole export to a verifier, so the
// data-protection authority verifies it offline.
package export

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/gateway/audit/verify"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Format names this version of the export format, in the header.
const Format = "jisr-audit-export/1"

// The types of line.
const (
	TypeHeader     = "header"
	TypeCheckpoint = "checkpoint"
	TypeRecord     = "record"
)

// Line is one line of an export file.
type Line struct {
	Type string `json:"type"` // header, checkpoint, record
	// header
	Format      string   `json:"format,omitempty"`
	TrustDomain string   `json:"trust_domain,omitempty"`
	ExportedAt  string   `json:"exported_at,omitempty"`
	Partial     bool     `json:"partial,omitempty"`
	Selection   string   `json:"selection,omitempty"`
	Keys        []string `json:"keys,omitempty"`
	// checkpoint and record
	Seq     uint64          `json:"seq,omitempty"`
	Subject string          `json:"subject,omitempty"`
	Data    string          `json:"data,omitempty"` // base64 of the exact stored bytes
	Record  json.RawMessage `json:"record,omitempty"`
	Note    string          `json:"checkpoint,omitempty"`
}

// Header is what an export's first line says about it.
type Header struct {
	TrustDomain string
	ExportedAt  time.Time
	// Partial marks an export narrowed by a Selection: its records can be
	// read, but the logs cannot be recomputed from it.
	Partial   bool
	Selection string
	Keys      []string // the logs' public keys, as note verifier keys
}

// Encoder writes an export file.
type Encoder struct {
	bw  *bufio.Writer
	enc *json.Encoder
}

// NewEncoder writes an export to w; call Flush at the end.
func NewEncoder(w io.Writer) *Encoder {
	bw := bufio.NewWriterSize(w, 1<<20)
	return &Encoder{bw: bw, enc: json.NewEncoder(bw)}
}

// Header writes the first line.
func (e *Encoder) Header(h Header) error {
	return e.enc.Encode(Line{
		Type: TypeHeader, Format: Format, TrustDomain: h.TrustDomain, ExportedAt: h.ExportedAt.UTC().Format(time.RFC3339),
		Partial: h.Partial, Selection: h.Selection, Keys: h.Keys,
	})
}

// Checkpoint writes a message of the checkpoints stream, with the signed
// note it carries.
func (e *Encoder) Checkpoint(seq uint64, subject string, data []byte) error {
	st := &auditv1.CheckpointState{}
	_ = proto.Unmarshal(data, st)
	return e.enc.Encode(Line{Type: TypeCheckpoint, Seq: seq, Subject: subject, Data: base64.StdEncoding.EncodeToString(data), Note: st.GetCheckpoint()})
}

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// Record writes a message of the audit stream; r, its parsed record, gives
// the readable copy (nil for a message that is not a valid record).
func (e *Encoder) Record(seq uint64, subject string, data []byte, r *auditv1.Record) error {
	line := Line{Type: TypeRecord, Seq: seq, Subject: subject, Data: base64.StdEncoding.EncodeToString(data)}
	if r != nil {
		line.Record, _ = jsonOpts.Marshal(r)
	}
	return e.enc.Encode(line)
}

// Flush writes what is buffered.
func (e *Encoder) Flush() error { return e.bw.Flush() }

// Errors of a file that is not an export, or not one that verifies as a whole.
var (
	ErrNotExport = errors.New("not an export")
	ErrPartial   = errors.New("it cannot be verified as a whole")
)

// Decoder reads an export file line by line, checking its shape: a header
// of this format first, then checkpoints, then records.
type Decoder struct {
	sc         *bufio.Scanner
	name       string
	lineNo     int
	seenRecord bool
	header     *Line
}

// NewDecoder reads an export from r; name (a file name) prefixes errors.
func NewDecoder(r io.Reader, name string) *Decoder {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	return &Decoder{sc: sc, name: name}
}

// Next returns the next line, its stored bytes decoded, and the size of
// the line in the file; io.EOF after the last.
func (d *Decoder) Next() (*Line, []byte, int, error) {
	if !d.sc.Scan() {
		if err := d.sc.Err(); err != nil {
			return nil, nil, 0, err
		}
		if d.header == nil {
			return nil, nil, 0, fmt.Errorf("%s: empty export: %w", d.name, ErrNotExport)
		}
		return nil, nil, 0, io.EOF
	}
	d.lineNo++
	size := len(d.sc.Bytes()) + 1
	var l Line
	if err := json.Unmarshal(d.sc.Bytes(), &l); err != nil {
		return nil, nil, size, fmt.Errorf("%s:%d: not an export line: %w", d.name, d.lineNo, err)
	}
	data, err := base64.StdEncoding.DecodeString(l.Data)
	if err != nil {
		return nil, nil, size, fmt.Errorf("%s:%d: bad data: %w", d.name, d.lineNo, err)
	}
	switch {
	case l.Type == TypeHeader && d.lineNo == 1:
		if l.Format != Format {
			return nil, nil, size, fmt.Errorf("%s: format %q, want %q: %w", d.name, l.Format, Format, ErrNotExport)
		}
		d.header = &l
	case d.header == nil:
		return nil, nil, size, fmt.Errorf("%s: the first line is not an export header: %w", d.name, ErrNotExport)
	case l.Type == TypeCheckpoint && !d.seenRecord:
	case l.Type == TypeRecord:
		d.seenRecord = true
	default:
		return nil, nil, size, fmt.Errorf("%s:%d: unexpected line type %q", d.name, d.lineNo, l.Type)
	}
	return &l, data, size, nil
}

// LoadInto adds every checkpoint and record of a whole export to v (then
// v.Finish reports). A partial export is refused. progress, when not nil,
// is told the bytes read after each line.
func LoadInto(r io.Reader, name string, v *verify.Verifier, progress func(bytes int)) error {
	d := NewDecoder(r, name)
	for {
		l, data, size, err := d.Next()
		if progress != nil && size > 0 {
			progress(size)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch l.Type {
		case TypeHeader:
			if l.Partial {
				return fmt.Errorf("%s is a partial export (%s): %w", name, l.Selection, ErrPartial)
			}
		case TypeCheckpoint:
			v.AddCheckpoint(l.Seq, l.Subject, data)
		case TypeRecord:
			v.AddRecord(l.Seq, l.Subject, data)
		}
	}
}
