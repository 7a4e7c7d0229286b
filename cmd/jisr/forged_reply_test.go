package main

// The attack table of issue 11: a member, with nothing but its own
// certificate, asks the gateway a valid-looking query on its own jisr.q
// subject with a reply subject it chose — the JetStream API of every stream
// and bucket, a key of every bucket, every stream's subjects, another
// member's inbox, provider and query subjects. Then the same requests with
// the gateway's own certificate, as if the gateway were compromised. The
// federation is the real one (embedded NATS with the production
// configuration, real certificates, the real gateway, consent service,
// audit log and adapters), and the streams and buckets are taken from
// gateway/natsstate, the list `jisr nats init` creates.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

const civilService = "jisr.civilregistry.v1.CivilRegistry"

// stateOf is what a stream or bucket holds.
type stateOf struct {
	cfg   jetstream.StreamConfig
	state jetstream.StreamState
}

func TestForgedRepliesReachNothing(t *testing.T) {
	f := startAuditFed(t, t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	fed, err := f.g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	keyer, err := f.g.Keyer()
	if err != nil {
		t.Fatal(err)
	}
	connect := func(identity string, opts ...nats.Option) *nats.Conn {
		t.Helper()
		nc, src, err := f.g.Connect(ctx, identity, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close(); src.Close() })
		return nc
	}

	// The citizen's consents: one valid, one revoked, one used up.
	eid := eidN(60)
	ck := keyer.CKey(eid)
	svc := f.gw.ConsentService()
	grant := func(maxUses int) *consent.GrantResponse {
		t.Helper()
		g, err := svc.Grant(ctx, ck, consent.GrantRequest{To: "cnss", Service: civilService, Methods: []string{"GetPerson"},
			Purpose: "amo-enrolment", TTL: "1h", MaxUses: maxUses})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	valid, revoked, usedUp := grant(0), grant(0), grant(1)
	getPerson := func(token string) error {
		_, err := f.cnss.GetPerson(md(ctx, "jisr-purpose", "amo-enrolment", "jisr-consent", token), &civilv1.GetPersonRequest{Eid: eid})
		return err
	}
	refusedFor := func(token string) string { // the refusal's reason, "" when answered
		err := getPerson(token)
		if err == nil {
			return ""
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("want PermissionDenied, got %v", err)
		}
		return decision.ReasonOf(status.Convert(err))
	}
	if err := getPerson(valid.Token); err != nil {
		t.Fatal(err)
	}
	if err := getPerson(usedUp.Token); err != nil {
		t.Fatal(err)
	}
	usedUpReason := refusedFor(usedUp.Token)
	if usedUpReason == "" {
		t.Fatal("a token of one use was used twice")
	}
	if _, err := svc.RevokeFor(ctx, ck, revoked.ID); err != nil { // the citizen revokes, through the consent service
		t.Fatal(err)
	}
	revokedReason := ""
	for revokedReason == "" { // until the gateway's revocation watch has it
		if revokedReason = refusedFor(revoked.Token); ctx.Err() != nil {
			t.Fatal("the revocation never reached the gateway")
		}
	}

	// A legitimate raw query carrying headers of NATS's own (Nats-*, KV-*)
	// and a stranger: none of them reaches the provider or the reply.
	svcTok := subject.ServiceToken(civilService)
	qsubj, err := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: svcTok, Method: "GetPerson", CKey: ck}.Subject()
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(&civilv1.GetPersonRequest{Eid: eid})
	if err != nil {
		t.Fatal(err)
	}
	hostile := func() nats.Header {
		h := nats.Header{}
		h.Set(bus.HeaderPurpose, "amo-enrolment")
		h.Set(bus.HeaderConsent, valid.Token)
		for k, v := range map[string]string{"Nats-Msg-Id": "forged", "Nats-Rollup": "all", "Nats-TTL": "1s",
			"Nats-Expected-Stream": subject.AuditStream, "Nats-Expected-Last-Subject-Sequence": "0", "KV-Operation": "PURGE", "X-Evil": "1"} {
			h.Set(k, v)
		}
		return h
	}
	cnss := connect("cnss")
	provider := connect("civil-registry")
	atProvider := make(chan *nats.Msg, 4)
	psub, err := provider.ChanSubscribe(subject.ProviderQueries("civil-registry"), atProvider)
	if err != nil {
		t.Fatal(err)
	}
	if err := provider.Flush(); err != nil {
		t.Fatal(err)
	}
	reply, err := cnss.RequestMsgWithContext(ctx, &nats.Msg{Subject: qsubj, Data: data, Header: hostile()})
	if err != nil {
		t.Fatal(err)
	}
	if st := bus.StatusOf(reply.Header); st.Code() != codes.OK {
		t.Fatalf("the legitimate raw query: %v", st)
	}
	for k := range reply.Header {
		if k != bus.HeaderGateway {
			t.Errorf("the reply carries the header %q", k)
		}
	}
	select {
	case m := <-atProvider:
		allowed := map[string]bool{bus.HeaderPurpose: true, bus.HeaderConsumer: true, bus.HeaderTimeout: true,
			bus.HeaderTraceparent: true, bus.HeaderTracestate: true}
		for k := range m.Header {
			if !allowed[k] {
				t.Errorf("the provider got the header %q", k)
			}
		}
	case <-ctx.Done():
		t.Fatal("the provider never saw the query")
	}
	if err := psub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}

	// Every other member listens on its inbox and provider subject.
	leaked := make(chan *nats.Msg, 64)
	var listeners []*nats.Conn
	for _, m := range fed.Members {
		if m.Name == "cnss" {
			continue
		}
		nc := connect(m.Name)
		for _, s := range []string{subject.Inbox(m.Name) + ".>", subject.ProviderQueries(m.Name)} {
			if _, err := nc.ChanSubscribe(s, leaked); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, nc)
	}

	// What every stream and bucket holds, read by the operator.
	op := connect(subject.Operator)
	ojs, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	specs, err := natsstate.All(stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	snapshot := func() map[string]stateOf {
		t.Helper()
		out := map[string]stateOf{}
		for _, sp := range specs {
			s, err := ojs.Stream(ctx, sp.Stream)
			if err != nil {
				t.Fatalf("%s: %v", sp.Name(), err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			out[sp.Name()] = stateOf{info.Config, info.State}
		}
		return out
	}
	keys := map[string]string{ // one existing key of each bucket
		subject.ConsentBucket:    ck + "." + valid.ID,
		subject.RevocationBucket: revoked.ID,
		subject.UsageBucket:      usedUp.ID,
	}
	values := func() map[string]string {
		t.Helper()
		out := map[string]string{}
		for b, k := range keys {
			kv, err := ojs.KeyValue(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			e, err := kv.Get(ctx, k)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				out[b] = "erased"
				continue
			}
			if err != nil {
				t.Fatalf("%s %s: %v", b, k, err)
			}
			out[b] = fmt.Sprintf("%q@%d", e.Value(), e.Revision())
		}
		return out
	}
	before, beforeValues := snapshot(), values()

	// The table. Each row is one query, valid but for its reply subject.
	type row struct{ name, reply string }
	var rows []row
	for _, sp := range specs {
		for _, api := range []string{"STREAM.DELETE", "STREAM.PURGE", "STREAM.UPDATE", "STREAM.MSG.DELETE", "DIRECT.GET", "STREAM.INFO"} {
			rows = append(rows, row{api + " " + sp.Name(), "$JS.API." + api + "." + sp.Stream})
		}
		rows = append(rows, row{"direct get of a key or subject of " + sp.Name(), "$JS.API.DIRECT.GET." + sp.Stream + "." + strings.TrimSuffix(sp.Config.Subjects[0], ">") + "x"})
		if sp.Bucket != "" {
			rows = append(rows, row{"put into " + sp.Bucket, "$KV." + sp.Bucket + "." + keys[sp.Bucket]})
		} else {
			rows = append(rows, row{"publish into " + sp.Name(), strings.TrimSuffix(sp.Config.Subjects[0], ">") + "gw-1"})
		}
	}
	for _, m := range fed.Members {
		if m.Name == "cnss" {
			continue
		}
		rows = append(rows,
			row{"inbox of " + m.Name, subject.Inbox(m.Name) + ".leak"},
			row{"provider subject of " + m.Name, "jisr.p." + m.Name + "." + svcTok + ".GetPerson." + ck},
			row{"query subject of " + m.Name, "jisr.q." + m.Name + ".civil-registry." + svcTok + ".GetPerson." + ck},
		)
	}
	rows = append(rows,
		row{"the gateway's own inbox", subject.Inbox("gateway") + ".x"},
		row{"no reply at all", ""},
		row{"an inbox without a token", subject.Inbox("cnss")},
		row{"a look-alike inbox", subject.Inbox("cnssx") + ".a"},
		row{"the whole JetStream account", "$JS.API.ACCOUNT.PURGE.x"},
	)

	// The auditor follows the records written from now on.
	records, closeRecords, err := auditorRecords(ctx, f.g)
	if err != nil {
		t.Fatal(err)
	}
	defer closeRecords()
	base := before[subject.AuditStream].state.LastSeq
	followed := make(chan stream.Msg, len(rows)+8)
	fctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	go func() {
		_ = stream.Scan(fctx, records, stream.ScanOptions{StartSeq: base + 1, Follow: true}, func(m stream.Msg) error {
			for _, r := range recordsOf(m) {
				followed <- r
			}
			return nil
		})
	}()
	nextRecord := func(t *testing.T) (uint64, *auditv1.Record) {
		t.Helper()
		select {
		case m := <-followed:
			r, err := record.Parse(m.Data)
			if err != nil {
				t.Fatalf("record %d: %v", m.Seq, err)
			}
			return m.Seq, r
		case <-ctx.Done():
			t.Fatal("no audit record")
		}
		return 0, nil
	}

	for i, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			if err := cnss.PublishMsg(&nats.Msg{Subject: qsubj, Reply: r.reply, Data: data, Header: hostile()}); err != nil {
				t.Fatal(err)
			}
			// Dropped unanswered, but audited as a refusal of cnss's query.
			seq, rec := nextRecord(t)
			if seq != base+uint64(i)+1 || rec.GetReason() != decision.ReasonBadReplySubject ||
				rec.GetDecision() == auditv1.Decision_DECISION_ALLOWED || rec.GetConsumer() != "cnss" {
				t.Fatalf("record %d: consumer %q decision %v reason %q, want cnss's query refused with %s",
					seq, rec.GetConsumer(), rec.GetDecision(), rec.GetReason(), decision.ReasonBadReplySubject)
			}
		})
	}

	// Every stream and bucket holds what it held; the audit log grew by
	// exactly one refusal per row.
	after, afterValues := snapshot(), values()
	for _, sp := range specs {
		b, a := before[sp.Name()], after[sp.Name()]
		if a.state.FirstSeq != b.state.FirstSeq || a.state.NumDeleted != 0 || a.cfg.DenyDelete != true || a.cfg.DenyPurge != true ||
			a.cfg.MaxAge != b.cfg.MaxAge || a.cfg.MaxBytes != b.cfg.MaxBytes || a.cfg.Discard != b.cfg.Discard {
			t.Errorf("%s was changed: before %+v, after %+v", sp.Name(), b.state, a.state)
		}
		switch sp.Name() {
		case subject.AuditStream:
			if a.state.LastSeq != b.state.LastSeq+uint64(len(rows)) || a.state.Msgs != b.state.Msgs+uint64(len(rows)) {
				t.Errorf("the audit stream holds %d records (last %d), want %d more than %d", a.state.Msgs, a.state.LastSeq, len(rows), b.state.Msgs)
			}
		case subject.CheckpointStream: // the gateway may have signed a checkpoint meanwhile
		default:
			if a.state.LastSeq != b.state.LastSeq || a.state.Msgs != b.state.Msgs {
				t.Errorf("%s was written: before %+v, after %+v", sp.Name(), b.state, a.state)
			}
		}
	}
	for b, v := range beforeValues {
		if afterValues[b] != v {
			t.Errorf("%s %s: %s, was %s", b, keys[b], afterValues[b], v)
		}
	}
	// The revoked token is still refused, the used-up one still used up.
	if got := refusedFor(revoked.Token); got != revokedReason {
		t.Errorf("the revoked token: %q, want %q", got, revokedReason)
	}
	if got := refusedFor(usedUp.Token); got != usedUpReason {
		t.Errorf("the used-up token: %q, want %q", got, usedUpReason)
	}
	for range 2 {
		if _, rec := nextRecord(t); rec.GetConsumer() != "cnss" || rec.GetDecision() == auditv1.Decision_DECISION_ALLOWED {
			t.Errorf("record of a refused token: %v", rec)
		}
	}
	// Nobody else received anything: the listeners' connections have
	// caught up with everything the gateway published before the records above.
	for _, nc := range listeners {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case m := <-leaked:
		t.Fatalf("%s received a message (%d bytes, headers %v)", m.Subject, len(m.Data), m.Header)
	default:
	}

	// `jisr audit verify` passes and counts every record.
	wantRecords := after[subject.AuditStream].state.LastSeq + 2
	out, _, err := f.cli("audit", "verify")
	if err != nil || !strings.Contains(out, "OK:") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if row := logRow(out, "gw-1"); len(row) < 2 || row[1] != fmt.Sprint(wantRecords) {
		t.Fatalf("verify counts %v records, want %d:\n%s", row, wantRecords, out)
	}

	// The federation's own parts did all of the above with what they hold.
	if logs := f.logs.String(); strings.Contains(strings.ToLower(logs), "permissions violation") {
		t.Fatalf("a part of the federation was refused a subject:\n%s", logs)
	}

	t.Run("the gateway's own certificate", func(t *testing.T) {
		v := bustest.NewViolations()
		gw := connect("gateway", nats.ErrorHandler(v.Handler))
		inbox := gw.NewRespInbox()
		for _, sp := range specs {
			for _, api := range []string{"STREAM.DELETE", "STREAM.PURGE", "STREAM.UPDATE", "STREAM.MSG.DELETE", "STREAM.CREATE"} {
				subj := "$JS.API." + api + "." + sp.Stream
				if err := gw.PublishRequest(subj, inbox, []byte(`{"seq":1}`)); err != nil {
					t.Fatal(err)
				}
				v.Wait(t, subj)
			}
			if sp.Bucket != "" && sp.Bucket != subject.UsageBucket { // the gateway writes use counters, nothing else
				subj := "$KV." + sp.Bucket + "." + keys[sp.Bucket]
				if err := gw.PublishRequest(subj, inbox, nil); err != nil {
					t.Fatal(err)
				}
				v.Wait(t, subj)
			}
		}
		for _, subj := range []string{"$JS.API.ACCOUNT.PURGE.x", "$JS.API.STREAM.CREATE.EVIL", "$JS.API.INFO"} {
			if err := gw.PublishRequest(subj, inbox, nil); err != nil {
				t.Fatal(err)
			}
			v.Wait(t, subj)
		}
		// The usage bucket refuses the gateway a purge; a counter it erases
		// with a delete marker counts as used up.
		js, err := jetstream.New(gw)
		if err != nil {
			t.Fatal(err)
		}
		usage, err := js.KeyValue(ctx, subject.UsageBucket)
		if err != nil {
			t.Fatal(err)
		}
		if err := usage.Purge(ctx, usedUp.ID); err == nil {
			t.Fatal("the gateway purged a use counter")
		}
		if err := usage.Delete(ctx, usedUp.ID); err != nil {
			t.Fatal(err)
		}
		if got := refusedFor(usedUp.Token); got != usedUpReason {
			t.Errorf("the used-up token after its counter was erased: %q, want %q", got, usedUpReason)
		}
		final := snapshot()
		for _, sp := range specs {
			b, a := before[sp.Name()], final[sp.Name()]
			if sp.Bucket == subject.UsageBucket { // the delete marker replaced the counter: one value per key
				b.state.FirstSeq = a.state.FirstSeq
			}
			if a.state.FirstSeq != b.state.FirstSeq || a.state.NumDeleted != 0 || !a.cfg.DenyDelete || !a.cfg.DenyPurge {
				t.Errorf("%s was changed: before %+v, after %+v", sp.Name(), b.state, a.state)
			}
		}
		now := values()
		for b, k := range keys {
			if b == subject.UsageBucket {
				continue
			}
			if v := now[b]; v != beforeValues[b] {
				t.Errorf("%s %s: %s, was %s", b, k, v, beforeValues[b])
			}
		}
		if got := refusedFor(revoked.Token); got != revokedReason {
			t.Errorf("the revoked token: %q, want %q", got, revokedReason)
		}
		out, _, err := f.cli("audit", "verify")
		if err != nil || !strings.Contains(out, "OK:") {
			t.Fatalf("verify: %v\n%s", err, out)
		}
	})
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("out of time")
	}
}
