package export_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jisr-bus/jisr/gateway/audit/export"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// An export is written with an Encoder and read back with a Decoder; each
// line keeps the exact stored bytes.
func Example() {
	var file bytes.Buffer
	enc := export.NewEncoder(&file)
	_ = enc.Header(export.Header{TrustDomain: "jisr.example", ExportedAt: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)})
	_ = enc.Record(1, "jisr.audit.gw-1.ck", []byte("stored bytes"), &auditv1.Record{Consumer: "cnss", Provider: "civil-registry"})
	_ = enc.Flush()

	dec := export.NewDecoder(&file, "audit.jsonl")
	for {
		l, data, _, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		switch l.Type {
		case export.TypeHeader:
			fmt.Println(l.Format, l.TrustDomain, l.ExportedAt)
		case export.TypeRecord:
			fmt.Printf("%d %s %q %s\n", l.Seq, l.Subject, data, l.Record)
		}
	}
	// Output:
	// jisr-audit-export/1 jisr.example 2026-11-01T00:00:00Z
	// 1 jisr.audit.gw-1.ck "stored bytes" {"consumer":"cnss","provider":"civil-registry"}
}
