// Package natsconf renders the NATS server configuration of a federation.
//
// Invariant: every user of the server is a SPIFFE ID from the federation
// (mapped from the client certificate's URI SAN with verify_and_map), and
// every user's permissions are an allow-list derived from the federation —
// anything not listed is denied. No identity that answers a reply subject a
// member chose holds allow_responses (it would override every deny), no
// runtime identity holds $JS.API.> or $KV.>, and only the operator may
// create or change a stream or bucket. The embedded server of `jisr dev`
// loads the very text Render returns, so `jisr nats-config` prints what
// really runs.
package natsconf

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
)

// Config is what the rendered server needs besides the federation.
type Config struct {
	Federation *federation.Federation
	ServerName string // default "jisr-nats"
	Host       string // default 127.0.0.1
	Port       int    // default 4222; -1 picks a random port (tests)
	HTTPPort   int    // monitoring port; 0 disables it
	CertFile   string // the NATS server's SVID
	KeyFile    string
	CAFile     string // the trust bundle
	// WorkloadAPI: the server's SVID and trust bundle come from the SPIFFE
	// Workload API (SPIRE), which only the embedded server (`jisr
	// nats-server`) reads; the tls block then names no files, and CertFile,
	// KeyFile and CAFile must be empty.
	WorkloadAPI bool
	StoreDir    string // JetStream store directory
	MaxPayload  int    // bytes; default 1 MiB
	// MaxPending bounds the bytes the server holds for one client that reads
	// slower than messages arrive for it (default 128 MiB); past it the
	// client is cut off as a slow consumer. The gateway reads every query,
	// so this is its headroom under a flood; it also bounds the server's
	// memory per connection.
	MaxPending int
	// WriteDeadline bounds one write to a client (default "10s"); a client
	// that takes longer to read is cut off as a slow consumer.
	WriteDeadline string
	// SyncInterval is JetStream's fsync interval ("always", or a duration
	// such as "1s"). Acknowledged messages are written to the OS before the
	// ack, so a process crash (kill -9) loses nothing; this bounds what a
	// power loss can lose. Default "1s".
	SyncInterval string
	// AuditAccount puts the audit streams in their own account (AUDIT),
	// apart from the federation's traffic (FED): see AuditAccountPermissions.
	AuditAccount bool
	// Cluster makes the server one node of the hub: a JetStream cluster
	// whose nodes route to each other over mutual TLS (nil: a single server).
	Cluster *Cluster
}

// Cluster is one hub node's part of the cluster. Every node of the hub is
// rendered from the same federation, so their accounts and users agree.
type Cluster struct {
	Name string // the cluster's name; default "jisr-hub"
	Host string // where the node listens for routes; default Config.Host
	Port int    // route port; default 6222
	// Routes are the route URLs of every node of the hub (tls://host:port);
	// a node's own URL among them is ignored by the server.
	Routes []string
	// Domain is the JetStream domain of the hub; default "hub". A leaf node
	// or another hub reaches this one's JetStream API under $JS.<domain>.API.
	Domain string
}

// DefaultClusterName and DefaultDomain are the hub's defaults.
const (
	DefaultClusterName = "jisr-hub"
	DefaultDomain      = "hub"
)

// The accounts of an audit-account configuration.
const (
	FedAccount   = "FED"
	AuditAccount = "AUDIT"
	// AuditAPIPrefix is where FED sees the read-only part of AUDIT's
	// JetStream API ($JS.AUDIT.API.STREAM.INFO.JISR_AUDIT is AUDIT's
	// $JS.API.STREAM.INFO.JISR_AUDIT); only the gateway may publish there.
	AuditAPIPrefix = "$JS.AUDIT.API"
	// AuditOperator is the identity that creates the audit streams in AUDIT
	// (spiffe://<td>/audit-operator); the operator identity lives in FED.
	AuditOperator = "audit-operator"
)

