package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// TestBadInputAndNoEIDOnTheWire sends allowed, refused and malformed queries
// through a real adapter, with the NATS server tracing every publish and
// delivery, and then looks for every eID used in the server's subject list
// and in the captured logs of every part (NATS trace included): none may be
// there. Each bad input gets its status code, without citizen data in the
// message, and nothing crashes.
func TestBadInputAndNoEIDOnTheWire(t *testing.T) {
	f := startAuditFedWith(t, t.TempDir(), process.NATSOptions{Listen: "127.0.0.1:-1", Sync: "1s", Trace: true})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	mandate := md(ctx, "jisr-purpose", "pension-continuity")

	var used []string
	for i := range 5 { // allowed, under the CNSS mandate
		used = append(used, eidN(i))
		if _, err := f.cnss.IsAlive(mandate, &civilv1.IsAliveRequest{Eid: eidN(i)}); err != nil {
			t.Fatalf("allowed query: %v", err)
		}
	}

	big := &civilv1.IsAliveRequest{Eid: eidN(7)}
	big.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), make([]byte, 2<<20)))
	long := strings.Repeat("A1", 5<<10)
	for _, c := range []struct {
		name string
		call func() error
		eid  string
		want []codes.Code
	}{
		{"no consent", func() error {
			_, err := f.cnss.GetPerson(md(ctx, "jisr-purpose", "amo-enrolment"), &civilv1.GetPersonRequest{Eid: eidN(5)})
			return err
		}, eidN(5), []codes.Code{codes.Unauthenticated}},
		{"unknown citizen", func() error {
			_, err := f.cnss.IsAlive(mandate, &civilv1.IsAliveRequest{Eid: "ZZ999999"})
			return err
		}, "ZZ999999", []codes.Code{codes.NotFound}},
		{"eid with dot", func() error {
			_, err := f.cnss.IsAlive(mandate, &civilv1.IsAliveRequest{Eid: "AB.123"})
			return err
		}, "AB.123", []codes.Code{codes.InvalidArgument}},
		{"eid with wildcard", func() error {
			_, err := f.cnss.IsAlive(mandate, &civilv1.IsAliveRequest{Eid: "AB>*12"})
			return err
		}, "AB>*12", []codes.Code{codes.InvalidArgument}},
		{"eid with space", func() error {
			_, err := f.cnss.IsAlive(mandate, &civilv1.IsAliveRequest{Eid: "AB 1234"})
			return err
		}, "AB 1234", []codes.Code{codes.InvalidArgument}},
		{"eid non-ascii", func() error {
			_, err := f.cnss.IsAlive(mandate, &civilv1.IsAliveRequest{Eid: "ÄB1234"})
			return err
		}, "ÄB1234", []codes.Code{codes.InvalidArgument}},
		{"eid of 10 KB", func() error {
			_, err := f.cnss.IsAlive(mandate, &civilv1.IsAliveRequest{Eid: long})
			return err
		}, long, []codes.Code{codes.InvalidArgument}},
		{"payload over the NATS limit", func() error {
			_, err := f.cnss.IsAlive(mandate, big)
			return err
		}, eidN(7), []codes.Code{codes.InvalidArgument, codes.ResourceExhausted}},
		{"unknown service", func() error {
			return f.cnssConn.Invoke(ctx, "/jisr.nowhere.v1.Nowhere/Get", &civilv1.IsAliveRequest{Eid: eidN(8)}, &civilv1.IsAliveResponse{})
		}, eidN(8), []codes.Code{codes.Unimplemented, codes.NotFound}},
		{"unknown method", func() error {
			return f.cnssConn.Invoke(ctx, "/jisr.civilregistry.v1.CivilRegistry/DropTables", &civilv1.IsAliveRequest{Eid: eidN(9)}, &civilv1.IsAliveResponse{})
		}, eidN(9), []codes.Code{codes.Unimplemented, codes.NotFound}},
	} {
		t.Run(c.name, func(t *testing.T) {
			used = append(used, c.eid)
			err := c.call()
			st := status.Convert(err)
			ok := false
			for _, w := range c.want {
				ok = ok || st.Code() == w
			}
			if !ok {
				t.Fatalf("got %v %q, want one of %v", st.Code(), st.Message(), c.want)
			}
			if strings.Contains(st.Message(), c.eid) {
				t.Fatalf("the status message carries the eID: %q", st.Message())
			}
		})
	}

	// Still serving after all that.
	if _, err := f.cnss.IsAlive(mandate, &civilv1.IsAliveRequest{Eid: eidN(10)}); err != nil {
		t.Fatalf("the federation stopped serving after bad input: %v", err)
	}
	used = append(used, eidN(10))

	subsz, err := f.nats.NATS().Subsz(&server.SubszOptions{Subscriptions: true, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for _, s := range subsz.Subs {
		subjects = append(subjects, s.Subject)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "jisr.q.cnss.") || !strings.Contains(logs, "jisr.p.civil-registry.") {
		t.Fatal("the NATS protocol trace did not capture the query subjects; the scan below would prove nothing")
	}
	t.Logf("scanned %d subscriptions and %d log lines (%d traced payloads)", len(subjects), strings.Count(logs, "\n"), strings.Count(logs, "MSG_PAYLOAD"))
	for _, e := range used {
		for _, v := range []string{e, strings.ToUpper(e)} {
			for _, s := range subjects {
				if strings.Contains(s, v) {
					t.Fatalf("subscription subject %q carries an eID", s)
				}
			}
			if strings.Contains(logs, v) {
				i := strings.Index(logs, v)
				t.Fatalf("the logs carry an eID: …%s…", logs[max(0, i-200):min(len(logs), i+50)])
			}
		}
	}
}
