package audit_test

// The audit streams in their own account (natsconf.Config.AuditAccount):
// the gateway writes and reads them from FED through AUDIT's exports, the
// auditor reads them in AUDIT, and nothing else crosses.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

func TestAuditAccount(t *testing.T) {
	t.Parallel()
	f := &fixture{env: bustest.Start(t, bustest.WithAuditAccount()), keys: t.TempDir()}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// The audit operator creates the audit streams in AUDIT, the operator
	// the buckets in FED (jisr nats init --audit-account).
	rs, err := natsstate.InitSplit(ctx, f.env.Connect(t, "operator"), f.env.Connect(t, natsconf.AuditOperator), stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	all, err := natsstate.All(stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(all) {
		t.Fatalf("%d streams and buckets created, want %d (natsstate.All)", len(rs), len(all))
	}
	// The operator of FED cannot create them in AUDIT's place: its
	// JetStream is FED's, and the auditor's is AUDIT's.
	ojs, _ := jetstream.New(f.env.Connect(t, "operator"))
	if _, err := ojs.Stream(ctx, subject.AuditStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("the audit stream seen in FED: %v", err)
	}
	if _, err := ojs.KeyValue(ctx, subject.RevocationBucket); err != nil {
		t.Fatalf("the revocation bucket in FED: %v", err)
	}

	// The gateway, in FED, writes the log through the prefixed API.
	gv := bustest.NewViolations()
	gw := f.env.Connect(t, "gateway", nats.ErrorHandler(gv.Handler))
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if _, err := audit.Open(pctx, audit.Config{Conn: gw, TrustDomain: td, LogID: "gw-1", Key: f.key(t, "gw-1")}); err == nil {
		t.Fatal("the gateway opened the log with the plain API: FED must not see AUDIT's streams there")
	}
	l := f.open(t, gw, "gw-1", audit.WithAPIPrefix(natsconf.AuditAPIPrefix))
	appendN(t, f, l, 0, 10)
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Reopened, it resumes from what AUDIT stores (stream info, direct get,
	// pull consumers through the prefix).
	l = f.open(t, gw, "gw-1", audit.WithAPIPrefix(natsconf.AuditAPIPrefix))
	appendN(t, f, l, 10, 5)
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The auditor, in AUDIT, reads every record and the checkpoint.
	recs := readLog(t, f, "gw-1")
	if len(recs) != 15 {
		t.Fatalf("the auditor reads %d records, want 15", len(recs))
	}
	checkChain(t, recs)
	auditor := f.env.Connect(t, "auditor")
	rjs, _ := jetstream.New(auditor)
	cs, err := rjs.Stream(ctx, subject.CheckpointStream)
	if err != nil {
		t.Fatalf("the auditor cannot read the checkpoints: %v", err)
	}
	if _, err := cs.GetLastMsgForSubject(ctx, "jisr.checkpoint.gw-1"); err != nil {
		t.Fatalf("no checkpoint in AUDIT: %v", err)
	}

	// A member reaches nothing of AUDIT.
	mv := bustest.NewViolations()
	member := f.env.Connect(t, "cnss", nats.ErrorHandler(mv.Handler))
	for _, s := range []string{
		"jisr.audit.gw-1.FORGED", "jisr.checkpoint.gw-1",
		natsconf.AuditAPIPrefix + ".STREAM.INFO." + subject.AuditStream,
		natsconf.AuditAPIPrefix + ".DIRECT.GET." + subject.AuditStream,
		natsconf.AuditAPIPrefix + ".CONSUMER.CREATE." + subject.AuditStream,
	} {
		if err := member.PublishRequest(s, "_INBOX.cnss.x", []byte(`{"seq":1}`)); err != nil {
			t.Fatal(err)
		}
		mv.Wait(t, s)
	}

	// The consent service, in FED, writes its own log only: not a
	// gateway's records or checkpoints, nothing of AUDIT's API it was not
	// given.
	cv := bustest.NewViolations()
	cw := f.env.Connect(t, "consent", nats.ErrorHandler(cv.Handler))
	for _, s := range []string{
		"jisr.audit.gw-1._batch", "jisr.audit.gw-1.FORGED", "jisr.checkpoint.gw-1",
		natsconf.AuditAPIPrefix + ".STREAM.DELETE." + subject.AuditStream,
		natsconf.AuditAPIPrefix + ".STREAM.PURGE." + subject.AuditStream,
		"$JS.API.STREAM.MSG.DELETE." + subject.AuditStream,
	} {
		if err := cw.PublishRequest(s, "_INBOX.consent.x", []byte(`{"seq":1}`)); err != nil {
			t.Fatal(err)
		}
		cv.Wait(t, s)
	}

	// The auditor writes nothing.
	av := bustest.NewViolations()
	aw := f.env.Connect(t, "auditor", nats.ErrorHandler(av.Handler))
	for _, s := range []string{"jisr.audit.gw-1.FORGED", "jisr.checkpoint.gw-1", "$JS.API.STREAM.DELETE." + subject.AuditStream} {
		if err := aw.Publish(s, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		av.Wait(t, s)
	}

	// The gateway cannot delete, purge or update the audit streams: not
	// through the prefix (not exported), not through the plain API (denied,
	// and in FED it would not reach AUDIT).
	for _, s := range []string{subject.AuditStream, subject.CheckpointStream} {
		for _, api := range []string{"STREAM.DELETE.", "STREAM.PURGE.", "STREAM.UPDATE.", "STREAM.MSG.DELETE.", "STREAM.CREATE."} {
			for _, prefix := range []string{natsconf.AuditAPIPrefix + ".", "$JS.API."} {
				subj := prefix + api + s
				if err := gw.PublishRequest(subj, "_INBOX.gateway.x", []byte(`{"seq":1}`)); err != nil {
					t.Fatal(err)
				}
				gv.Wait(t, subj)
			}
		}
	}
	// FED's operator holds $JS.API.>, but FED's JetStream is not AUDIT's.
	if err := ojs.DeleteStream(ctx, subject.AuditStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("FED's operator deleting the audit stream: %v, want not found", err)
	}

	// A push consumer created through the prefix delivers in AUDIT, never
	// into FED: the gateway's subscriber on its deliver subject gets nothing
	// and the consumer sees no interest. And one that delivers onto AUDIT's
	// own JetStream API deletes nothing.
	sub, err := gw.SubscribeSync("_INBOX.gateway.push")
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Flush(); err != nil {
		t.Fatal(err)
	}
	for name, deliver := range map[string]string{
		"tofed":    "_INBOX.gateway.push",
		"toapi":    "$JS.API.STREAM.DELETE." + subject.CheckpointStream,
		"toapiall": "$JS.API.STREAM.PURGE." + subject.CheckpointStream,
		"cross":    "jisr.checkpoint.gw-1", // the other audit stream's subjects
	} {
		req, _ := json.Marshal(map[string]any{"stream_name": subject.AuditStream, "config": map[string]any{
			"name": name, "deliver_subject": deliver, "ack_policy": "none", "deliver_policy": "all",
		}})
		m, err := gw.Request(natsconf.AuditAPIPrefix+".CONSUMER.CREATE."+subject.AuditStream+"."+name, req, 5*time.Second)
		if err != nil {
			t.Fatalf("push consumer %s: %v", name, err)
		}
		if !json.Valid(m.Data) || !strings.Contains(string(m.Data), `"deliver_subject"`) {
			t.Fatalf("push consumer %s: %s", name, m.Data)
		}
	}
	// A push consumer delivers only while its deliver subject has interest
	// in its own account: none of these has any in AUDIT, so none delivers
	// (and, inactive, each goes away after a few seconds).
	for _, name := range []string{"tofed", "toapi", "toapiall", "cross"} {
		m, err := auditor.Request("$JS.API.CONSUMER.INFO."+subject.AuditStream+"."+name, nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ci jetstream.ConsumerInfo
		if err := json.Unmarshal(m.Data, &ci); err != nil || ci.Name != name {
			t.Fatalf("consumer %s: %v %s", name, err, m.Data)
		}
		if ci.PushBound || ci.Delivered.Stream != 0 {
			t.Fatalf("push consumer %s: bound %v, delivered %d", name, ci.PushBound, ci.Delivered.Stream)
		}
	}
	if m, err := sub.NextMsg(0); err == nil {
		t.Fatalf("FED received %q from a push consumer of AUDIT", m.Subject)
	}
	ci, err := cs.Info(ctx)
	if err != nil {
		t.Fatalf("the checkpoint stream after push deliveries onto the API: %v", err)
	}
	if ci.State.Msgs == 0 {
		t.Fatal("the checkpoint stream was purged")
	}
	if got := len(readLog(t, f, "gw-1")); got != 15 {
		t.Fatalf("%d records after the attempts, want 15", got)
	}
	if errs := gv.Errors(); len(errs) == 0 {
		t.Fatal("no violation recorded for the gateway")
	}
}