// Permission is one user's allow/deny lists.
type Permission struct {
	PublishAllow, PublishDeny     []string
	SubscribeAllow, SubscribeDeny []string
	// MaxResponses > 0 lets the user answer a request it received on a
	// subscription with at most that many messages on the request's reply
	// subject (nats-server's allow_responses). It overrides the publish
	// lists for that reply subject, so only a user that answers requests of
	// the federation's own parts has it — never one that answers a reply
	// subject a member chose (the gateway).
	MaxResponses int
}

// StreamAPI is the part of the JetStream API a user may call on one stream:
// enough to bind to it and to read it through its own ephemeral consumers,
// never to create, update, delete or purge it or one of its messages.
func StreamAPI(stream string) []string {
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.DIRECT.GET." + stream, "$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.API.CONSUMER.CREATE." + stream, "$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".>",
		"$JS.API.CONSUMER.INFO." + stream + ".>",
		"$JS.API.CONSUMER.DELETE." + stream + ".>",
	}
}

// bucketRead is what reading (Get, Keys, Watch) a key-value bucket needs.
func bucketRead(bucket string) []string { return StreamAPI(subject.BucketStream(bucket)) }

// bundleRead is reading a bucket's keys by direct get only (and its info,
// to open it): no consumer.
func bundleRead(bucket string) []string {
	st := subject.BucketStream(bucket)
	return []string{"$JS.API.STREAM.INFO." + st, "$JS.API.DIRECT.GET." + st, "$JS.API.DIRECT.GET." + st + ".>", "$JS.API.STREAM.MSG.GET." + st}
}

// bucketWrite adds writing its keys (Put, Create, Update).
func bucketWrite(bucket string) []string {
	return append(bucketRead(bucket), subject.BucketKeys(bucket))
}

