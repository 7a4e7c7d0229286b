package natsconf

import (
	"crypto/tls"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/certs/svid"
)

func demo(t *testing.T) *federation.Federation {
	t.Helper()
	f, err := federation.Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRenderedConfigParsesAndMapsEveryIdentity(t *testing.T) {
	t.Parallel()
	fed := demo(t)
	dir := t.TempDir()
	if _, err := devca.Init(dir, fed.TrustDomain, fed.Identities()); err != nil {
		t.Fatal(err)
	}
	cert, key := svid.Paths(dir, fed.ID("nats"))
	text, err := Render(Config{Federation: fed, CertFile: cert, KeyFile: key, CAFile: svid.BundlePath(dir), StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		t.Fatalf("nats-server rejects the rendered config: %v\n%s", err, text)
	}
	if !opts.TLSMap || opts.TLSConfig == nil || opts.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatal("verify_and_map must be on")
	}
	if opts.Host != "127.0.0.1" || opts.Port != 4222 || !opts.JetStream {
		t.Fatalf("host %s port %d jetstream %v", opts.Host, opts.Port, opts.JetStream)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	if len(users) != len(fed.Identities()) { // every identity
		t.Fatalf("%d users, want %d", len(users), len(fed.Identities()))
	}
	// The server itself, as the client that follows the signed federation
	// versions (jisr nats-server): the bundle by direct get, its inbox,
	// nothing else.
	if u := users["spiffe://jisr.internal/nats"]; u == nil || !slices.Equal(u.Permissions.Publish.Allow, []string{"$JS.API.STREAM.INFO.KV_jisr_federation", "$JS.API.DIRECT.GET.KV_jisr_federation",
		"$JS.API.DIRECT.GET.KV_jisr_federation.>", "$JS.API.STREAM.MSG.GET.KV_jisr_federation"}) || !slices.Equal(u.Permissions.Subscribe.Allow, []string{"_INBOX.nats.>"}) {
		t.Fatalf("the server's own user: %+v", u)
	}
	cnss := users["spiffe://jisr.internal/member/cnss"]
	if cnss == nil {
		t.Fatal("no user for cnss")
	}
	p := cnss.Permissions
	// Its queries, its own events and the read side of its own event stream
	// (docs/events.md), and the signed federation versions its adapter
	// applies, read by direct get only (no consumer), nothing else.
	want := append([]string{"jisr.q.cnss.>", "jisr.e.cnss.>", "jisr.er.cnss", "$JS.ACK.JISR_EVENTS_cnss.>"}, StreamAPI("JISR_EVENTS_cnss")...)
	want = append(want, "$JS.API.STREAM.INFO.KV_jisr_federation", "$JS.API.DIRECT.GET.KV_jisr_federation",
		"$JS.API.DIRECT.GET.KV_jisr_federation.>", "$JS.API.STREAM.MSG.GET.KV_jisr_federation")
	if got := p.Publish.Allow; !slices.Equal(got, want) {
		t.Fatalf("cnss may publish %v", got)
	}
	// Its queries, its inbox, and its own catalogue entry (NATS micro discovery).
	if got := p.Subscribe.Allow; len(got) != 5 || got[0] != "jisr.p.cnss.>" || got[1] != "_INBOX.cnss.>" ||
		got[2] != "$SRV.*" || got[3] != "$SRV.*.jisr-cnss" || got[4] != "$SRV.*.jisr-cnss.*" {
		t.Fatalf("cnss may subscribe %v", got)
	}
	if p.Response == nil || p.Response.MaxMsgs != 1 {
		t.Fatalf("cnss must be allowed to answer the gateway's requests, once each: %+v", p.Response)
	}
	gw := users["spiffe://jisr.internal/gateway"].Permissions
	if !contains(gw.Subscribe.Allow, "jisr.q.>") || !contains(gw.Publish.Allow, "jisr.p.>") || !contains(gw.Publish.Allow, "_INBOX.tax.>") {
		t.Fatalf("gateway permissions %+v", gw)
	}
	if !contains(gw.Publish.Deny, "$JS.API.STREAM.DELETE."+subject.AuditStream) {
		t.Fatal("the gateway must not be able to delete the audit stream")
	}
	// A member chooses the reply subject of its query: whoever answers it
	// must hold no allow_responses, which would override every deny.
	if gw.Response != nil {
		t.Fatalf("the gateway holds allow_responses %+v", gw.Response)
	}
	for _, s := range gw.Publish.Allow {
		if s == "$JS.API.>" || s == "$KV.>" || s == ">" || strings.HasPrefix(s, "$JS.API.STREAM.CREATE") ||
			strings.HasPrefix(s, "$JS.API.STREAM.UPDATE") || strings.HasPrefix(s, "$JS.API.STREAM.DELETE") ||
			strings.HasPrefix(s, "$JS.API.STREAM.PURGE") || strings.HasPrefix(s, "$JS.API.STREAM.MSG.DELETE") ||
			(strings.HasPrefix(s, "$KV.") && s != "$KV."+subject.UsageBucket+".>") {
			t.Errorf("the gateway may publish %q", s)
		}
	}
	op := users["spiffe://jisr.internal/operator"]
	if op == nil || !contains(op.Permissions.Publish.Allow, "$JS.API.>") || op.Permissions.Response != nil {
		t.Fatalf("the operator manages JetStream and nothing else: %+v", op)
	}
	for _, s := range append(op.Permissions.Publish.Allow, op.Permissions.Subscribe.Allow...) {
		if (strings.HasPrefix(s, "jisr.") || s == ">") && s != subject.ConsentOperatorAPI+".>" {
			t.Errorf("the operator may use %q", s)
		}
	}
	// The consent service's operator API (`jisr consent grant|revoke`): the
	// operator alone asks, the consent service alone answers.
	if !contains(op.Permissions.Publish.Allow, subject.ConsentOperatorAPI+".>") || contains(op.Permissions.Subscribe.Allow, subject.ConsentOperatorAPI+".>") {
		t.Errorf("the operator asks the consent operator API and does not answer it: %+v", op.Permissions)
	}
	for id, u := range users {
		if id == "spiffe://jisr.internal/operator" {
			continue
		}
		for _, s := range u.Permissions.Publish.Allow {
			if s == ">" || strings.HasPrefix(s, subject.ConsentOperatorAPI) || s == "jisr.>" {
				t.Errorf("%s may publish on the consent operator API (%q)", id, s)
			}
		}
		if id != "spiffe://jisr.internal/consent" && contains(u.Permissions.Subscribe.Allow, subject.ConsentOperatorAPI+".>") {
			t.Errorf("%s may read the consent operator API", id)
		}
	}
	for id, u := range users {
		if id == "spiffe://jisr.internal/gateway" || id == "spiffe://jisr.internal/operator" {
			continue
		}
		for _, s := range append(u.Permissions.Publish.Allow, u.Permissions.Subscribe.Allow...) {
			if s == ">" || strings.HasPrefix(s, "jisr.q.>") || strings.HasPrefix(s, "jisr.p.>") || s == "$JS.API.>" {
				t.Errorf("%s has the over-broad permission %q", id, s)
			}
		}
	}
}

func TestRenderRequiresTLS(t *testing.T) {
	t.Parallel()
	if _, err := Render(Config{Federation: demo(t)}); err == nil {
		t.Fatal("rendered a config without TLS")
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestGatewayMayNotChangeTheAuditStreams(t *testing.T) {
	t.Parallel()
	gw := Permissions(demo(t))["spiffe://jisr.internal/gateway"]
	for _, s := range []string{subject.AuditStream, subject.CheckpointStream} {
		for _, api := range []string{"DELETE", "PURGE", "MSG.DELETE", "UPDATE", "PEER.REMOVE"} {
			if !contains(gw.PublishDeny, "$JS.API.STREAM."+api+"."+s) {
				t.Errorf("the gateway may %s %s", api, s)
			}
		}
	}
	auditor := Permissions(demo(t))["spiffe://jisr.internal/auditor"]
	for _, s := range auditor.PublishAllow {
		if strings.Contains(s, "STREAM.DELETE") || strings.Contains(s, "MSG.DELETE") || strings.Contains(s, "PURGE") || strings.Contains(s, "UPDATE") || strings.HasPrefix(s, "jisr.") || s == "$JS.API.>" {
			t.Errorf("the auditor may publish %s", s)
		}
	}
}

// Each identity writes only the buckets it writes: the gateway counts uses,
// the consent service records grants and revocations (it never counts a
// use: a consent service that could write the usage bucket could reset a
// used-up token's counter). Nobody else writes a key.
func TestEachIdentityWritesOnlyItsOwnBuckets(t *testing.T) {
	fed := demo(t)
	want := map[string][]string{
		fed.ID("gateway").String(): {"$KV." + subject.UsageBucket + ".>"},
		fed.ID("consent").String(): {"$KV." + subject.RequestBucket + ".>", "$KV." + subject.ConsentBucket + ".>", "$KV." + subject.RevocationBucket + ".>"},
	}
	for id, p := range Permissions(fed) {
		if id == fed.ID(subject.Operator).String() {
			continue // the JetStream API as a whole, and no key (see TestRender)
		}
		var got []string
		for _, s := range p.PublishAllow {
			if strings.HasPrefix(s, "$KV.") {
				got = append(got, s)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want[id]) {
			t.Errorf("%s writes %v, want %v", id, got, want[id])
		}
	}
}

func TestAuditAccountRender(t *testing.T) {
	t.Parallel()
	fed := demo(t)
	dir := t.TempDir()
	if _, err := devca.Init(dir, fed.TrustDomain, fed.Identities()); err != nil {
		t.Fatal(err)
	}
	cert, key := svid.Paths(dir, fed.ID("nats"))
	text, err := Render(Config{Federation: fed, CertFile: cert, KeyFile: key, CAFile: svid.BundlePath(dir), StoreDir: filepath.Join(dir, "js"), AuditAccount: true})
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		t.Fatalf("nats-server rejects the rendered config: %v\n%s", err, text)
	}
	accounts := map[string]*server.Account{}
	for _, a := range opts.Accounts {
		accounts[a.Name] = a
	}
	if accounts[FedAccount] == nil || accounts[AuditAccount] == nil {
		t.Fatalf("accounts %v", accounts)
	}
	inAudit := map[string]bool{fed.ID("auditor").String(): true, fed.ID(AuditOperator).String(): true}
	for _, u := range opts.Users {
		want := FedAccount
		if inAudit[u.Username] {
			want = AuditAccount
		}
		if u.Account == nil || u.Account.Name != want {
			t.Errorf("user %s in %v, want %s", u.Username, u.Account, want)
		}
		// Only the gateway reaches AUDIT from FED, and the consent
		// service for its own log (and the read side, to resume it).
		if u.Username == fed.ID("gateway").String() {
			continue
		}
		own := func(s string) bool { return false }
		if u.Username == fed.ID("consent").String() {
			own = func(s string) bool {
				return s == subject.AuditPrefix+".consent.>" || s == subject.CheckpointPrefix+".consent" || (strings.HasPrefix(s, AuditAPIPrefix) && slices.Contains(auditExports(), "$JS.API"+strings.TrimPrefix(s, AuditAPIPrefix)))
			}
		}
		for _, s := range u.Permissions.Publish.Allow {
			if own(s) {
				continue
			}
			if strings.HasPrefix(s, AuditAPIPrefix) || (want == FedAccount && (strings.HasPrefix(s, subject.AuditPrefix) || strings.HasPrefix(s, subject.CheckpointPrefix))) {
				t.Errorf("%s may publish %s", u.Username, s)
			}
		}
	}
	// Nothing that changes a stream is exported.
	for _, s := range auditExports() {
		for _, bad := range []string{".DELETE.", ".PURGE.", ".UPDATE.", "STREAM.CREATE.", ".MSG.DELETE.", "ACCOUNT"} {
			if strings.Contains(s, bad) && !strings.HasPrefix(s, "$JS.API.CONSUMER.DELETE.") {
				t.Errorf("AUDIT exports %s", s)
			}
		}
	}
	if !strings.Contains(text, "jetstream: enabled") {
		t.Error("the accounts have no JetStream")
	}
}

// A hub node's configuration: JetStream in the hub's domain, routes to the
// other nodes over mutual TLS mapped to the server identity only.
func TestClusterRender(t *testing.T) {
	fed := demo(t)
	dir := t.TempDir()
	if _, err := devca.Init(dir, fed.TrustDomain, fed.Identities()); err != nil {
		t.Fatal(err)
	}
	cert, key := svid.Paths(dir, fed.ID("nats"))
	routes := []string{"tls://10.0.0.1:6222", "tls://10.0.0.2:6222", "tls://10.0.0.3:6222"}
	text, err := Render(Config{
		Federation: fed, ServerName: "hub-2", Host: "0.0.0.0", CertFile: cert, KeyFile: key, CAFile: svid.BundlePath(dir),
		StoreDir: "/data/js", Cluster: &Cluster{Routes: routes},
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		t.Fatalf("rendered hub configuration rejected: %v\n%s", err, text)
	}
	c := opts.Cluster
	if c.Name != DefaultClusterName || c.Port != 6222 || c.Host != "0.0.0.0" || len(opts.Routes) != 3 {
		t.Fatalf("cluster %+v routes %v", c, opts.Routes)
	}
	if !c.NoAdvertise {
		t.Fatal("hub nodes must not advertise their addresses to clients")
	}
	if !c.TLSMap || c.Username != fed.ID("nats").String() {
		t.Fatalf("routes must be mapped to the server identity: tls map %v user %q", c.TLSMap, c.Username)
	}
	if opts.JetStreamDomain != DefaultDomain || opts.ServerName != "hub-2" {
		t.Fatalf("domain %q server %q", opts.JetStreamDomain, opts.ServerName)
	}
	for _, bad := range []Config{
		{Federation: fed, CertFile: "c", KeyFile: "k", CAFile: "ca", Cluster: &Cluster{Routes: routes}},                                    // no store
		{Federation: fed, CertFile: "c", KeyFile: "k", CAFile: "ca", StoreDir: "/d", Cluster: &Cluster{}},                                  // no routes
		{Federation: fed, CertFile: "c", KeyFile: "k", CAFile: "ca", StoreDir: "/d", Cluster: &Cluster{Routes: []string{"nats://h:6222"}}}, // plaintext route
	} {
		if _, err := Render(bad); err == nil {
			t.Errorf("rendered a hub node without store, routes or TLS routes: %+v", bad.Cluster)
		}
	}
}

// Under SPIRE (WorkloadAPI) the tls block names no files, the configuration
// still parses with verify_and_map on, and files and the Workload API
// together are refused.
func TestRenderForWorkloadAPINamesNoFiles(t *testing.T) {
	t.Parallel()
	fed := demo(t)
	text, err := Render(Config{Federation: fed, WorkloadAPI: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cert_file", "key_file", "ca_file"} {
		if strings.Contains(text, k) {
			t.Fatalf("names %s:\n%s", k, text)
		}
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		t.Fatalf("nats-server rejects the rendered config: %v\n%s", err, text)
	}
	if !opts.TLSMap || opts.TLSConfig == nil || opts.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatal("verify_and_map must be on")
	}
	// A hub node: the routes' tls block names no file either.
	routes := []string{"tls://10.0.0.1:6222", "tls://10.0.0.2:6222", "tls://10.0.0.3:6222"}
	text, err = Render(Config{Federation: fed, WorkloadAPI: true, ServerName: "hub-1", StoreDir: "/data/js", Cluster: &Cluster{Routes: routes}})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cert_file", "key_file", "ca_file"} {
		if strings.Contains(text, k) {
			t.Fatalf("a hub node's configuration names %s:\n%s", k, text)
		}
	}
	opts = &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		t.Fatalf("nats-server rejects the rendered hub configuration: %v\n%s", err, text)
	}
	if c := opts.Cluster; len(opts.Routes) != 3 || c.TLSConfig == nil || !c.TLSMap || c.Username != fed.ID("nats").String() ||
		c.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("routes must be mutual TLS mapped to the server identity: %+v", c)
	}
	if _, err := Render(Config{Federation: fed, WorkloadAPI: true, CertFile: "x.pem", KeyFile: "x.key", CAFile: "b.pem"}); err == nil {
		t.Fatal("files and the Workload API together were accepted")
	}
	if _, err := Render(Config{Federation: fed}); err == nil {
		t.Fatal("no TLS at all was accepted")
	}
}
