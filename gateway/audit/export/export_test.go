package export_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/export"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
)

func TestDecoderRefusesWhatIsNotAnExport(t *testing.T) {
	hdr := `{"type":"header","format":"jisr-audit-export/1","trust_domain":"jisr.example"}` + "\n"
	rec := `{"type":"record","seq":1,"subject":"s","data":"` + base64.StdEncoding.EncodeToString([]byte("x")) + `"}` + "\n"
	ckpt := `{"type":"checkpoint","seq":1,"subject":"c","data":""}` + "\n"
	for name, file := range map[string]string{
		"empty":                    "",
		"no header":                rec,
		"another format":           `{"type":"header","format":"jisr-audit-export/2"}` + "\n",
		"not JSON":                 hdr + "{\n",
		"bad base64":               hdr + `{"type":"record","data":"!!"}` + "\n",
		"checkpoint after records": hdr + rec + ckpt,
		"unknown type":             hdr + `{"type":"other"}` + "\n",
		"second header":            hdr + hdr,
	} {
		if _, err := readAll(file); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	lines, err := readAll(hdr + ckpt + rec + rec)
	if err != nil || len(lines) != 4 {
		t.Fatalf("a valid export: %d lines, %v", len(lines), err)
	}
}

func readAll(file string) ([]*export.Line, error) {
	d := export.NewDecoder(strings.NewReader(file), "f")
	var out []*export.Line
	for {
		l, _, _, err := d.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, l)
	}
}

func TestLoadIntoRefusesAPartialExport(t *testing.T) {
	var file bytes.Buffer
	enc := export.NewEncoder(&file)
	if err := enc.Header(export.Header{TrustDomain: "jisr.example", ExportedAt: time.Now(), Partial: true, Selection: "--consumer=cnss"}); err != nil {
		t.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	keys, err := checkpoint.LoadPublicKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(verify.Config{TrustDomain: "jisr.example", Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	err = export.LoadInto(&file, "f", v, nil)
	if !errors.Is(err, export.ErrPartial) {
		t.Fatalf("partial export: %v", err)
	}
}

// FuzzDecodeExport: no input makes the decoder panic, and every line it
// accepts re-encodes to a line it decodes to the same stored bytes.
func FuzzDecodeExport(f *testing.F) {
	f.Add([]byte(`{"type":"header","format":"jisr-audit-export/1","trust_domain":"jisr.example","exported_at":"2026-11-01T00:00:00Z"}` + "\n" +
		`{"type":"checkpoint","seq":1,"subject":"jisr.audit.checkpoint.gw-1","data":"AA==","checkpoint":"note"}` + "\n" +
		`{"type":"record","seq":2,"subject":"jisr.audit.gw-1.ck","data":"eA==","record":{"consumer":"cnss"}}` + "\n"))
	f.Add([]byte(`{"type":"header","format":"jisr-audit-export/1","partial":true,"selection":"--log=gw-1"}`))
	f.Add([]byte("{\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := export.NewDecoder(bytes.NewReader(b), "fuzz")
		for {
			l, data, _, err := d.Next()
			if err != nil {
				return
			}
			if l.Type != export.TypeRecord {
				continue
			}
			var out bytes.Buffer
			enc := export.NewEncoder(&out)
			if err := enc.Header(export.Header{}); err != nil {
				t.Fatal(err)
			}
			if err := enc.Record(l.Seq, l.Subject, data, nil); err != nil {
				t.Fatal(err)
			}
			if err := enc.Flush(); err != nil {
				t.Fatal(err)
			}
			d2 := export.NewDecoder(&out, "re-encoded")
			_, _, _, _ = d2.Next()
			l2, data2, _, err := d2.Next()
			if err != nil || l2.Seq != l.Seq || l2.Subject != l.Subject || !bytes.Equal(data2, data) {
				t.Fatalf("re-encoded record: %v", err)
			}
		}
	})
}