// Permissions returns each identity's permissions, keyed by SPIFFE ID.
//
// Only the operator identity (`jisr nats init`, and `jisr dev` at start)
// may create or change streams and buckets. The gateway publishes only on
// the inboxes of members (its answers), provider subjects, its audit
// subjects, the keys of the usage bucket, and the read side of the
// JetStream API on the federation's own streams: it holds no
// allow_responses (a member chooses the reply subject of a query, and the
// gateway itself checks it), no $JS.API.> and no $KV.>.
func Permissions(fed *federation.Federation) map[string]Permission {
	out := map[string]Permission{}
	var inboxes []string
	for _, m := range fed.Members {
		inboxes = append(inboxes, subject.Inbox(m.Name)+".>")
		sub := []string{subject.ProviderQueries(m.Name), subject.Inbox(m.Name) + ".>"}
		if len(m.Provides) > 0 {
			// Its catalogue entry (NATS micro, bus/catalog.Register): only
			// the operator asks there, and allow_responses lets it answer
			// once; no member can publish a discovery request.
			sub = append(sub, discoverySubjects(m.Name)...)
		}
		pub := append([]string{subject.ConsumerQueries(m.Name)}, memberEvents(m.Name)...)
		// Its adapter reads the signed federation versions (the governance's
		// bundle is public within the federation, as X-Road's global
		// configuration is) by direct get, polling: no consumer, whose
		// deliver subject would let the member make the server publish
		// where it may not.
		pub = append(pub, bundleRead(subject.FederationBucket)...)
		out[m.ID.String()] = Permission{
			PublishAllow:   pub,
			SubscribeAllow: sub,
			// A provider answers the gateway's request, once.
			MaxResponses: 1,
		}
	}
	// Deletes, purges and updates of any stream are refused to every user
	// but the operator. The streams also deny deletes and purges themselves
	// (deny_delete, deny_purge); this list keeps the refusal even if the
	// allow-lists below grow by mistake.
	var tamper []string
	for _, s := range append([]string{subject.AuditStream, subject.CheckpointStream, subject.BucketStream(subject.ConsentBucket), subject.BucketStream(subject.RevocationBucket), subject.BucketStream(subject.UsageBucket), subject.BucketStream(subject.RequestBucket), subject.BucketStream(subject.FederationBucket)}, eventStreams(fed)...) {
		tamper = append(tamper,
			"$JS.API.STREAM.DELETE."+s,
			"$JS.API.STREAM.PURGE."+s,
			"$JS.API.STREAM.MSG.DELETE."+s,
			"$JS.API.STREAM.UPDATE."+s,
			"$JS.API.STREAM.PEER.REMOVE."+s,
		)
	}
	tamper = append(tamper, "$JS.API.ACCOUNT.PURGE.>")

	gwPub := append([]string{
		subject.ProviderPrefix + ".>",
		subject.AuditPrefix + ".>",
		subject.CheckpointPrefix + ".>",
		"$JS.FC.>", // flow control of its ordered consumers (revocation watch)
	}, inboxes...)
	gwPub = append(gwPub, StreamAPI(subject.AuditStream)...)
	gwPub = append(gwPub, StreamAPI(subject.CheckpointStream)...)
	gwPub = append(gwPub, bucketRead(subject.RevocationBucket)...)
	gwPub = append(gwPub, bucketRead(subject.ConsentBucket)...)
	gwPub = append(gwPub, bucketWrite(subject.UsageBucket)...)
	gwPub = append(gwPub, subject.ConsentAPI+".>") // the citizen-facing consent API asks the consent service
	gwPub = append(gwPub, gatewayEvents(fed)...)
	gwPub = append(gwPub, bucketRead(subject.FederationBucket)...) // it watches the signed federation versions
	out[fed.ID("gateway").String()] = Permission{
		PublishAllow:   gwPub,
		PublishDeny:    tamper,
		SubscribeAllow: []string{subject.AllQueries(), subject.Inbox("gateway") + ".>", subject.AllEvents(), subject.AllReplays()},
	}

	// The consent service records grants and revocations; it reads the use
	// counters (to open its state) but never writes one: only the gateway
	// counts a use.
	var consentPub []string
	for _, b := range []string{subject.RevocationBucket, subject.ConsentBucket, subject.RequestBucket} {
		consentPub = append(consentPub, bucketWrite(b)...)
	}
	consentPub = append(consentPub, bucketRead(subject.UsageBucket)...)
	consentPub = append(consentPub, "$JS.FC.>")
	// Its own audit log (the transitions it stores by itself: expired, used
	// up), and the read side of the audit streams to resume it.
	consentPub = append(consentPub, subject.AuditPrefix+"."+subject.ConsentAuditLog+".>", subject.CheckpointPrefix+"."+subject.ConsentAuditLog)
	consentPub = append(consentPub, StreamAPI(subject.AuditStream)...)
	consentPub = append(consentPub, StreamAPI(subject.CheckpointStream)...)
	// It follows the signed federation versions, by direct get only.
	consentPub = append(consentPub, bundleRead(subject.FederationBucket)...)
	out[fed.ID("consent").String()] = Permission{
		PublishAllow:   consentPub,
		PublishDeny:    tamper,
		SubscribeAllow: []string{subject.Inbox("consent") + ".>", subject.ConsentAPI + ".>", subject.ConsentOperatorAPI + ".>"},
		MaxResponses:   1, // answers each of the gateway's (and the operator's) consent API requests once
	}
	out[fed.ID("auditor").String()] = Permission{
		PublishAllow:   append(append([]string{"$JS.FC.>"}, StreamAPI(subject.AuditStream)...), StreamAPI(subject.CheckpointStream)...),
		PublishDeny:    tamper,
		SubscribeAllow: []string{subject.Inbox("auditor") + ".>"},
	}
	// The operator creates and checks the streams and buckets. It needs the
	// JetStream API, and nothing of the federation's traffic.
	// It also reads the catalogue: the providers' NATS micro registrations.
	out[fed.ID(subject.Operator).String()] = Permission{
		// It asks the consent service's operator API (`jisr consent grant|revoke`,
		// audited by the consent service).
		PublishAllow:   []string{"$JS.API.>", subject.Discovery + ".>", subject.BucketKeys(subject.FederationBucket), subject.ConsentOperatorAPI + ".>"},
		SubscribeAllow: []string{subject.Inbox(subject.Operator) + ".>"},
	}
	// The NATS server itself (jisr nats-server) follows the signed
	// federation versions as a client of its own, with its own SVID: it
	// reads the bundle by direct get only, as the members do, and nothing
	// else.
	out[fed.ID("nats").String()] = Permission{
		PublishAllow:   bundleRead(subject.FederationBucket),
		SubscribeAllow: []string{subject.Inbox("nats") + ".>"},
	}
	return out
}

