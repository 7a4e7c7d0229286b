package audit_test

// These tests try to read, forge, delete and purge the audit streams with the
// real certificates of each identity against a server configured exactly as
// production renders it. The server itself must refuse.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
)

func TestMembersCannotReadForgeDeleteOrPurgeTheAudit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := f.open(t, f.env.Connect(t, "gateway"), "gw-1")
	appendN(t, f, l, 0, 10)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}

	for _, member := range []string{"cnss", "civil-registry", "consent"} {
		t.Run(member, func(t *testing.T) {
			v := bustest.NewViolations()
			nc := f.env.Connect(t, member, nats.ErrorHandler(v.Handler))
			// The consent service writes its own log (the transitions it
			// stores: expired, used up), so it reads the streams to resume
			// it, as a gateway does; it changes nothing and forges no
			// other log.
			writer := member == "consent"
			for _, s := range []string{subject.AuditStream, subject.CheckpointStream} {
				apis := []string{
					"$JS.API.STREAM.MSG.DELETE." + s,
					"$JS.API.STREAM.PURGE." + s,
					"$JS.API.STREAM.DELETE." + s,
					"$JS.API.STREAM.UPDATE." + s,
				}
				if !writer {
					apis = append(apis,
						"$JS.API.STREAM.INFO."+s,
						"$JS.API.STREAM.MSG.GET."+s,
						"$JS.API.DIRECT.GET."+s,
						"$JS.API.CONSUMER.CREATE."+s,
						"$JS.API.CONSUMER.CREATE."+s+".spy.jisr.audit.>")
				}
				for _, api := range apis {
					if err := nc.PublishRequest(api, "_INBOX."+member+".x", []byte(`{"seq":1}`)); err != nil {
						t.Fatal(err)
					}
					v.Wait(t, api)
				}
			}
			forge := []string{"jisr.audit.gw-1.FORGED", "jisr.checkpoint.gw-1"}
			if !writer {
				// Nor the consent service's own log (expired, used up).
				forge = append(forge, "jisr.audit.consent._batch", "jisr.checkpoint.consent")
			}
			for _, s := range forge {
				if err := nc.Publish(s, []byte("forged")); err != nil {
					t.Fatal(err)
				}
				v.Wait(t, s)
			}
			if _, err := nc.SubscribeSync("jisr.audit.>"); err != nil {
				t.Fatal(err)
			}
			v.Wait(t, "jisr.audit.>")
			if writer {
				return
			}
			// Through the JetStream client, reading fails too.
			js, _ := jetstream.New(nc)
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			defer rcancel()
			if _, err := js.Stream(rctx, subject.AuditStream); err == nil {
				t.Fatal("a member read the audit stream's information")
			}
		})
	}
	if got := len(readLog(t, f, "gw-1")); got != 10 {
		t.Fatalf("%d records after the attempts, want 10", got)
	}
}

func TestAuditorReadsButCannotChange(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := f.open(t, f.env.Connect(t, "gateway"), "gw-1")
	appendN(t, f, l, 0, 10)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	v := bustest.NewViolations()
	nc := f.env.Connect(t, "auditor", nats.ErrorHandler(v.Handler))
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, subject.AuditStream)
	if err != nil {
		t.Fatalf("the auditor cannot read the stream: %v", err)
	}
	if _, err := s.GetMsg(ctx, 1); err != nil {
		t.Fatalf("the auditor cannot get a record: %v", err)
	}
	for _, api := range []string{
		"$JS.API.STREAM.MSG.DELETE." + subject.AuditStream,
		"$JS.API.STREAM.PURGE." + subject.AuditStream,
		"$JS.API.STREAM.DELETE." + subject.AuditStream,
		"$JS.API.STREAM.UPDATE." + subject.AuditStream,
		"$JS.API.STREAM.PURGE." + subject.CheckpointStream,
	} {
		if err := nc.PublishRequest(api, "_INBOX.auditor.x", []byte(`{"seq":1}`)); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, api)
	}
	if err := nc.Publish("jisr.audit.gw-1.FORGED", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	v.Wait(t, "jisr.audit.gw-1.FORGED")
}

func TestGatewayCannotDeleteOrShortenTheAudit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	v := bustest.NewViolations()
	nc := f.env.Connect(t, "gateway", nats.ErrorHandler(v.Handler))
	l := f.open(t, nc, "gw-1")
	appendN(t, f, l, 0, 10)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, subject.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	short := s.CachedInfo().Config
	short.MaxAge = time.Second
	for name, try := range map[string]func(context.Context) error{
		"delete a record": func(ctx context.Context) error { return s.DeleteMsg(ctx, 3) },
		"erase a record":  func(ctx context.Context) error { return s.SecureDeleteMsg(ctx, 3) },
		"purge":           func(ctx context.Context) error { return s.Purge(ctx) },
		"delete stream":   func(ctx context.Context) error { return js.DeleteStream(ctx, subject.AuditStream) },
		"shorten":         func(ctx context.Context) error { _, err := js.UpdateStream(ctx, short); return err },
	} {
		tctx, tcancel := context.WithTimeout(ctx, time.Second)
		err := try(tctx)
		tcancel()
		if err == nil {
			t.Errorf("the gateway could %s", name)
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("timed out")
	}
	if got := len(readLog(t, f, "gw-1")); got != 10 {
		t.Fatalf("%d records after the attempts, want 10", got)
	}
}
