package notify_test

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/gateway/notify"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

func TestOnlyAllowedAccessesByMembersAreNotified(t *testing.T) {
	base := func() *auditv1.Record {
		return &auditv1.Record{LogId: "gw-1", LeafIndex: 7, Time: timestamppb.Now(), Consumer: "cnss", Provider: "civil-registry",
			Method: "GetPerson", Ckey: "CK", Decision: auditv1.Decision_DECISION_ALLOWED, Fields: []string{"person.names"}}
	}
	if n, ok := notify.Of(base()); !ok || n.CKey != "CK" || n.Record != "gw-1/7" || n.Consumer != "cnss" {
		t.Fatalf("an allowed access: %v %v", n, ok)
	}
	for name, mod := range map[string]func(*auditv1.Record){
		"refused":         func(r *auditv1.Record) { r.Decision = auditv1.Decision_DECISION_REFUSED },
		"consent request": func(r *auditv1.Record) { r.Provider = "consent" },
		"no citizen":      func(r *auditv1.Record) { r.Ckey = "_" },
		"no provider":     func(r *auditv1.Record) { r.Provider = "" },
	} {
		r := base()
		mod(r)
		if _, ok := notify.Of(r); ok {
			t.Errorf("%s: notified", name)
		}
	}
}

func TestWebhookSignsWhatItSends(t *testing.T) {
	secret := []byte("s3cret")
	got := make(chan *http.Request, 1)
	bodies := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
	}))
	defer srv.Close()
	n := notify.Notification{CKey: "CK", Time: time.Now().UTC(), Consumer: "cnss", Provider: "civil-registry", Method: "GetPerson", Record: "gw-1/7"}
	if err := (notify.Webhook{URL: srv.URL, Secret: secret}).Notify(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	r, b := <-got, <-bodies
	var back notify.Notification
	if err := json.Unmarshal(b, &back); err != nil || back.CKey != "CK" || back.Record != "gw-1/7" {
		t.Fatalf("body %s", b)
	}
	sig := r.Header.Get(notify.SignatureHeader)
	ts := strings.TrimPrefix(strings.Split(sig, ",")[0], "t=")
	want := notify.Sign(secret, b, time.Unix(mustInt(t, ts), 0))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		t.Fatalf("signature %q, want %q", sig, want)
	}
	if other := notify.Sign([]byte("other"), b, time.Unix(mustInt(t, ts), 0)); other == sig {
		t.Fatal("the signature does not depend on the secret")
	}
	// A refusal by the receiver is an error.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer bad.Close()
	if err := (notify.Webhook{URL: bad.URL, Secret: secret}).Notify(context.Background(), n); err == nil {
		t.Fatal("a 502 was taken as delivered")
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