// discoverySubjects are the NATS micro discovery subjects a member's
// provider side listens on: $SRV.<verb>, $SRV.<verb>.<name>,
// $SRV.<verb>.<name>.<id> for its own name only. The operator asks by name
// (catalog.Discover), so only the member itself can answer for its name;
// nobody asks on the bare $SRV.<verb>, and no member may publish under $SRV.
func discoverySubjects(member string) []string {
	name := subject.DiscoveryName(member)
	return []string{subject.Discovery + ".*", subject.Discovery + ".*." + name, subject.Discovery + ".*." + name + ".*"}
}

// auditExports is the part of AUDIT's JetStream API FED sees (under
// AuditAPIPrefix): StreamAPI of the two audit streams, read-only. Stream
// create, update, delete, purge and message delete are not exported.
func auditExports() []string {
	return append(StreamAPI(subject.AuditStream), StreamAPI(subject.CheckpointStream)...)
}

// prefixed maps a $JS.API subject to AuditAPIPrefix.
func prefixed(s string) string { return AuditAPIPrefix + strings.TrimPrefix(s, "$JS.API") }

// AuditAccountPermissions returns each identity's permissions when the
// audit streams live in the AUDIT account: Permissions, except that the
// gateway reaches the audit streams' API only under AuditAPIPrefix, the
// auditor (in AUDIT) reads them with the plain API, and AuditOperator (in
// AUDIT) creates them.
func AuditAccountPermissions(fed *federation.Federation) map[string]Permission {
	out := Permissions(fed)
	audit := map[string]bool{}
	for _, s := range auditExports() {
		audit[s] = true
	}
	// The gateway and the consent service (its own log) write audit logs.
	writers := map[string]bool{fed.ID("gateway").String(): true, fed.ID("consent").String(): true}
	for id := range writers {
		p := out[id]
		var pub []string
		for _, s := range p.PublishAllow {
			if audit[s] {
				s = prefixed(s)
			}
			pub = append(pub, s)
		}
		p.PublishAllow = pub
		out[id] = p
	}
	// Every other FED user: nothing of AUDIT (the allow-lists already say
	// so; this keeps it if they grow).
	for id, p := range out {
		if !writers[id] {
			p.PublishDeny = append(p.PublishDeny, AuditAPIPrefix+".>", subject.AuditPrefix+".>", subject.CheckpointPrefix+".>")
			out[id] = p
		}
	}
	out[fed.ID(AuditOperator).String()] = Permission{
		PublishAllow:   []string{"$JS.API.>"},
		SubscribeAllow: []string{subject.Inbox(AuditOperator) + ".>"},
	}
	return out
}

// auditAccountUsers are the users of AUDIT.
func auditAccountUsers(fed *federation.Federation) map[string]bool {
	return map[string]bool{fed.ID("auditor").String(): true, fed.ID(AuditOperator).String(): true}
}

