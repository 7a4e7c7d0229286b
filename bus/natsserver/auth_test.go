package natsserver

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// bind gives each user what the server gives its own configured users: the
// account registered under its name (or the global one), and response
// permissions with their defaults and no blanket publish allow.
func TestBindPreparesUsersAsTheServerWould(t *testing.T) {
	t.Parallel()
	opts := &server.Options{}
	if err := opts.ProcessConfigString(`
port: -1
accounts {
  AUDIT { users = [ { user: "spiffe://td/auditor", password: "x" } ] }
}
authorization {
  users = [
    { user: "spiffe://td/member/a", permissions: { publish: { allow: ["a.>"] }, allow_responses: true } }
    { user: "spiffe://td/member/b", permissions: { subscribe: { allow: ["b.>"] }, allow_responses: { max: 1 } } }
  ]
}`); err != nil {
		t.Fatal(err)
	}
	auth := newSVIDAuth(opts.Users)
	opts.CustomClientAuthentication = auth
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if err := auth.bind(ns); err != nil {
		t.Fatal(err)
	}
	audit, err := ns.LookupAccount("AUDIT")
	if err != nil {
		t.Fatal(err)
	}
	if u := auth.users["spiffe://td/auditor"]; u == nil || u.Account != audit {
		t.Fatalf("auditor not in the server's AUDIT account: %+v", u)
	}
	for _, name := range []string{"spiffe://td/member/a", "spiffe://td/member/b"} {
		u := auth.users[name]
		if u == nil || u.Account != ns.GlobalAccount() {
			t.Fatalf("%s not in the global account: %+v", name, u)
		}
		p := u.Permissions
		if p.Publish == nil || p.Publish.Allow == nil || p.Response.MaxMsgs != server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS ||
			p.Response.Expires != server.DEFAULT_ALLOW_RESPONSE_EXPIRATION {
			t.Fatalf("%s: permissions %+v, publish %+v, response %+v", name, p, p.Publish, p.Response)
		}
	}
	if got := auth.users["spiffe://td/member/b"].Permissions.Publish.Allow; len(got) != 0 {
		t.Fatalf("member b, with no publish allow-list, may publish on %v", got)
	}
}
