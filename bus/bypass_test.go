package bus_test

// These tests try to get around the gateway with real certificates against a
// real NATS server configured exactly as production renders it. Each attempt
// must be refused by the server itself.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/devca"
)

func TestMemberCannotBypassTheGateway(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)

	// The real civil-registry provider listens on its provider subject; if
	// any attempt below reached it, the test fails.
	provider := env.Connect(t, "civil-registry")
	leaked := make(chan *nats.Msg, 16)
	if _, err := provider.ChanSubscribe("jisr.p.civil-registry.>", leaked); err != nil {
		t.Fatal(err)
	}
	tax := env.Connect(t, "tax")
	taxInbox := make(chan *nats.Msg, 16)
	if _, err := tax.ChanSubscribe("_INBOX.tax.>", taxInbox); err != nil {
		t.Fatal(err)
	}
	for _, nc := range []*nats.Conn{provider, tax} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	v := bustest.NewViolations()
	cnss := env.Connect(t, "cnss", nats.ErrorHandler(v.Handler))
	const ck = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

	t.Run("publish on a provider subject", func(t *testing.T) {
		s := "jisr.p.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson." + ck
		if err := cnss.Publish(s, []byte("x")); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, s)
	})
	t.Run("publish as another consumer", func(t *testing.T) {
		s := "jisr.q.tax.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson." + ck
		if err := cnss.Publish(s, []byte("x")); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, s)
	})
	t.Run("subscribe to every query", func(t *testing.T) {
		if _, err := cnss.SubscribeSync("jisr.q.>"); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, "jisr.q.>")
	})
	t.Run("subscribe to another member's inbox", func(t *testing.T) {
		if _, err := cnss.SubscribeSync("_INBOX.tax.>"); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, "_INBOX.tax.>")
	})
	t.Run("subscribe to another provider's subject", func(t *testing.T) {
		if _, err := cnss.SubscribeSync("jisr.p.civil-registry.>"); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, "jisr.p.civil-registry.>")
	})
	t.Run("subscribe to the audit stream's subjects", func(t *testing.T) {
		if _, err := cnss.SubscribeSync("jisr.audit.>"); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, "jisr.audit.>")
	})
	t.Run("touch the JetStream API", func(t *testing.T) {
		subjects := []string{"$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.CREATE.EVIL"}
		for _, st := range []string{subject.AuditStream, subject.CheckpointStream, subject.BucketStream(subject.ConsentBucket),
			subject.BucketStream(subject.RevocationBucket), subject.BucketStream(subject.UsageBucket)} {
			for _, api := range []string{"STREAM.DELETE", "STREAM.PURGE", "STREAM.UPDATE", "STREAM.MSG.DELETE", "STREAM.INFO", "DIRECT.GET"} {
				subjects = append(subjects, "$JS.API."+api+"."+st)
			}
		}
		for _, b := range []string{subject.ConsentBucket, subject.RevocationBucket, subject.UsageBucket} {
			subjects = append(subjects, "$KV."+b+".x")
		}
		for _, s := range subjects {
			if err := cnss.Publish(s, nil); err != nil {
				t.Fatal(err)
			}
			v.Wait(t, s)
		}
	})
	t.Run("publish on the audit subjects", func(t *testing.T) {
		s := "jisr.audit." + ck
		if err := cnss.Publish(s, []byte("forged record")); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, s)
	})

	if err := cnss.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-leaked:
		t.Fatalf("a bypass attempt reached the provider on %s", m.Subject)
	case m := <-taxInbox:
		t.Fatalf("a bypass attempt reached tax's inbox on %s", m.Subject)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestMemberMayUseItsOwnSubjects(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	v := bustest.NewViolations()
	cnss := env.Connect(t, "cnss", nats.ErrorHandler(v.Handler))
	gw := env.Connect(t, "gateway")
	got := make(chan *nats.Msg, 1)
	if _, err := gw.ChanQueueSubscribe("jisr.q.>", "jisr-gateway", got); err != nil {
		t.Fatal(err)
	}
	gw.Flush()
	if _, err := cnss.SubscribeSync("jisr.p.cnss.>"); err != nil {
		t.Fatal(err)
	}
	if err := cnss.Publish("jisr.q.cnss.tax.jisr_tax_v1_Tax.IsIncomeBelow.K", []byte("x")); err != nil {
		t.Fatal(err)
	}
	cnss.Flush()
	select {
	case m := <-got:
		if m.Subject != "jisr.q.cnss.tax.jisr_tax_v1_Tax.IsIncomeBelow.K" {
			t.Fatalf("gateway got %s", m.Subject)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the gateway did not receive cnss's own query")
	}
	if errs := v.Errors(); len(errs) > 0 {
		t.Fatalf("permission errors on allowed subjects: %v", errs)
	}
	// Request/reply through the member's own inbox works end to end. (A
	// second connection answers: NATS counts each delivery of a request to
	// one client against that client's single allowed response.)
	responder := env.Connect(t, "gateway")
	if _, err := responder.Subscribe("jisr.q.cnss.>", func(m *nats.Msg) { m.Respond([]byte("pong")) }); err != nil {
		t.Fatal(err)
	}
	responder.Flush()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := cnss.RequestWithContext(ctx, "jisr.q.cnss.tax.S.M.K2", nil); err != nil {
		t.Fatalf("request through the member's own inbox: %v", err)
	}
}

func TestBadCertificatesAreRefusedAtConnect(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	other, err := devca.New(env.Fed.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	cnssID := env.ID("cnss")
	issue := func(ca *devca.CA, id spiffeid.ID, opts ...devca.IssueOption) *x509svid.SVID {
		s, err := ca.Issue(id, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// A certificate from the federation's own CA but without any SPIFFE URI.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	noURI, err := env.CA.Sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "cnss"},
		NotBefore:   time.Now().Add(-time.Minute),
		NotAfter:    time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	// The client side presents whatever certificate it is given; build it
	// with the standard library so go-spiffe's client checks do not stop it first.
	raw := func(certs []*x509.Certificate, k crypto.Signer) *tls.Config {
		c := tls.Certificate{PrivateKey: k}
		for _, x := range certs {
			c.Certificate = append(c.Certificate, x.Raw)
		}
		pool := x509.NewCertPool()
		pool.AddCert(env.CA.Certificate())
		return &tls.Config{Certificates: []tls.Certificate{c}, RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	}
	dial := func(conf *tls.Config) error {
		nc, err := nats.Connect(env.URL, nats.Secure(conf), nats.MaxReconnects(0), nats.Timeout(3*time.Second))
		if err == nil {
			nc.Close()
		}
		return err
	}
	good := issue(env.CA, cnssID)
	// withURIs is a certificate the federation's CA signed with these URI SANs.
	withURIs := func(uris ...*url.URL) *tls.Config {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		c, err := env.CA.Sign(&x509.Certificate{
			URIs:        uris,
			NotBefore:   time.Now().Add(-time.Minute),
			NotAfter:    time.Now().Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, k.Public())
		if err != nil {
			t.Fatal(err)
		}
		return raw([]*x509.Certificate{c}, k)
	}
	if err := dial(raw(good.Certificates, good.PrivateKey)); err != nil {
		t.Fatalf("the control case (a good SVID) was refused: %v", err)
	}
	for name, conf := range map[string]*tls.Config{
		"certificate from another CA": func() *tls.Config {
			s := issue(other, cnssID)
			return raw(s.Certificates, s.PrivateKey)
		}(),
		"expired SVID": func() *tls.Config {
			s := issue(env.CA, cnssID, devca.WithNotBefore(time.Now().Add(-3*time.Hour)), devca.WithTTL(time.Hour))
			return raw(s.Certificates, s.PrivateKey)
		}(),
		"no SPIFFE URI": raw([]*x509.Certificate{noURI}, key),
		"SPIFFE ID not in the federation": func() *tls.Config {
			s := issue(env.CA, spiffeid.RequireFromPath(env.Fed.TrustDomain, "/member/intruder"))
			return raw(s.Certificates, s.PrivateKey)
		}(),
		// The CA signed a certificate naming cnss and the gateway: which one
		// would be the user? Neither (x509svid refuses two URI SANs).
		"two SPIFFE URI SANs (cnss and the gateway)": withURIs(cnssID.URL(), env.Fed.ID("gateway").URL()),
		"a URI SAN that is not SPIFFE":               withURIs(mustURL(t, "https://jisr.internal/gateway")),
		"the gateway's path in another trust domain": withURIs(mustURL(t, "spiffe://evil.example/gateway")),
		"the gateway's ID with an upper-case domain": withURIs(mustURL(t, "spiffe://"+strings.ToUpper(env.Fed.TrustDomain.Name())+"/gateway")),
		// cnss uses its own SVID as a CA and issues itself the gateway's
		// SVID: an SVID is not a CA, so the chain does not verify.
		"the gateway's ID issued by cnss's SVID": func() *tls.Config {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(7),
				URIs:         []*url.URL{env.Fed.ID("gateway").URL()},
				NotBefore:    time.Now().Add(-time.Minute),
				NotAfter:     time.Now().Add(time.Hour),
				KeyUsage:     x509.KeyUsageDigitalSignature,
				ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, good.Certificates[0], k.Public(), good.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			forged, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			return raw([]*x509.Certificate{forged, good.Certificates[0]}, k)
		}(),
		"no client certificate": func() *tls.Config {
			c := raw(nil, nil)
			c.Certificates = nil
			return c
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			if err := dial(conf); err == nil {
				t.Fatal("connected")
			}
		})
	}
}

// A provider's allow_responses lets it answer the gateway's request once, on
// the request's own reply subject: not twice, not on the inbox of another
// request in flight (to it or to another provider), and never for a request
// it did not receive. Another member cannot answer it at all, nor reach the
// consent service's API.
func TestProviderAnswersOnlyTheRequestItReceivedAndOnlyOnce(t *testing.T) {
	env := bustest.Start(t, bustest.WithoutJetStream())
	gw := env.Connect(t, "gateway")
	answers := make(chan *nats.Msg, 16)
	if _, err := gw.ChanSubscribe("_INBOX.gateway.>", answers); err != nil {
		t.Fatal(err)
	}
	v := bustest.NewViolations()
	provider := env.Connect(t, "civil-registry", nats.ErrorHandler(v.Handler))
	requests := make(chan *nats.Msg, 4)
	if _, err := provider.ChanSubscribe("jisr.p.civil-registry.>", requests); err != nil {
		t.Fatal(err)
	}
	tv := bustest.NewViolations()
	tax := env.Connect(t, "tax", nats.ErrorHandler(tv.Handler))
	taxRequests := make(chan *nats.Msg, 4)
	if _, err := tax.ChanSubscribe("jisr.p.tax.>", taxRequests); err != nil {
		t.Fatal(err)
	}
	for _, nc := range []*nats.Conn{provider, tax} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	const ck = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	// Two requests in flight: one to civil-registry, one to tax.
	if err := gw.PublishRequest("jisr.p.civil-registry.S.M."+ck, "_INBOX.gateway.mine", []byte("q")); err != nil {
		t.Fatal(err)
	}
	if err := gw.PublishRequest("jisr.p.tax.S.M."+ck, "_INBOX.gateway.taxs", []byte("q")); err != nil {
		t.Fatal(err)
	}
	recv := func(ch chan *nats.Msg) *nats.Msg {
		t.Helper()
		select {
		case m := <-ch:
			return m
		case <-time.After(5 * time.Second):
			t.Fatal("the gateway's request did not arrive")
			return nil
		}
	}
	req := recv(requests)
	recv(taxRequests)
	if err := req.Respond([]byte("first")); err != nil {
		t.Fatal(err)
	}
	if got := recv(answers); string(got.Data) != "first" || got.Subject != "_INBOX.gateway.mine" {
		t.Fatalf("the one allowed answer: %s %q", got.Subject, got.Data)
	}
	for _, s := range []string{
		"_INBOX.gateway.mine",              // a second answer
		"_INBOX.gateway.taxs",              // tax's request in flight
		"_INBOX.gateway.never",             // a request never received
		"_INBOX.gateway.mine.x",            // under the answered inbox
		"jisr.consent.grant",               // the consent service's API
		"$JS.API.STREAM.DELETE.JISR_AUDIT", // the JetStream API
	} {
		if err := provider.Publish(s, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, s)
	}
	// Another member answering civil-registry's request.
	if err := tax.Publish("_INBOX.gateway.mine", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	tv.Wait(t, "_INBOX.gateway.mine")
	for _, nc := range []*nats.Conn{provider, tax} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := gw.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-answers:
		t.Fatalf("a forged answer reached the gateway on %s: %q", m.Subject, m.Data)
	case <-time.After(200 * time.Millisecond):
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