// Render returns the server configuration text.
func Render(c Config) (string, error) {
	if c.Federation == nil {
		return "", fmt.Errorf("natsconf: no federation")
	}
	files := c.CertFile != "" || c.KeyFile != "" || c.CAFile != ""
	switch {
	case c.WorkloadAPI && files:
		return "", fmt.Errorf("natsconf: the SVID comes either from the Workload API or from files, not both")
	case !c.WorkloadAPI && (c.CertFile == "" || c.KeyFile == "" || c.CAFile == ""):
		return "", fmt.Errorf("natsconf: cert_file, key_file and ca_file are required (TLS is mandatory)")
	}
	if c.ServerName == "" {
		c.ServerName = "jisr-nats"
	}
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = 4222
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 1 << 20
	}
	if c.SyncInterval == "" {
		c.SyncInterval = "1s"
	}
	if c.MaxPending == 0 {
		c.MaxPending = 128 << 20
	}
	if c.WriteDeadline == "" {
		c.WriteDeadline = "10s"
	}
	if c.Cluster != nil {
		cl := *c.Cluster
		if cl.Name == "" {
			cl.Name = DefaultClusterName
		}
		if cl.Host == "" {
			cl.Host = c.Host
		}
		if cl.Port == 0 {
			cl.Port = 6222
		}
		if cl.Domain == "" {
			cl.Domain = DefaultDomain
		}
		if c.StoreDir == "" {
			return "", fmt.Errorf("natsconf: a hub node needs a JetStream store directory")
		}
		if len(cl.Routes) == 0 {
			return "", fmt.Errorf("natsconf: a hub node needs the route URLs of the hub's nodes")
		}
		for _, r := range cl.Routes {
			if !strings.HasPrefix(r, "tls://") && !strings.HasPrefix(r, "nats-route://") {
				return "", fmt.Errorf("natsconf: route %q: want tls://host:port", r)
			}
		}
		c.Cluster = &cl
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# NATS server configuration for the jisr federation %q.\n", c.Federation.TrustDomain.Name())
	w("# Generated by `jisr nats-config` from the federation file: do not edit, regenerate.\n\n")
	w("server_name: %s\n", q(c.ServerName))
	w("host: %s\nport: %d\n", q(c.Host), c.Port)
	if c.HTTPPort != 0 {
		w("http: %s\n", q(c.Host+":"+strconv.Itoa(c.HTTPPort)))
	}
	w("max_payload: %d\n", c.MaxPayload)
	w("# Slow consumers: what the server holds for one client, and how long one write may take.\n")
	w("max_pending: %d\nwrite_deadline: %s\n", c.MaxPending, q(c.WriteDeadline))
	w("\n")
	w("# Mutual TLS is mandatory: the client certificate's SPIFFE URI SAN is the user name.\n")
	w("# `jisr nats-server` also closes each connection when its SVID expires; a stock\n")
	w("# nats-server checks a certificate's validity only when the client connects.\n")
	if c.WorkloadAPI {
		w("# The server's SVID and the trust bundle come from the SPIFFE Workload API\n")
		w("# (SPIFFE_ENDPOINT_SOCKET), read at every handshake by `jisr nats-server`;\n")
		w("# a stock nats-server cannot run this block (it needs files: see docs/spire.md).\n")
		w("tls {\n  verify_and_map: true\n  timeout: 2\n}\n\n")
	} else {
		w("tls {\n  cert_file: %s\n  key_file: %s\n  ca_file: %s\n  verify_and_map: true\n  timeout: 2\n}\n\n",
			q(c.CertFile), q(c.KeyFile), q(c.CAFile))
	}
	if c.StoreDir != "" {
		w("jetstream {\n  store_dir: %s\n  sync_interval: %s\n", q(c.StoreDir), q(c.SyncInterval))
		if c.Cluster != nil {
			w("  domain: %s\n", q(c.Cluster.Domain))
		}
		w("}\n\n")
	}
	if cl := c.Cluster; cl != nil {
		nats := c.Federation.ID("nats").String()
		w("# One node of the hub. Routes are mutual TLS as well, and only the server\n")
		w("# identity %s may route: a member's SVID is refused at the\n", nats)
		w("# cluster port. Streams and buckets are replicated across the nodes (jisr nats init --replicas 3).\n")
		w("cluster {\n  name: %s\n  host: %s\n  port: %d\n", q(cl.Name), q(cl.Host), cl.Port)
		w("  routes: %s\n", list(cl.Routes))
		w("  # Clients are given the hub's addresses; the nodes do not advertise their own\n")
		w("  # (a ministry reaches the hub by the way its operators chose, never around it).\n")
		w("  no_advertise: true\n")
		if c.WorkloadAPI {
			// `jisr nats-server` sets the routes' TLS from the Workload API
			// too: the node's SVID on both sides of a route, SPIRE's bundle.
			w("  tls {\n    verify_and_map: true\n    timeout: 2\n  }\n")
		} else {
			w("  tls {\n    cert_file: %s\n    key_file: %s\n    ca_file: %s\n    verify_and_map: true\n    timeout: 2\n  }\n",
				q(c.CertFile), q(c.KeyFile), q(c.CAFile))
		}
		w("  authorization {\n    user: %s\n    timeout: 2\n  }\n}\n\n", q(nats))
	}
	w("# One user per SPIFFE ID. Permissions are allow-lists: anything not listed is denied.\n")
	if !c.AuditAccount {
		w("authorization {\n  # Clients that connect but never authenticate are dropped quickly.\n  timeout: 2\n  users = [\n")
		users(w, Permissions(c.Federation), nil)
		w("  ]\n}\n")
		return b.String(), nil
	}
	perms := AuditAccountPermissions(c.Federation)
	inAudit := auditAccountUsers(c.Federation)
	js := ""
	if c.StoreDir != "" {
		js = "    jetstream: enabled\n"
	}
	w("# The audit streams live in AUDIT: only the gateway (in FED) writes them, through\n")
	w("# AUDIT's service exports; only AUDIT's users (auditor, audit-operator) read them\n")
	w("# with the full API. FED sees a read-only part of AUDIT's JetStream API under %s.\n", AuditAPIPrefix)
	w("authorization {\n  timeout: 2\n}\n")
	w("accounts {\n  %s {\n%s    users = [\n", FedAccount, js)
	users(w, perms, func(id string) bool { return !inAudit[id] })
	w("    ]\n    imports = [\n")
	for _, s := range []string{subject.AuditPrefix + ".>", subject.CheckpointPrefix + ".>"} {
		w("      {service: {account: %s, subject: %s}}\n", AuditAccount, q(s))
	}
	for _, s := range auditExports() {
		w("      {service: {account: %s, subject: %s}, to: %s}\n", AuditAccount, q(s), q(prefixed(s)))
	}
	w("    ]\n  }\n  %s {\n%s    users = [\n", AuditAccount, js)
	users(w, perms, func(id string) bool { return inAudit[id] })
	w("    ]\n    exports = [\n")
	for _, s := range []string{subject.AuditPrefix + ".>", subject.CheckpointPrefix + ".>"} {
		w("      {service: %s, accounts: [%s]}\n", q(s), FedAccount)
	}
	for _, s := range auditExports() {
		// A pull request or a direct get answers with more than one message.
		w("      {service: %s, accounts: [%s], response_type: stream}\n", q(s), FedAccount)
	}
	w("    ]\n  }\n}\n")
	return b.String(), nil
}

// users writes the users of perms that keep selects (all if keep is nil).
func users(w func(string, ...any), perms map[string]Permission, keep func(string) bool) {
	ids := make([]string, 0, len(perms))
	for id := range perms {
		if keep == nil || keep(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := perms[id]
		w("    {\n      user: %s\n      permissions: {\n", q(id))
		w("        publish: {\n          allow: %s\n", list(p.PublishAllow))
		if len(p.PublishDeny) > 0 {
			w("          deny: %s\n", list(p.PublishDeny))
		}
		w("        }\n        subscribe: {\n          allow: %s\n", list(p.SubscribeAllow))
		if len(p.SubscribeDeny) > 0 {
			w("          deny: %s\n", list(p.SubscribeDeny))
		}
		w("        }\n")
		if p.MaxResponses > 0 {
			w("        allow_responses: {max: %d}\n", p.MaxResponses)
		}
		w("      }\n    }\n")
	}
}

func list(ss []string) string {
	if len(ss) == 0 {
		// An empty allow-list must still deny everything; a subject no client can use does that.
		return `["_jisr_nothing_"]`
	}
	qs := make([]string, len(ss))
	for i, s := range ss {
		qs[i] = q(s)
	}
	return "[" + strings.Join(qs, ", ") + "]"
}

func q(s string) string { return strconv.Quote(s) }
