// Package natsconf renders the NATS server configuration of a federation.
//
// Invariant: every user of the server is a SPIFFE ID from the federation
// (mapped from the client certificate's URI SAN with verify_and_map), and
// every user's permissions are an allow-list derived from the federation —
// anything not listed is denied. The embedded server of `jisr dev` loads the
// very text Render returns, so `jisr nats-config` prints what really runs.
package natsconf

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
)

// Stream and bucket names of the federation's own state. Their subjects and
// JetStream API subjects appear in the permissions below.
const (
	AuditStream      = "JISR_AUDIT"
	CheckpointStream = "JISR_CHECKPOINTS"
	RevocationBucket = "jisr_revocations"
	UsageBucket      = "jisr_usage"
	ConsentBucket    = "jisr_consents"
)

// ConsentAPI prefixes the consent service's NATS API (grant, list, revoke):
// only the gateway publishes there, only the consent identity subscribes
// (h5-tokens: the signing key lives with the consent service alone).
const ConsentAPI = "jisr.consent"

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
	StoreDir   string // JetStream store directory
	MaxPayload int    // bytes; default 1 MiB
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
}

// Permission is one user's allow/deny lists.
type Permission struct {
	PublishAllow, PublishDeny     []string
	SubscribeAllow, SubscribeDeny []string
	AllowResponses                bool
}

// Permissions returns each identity's permissions, keyed by SPIFFE ID.
func Permissions(fed *federation.Federation) map[string]Permission {
	out := map[string]Permission{}
	for _, m := range fed.Members {
		out[m.ID.String()] = Permission{
			PublishAllow:   []string{subject.ConsumerQueries(m.Name)},
			SubscribeAllow: []string{subject.ProviderQueries(m.Name), subject.Inbox(m.Name) + ".>"},
			AllowResponses: true, // a provider replies to the gateway's request
		}
	}
	// Deletes and purges of the audit streams are refused to everyone, the
	// gateway included: a record, once acknowledged, stays (see ARCHITECTURE
	// "Audit"). The streams also deny them themselves (deny_delete,
	// deny_purge); updates are refused too, because an update could shorten
	// the retention or the limits and so remove records. The gateway may
	// create the streams (first start) but never change them.
	var auditTamper []string
	for _, s := range []string{AuditStream, CheckpointStream} {
		auditTamper = append(auditTamper,
			"$JS.API.STREAM.DELETE."+s,
			"$JS.API.STREAM.PURGE."+s,
			"$JS.API.STREAM.MSG.DELETE."+s,
			"$JS.API.STREAM.UPDATE."+s,
			"$JS.API.STREAM.PEER.REMOVE."+s,
		)
	}
	auditTamper = append(auditTamper, "$JS.API.ACCOUNT.PURGE.>")
	out[fed.ID("gateway").String()] = Permission{
		PublishAllow: []string{
			subject.ProviderPrefix + ".>",
			subject.AuditPrefix + ".>",
			subject.CheckpointPrefix + ".>",
			"$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>",
			ConsentAPI + ".>", // the citizen-facing consent API asks the consent service
		},
		PublishDeny:    auditTamper,
		SubscribeAllow: []string{subject.AllQueries(), subject.Inbox("gateway") + ".>"},
		AllowResponses: true, // the gateway answers the consumer's request
	}
	kvAPI := func(bucket string) []string {
		s := "KV_" + bucket
		return []string{
			"$KV." + bucket + ".>",
			"$JS.API.STREAM.INFO." + s,
			"$JS.API.DIRECT.GET." + s, "$JS.API.DIRECT.GET." + s + ".>",
			"$JS.API.STREAM.MSG.GET." + s,
			"$JS.API.CONSUMER.CREATE." + s, "$JS.API.CONSUMER.CREATE." + s + ".>",
			"$JS.API.CONSUMER.DELETE." + s + ".>",
		}
	}
	var consentPub []string
	for _, b := range []string{RevocationBucket, ConsentBucket, UsageBucket} {
		consentPub = append(consentPub, kvAPI(b)...)
	}
	consentPub = append(consentPub, "$JS.API.INFO", "$JS.FC.>", "$JS.ACK.KV_"+ConsentBucket+".>", "$JS.ACK.KV_"+RevocationBucket+".>")
	out[fed.ID("consent").String()] = Permission{
		PublishAllow:   consentPub,
		SubscribeAllow: []string{subject.Inbox("consent") + ".>", ConsentAPI + ".>"},
		AllowResponses: true, // answers the gateway's consent API requests
	}
	readStream := func(s string) []string {
		return []string{
			"$JS.API.STREAM.INFO." + s,
			"$JS.API.DIRECT.GET." + s, "$JS.API.DIRECT.GET." + s + ".>",
			"$JS.API.STREAM.MSG.GET." + s,
			"$JS.API.CONSUMER.CREATE." + s, "$JS.API.CONSUMER.CREATE." + s + ".>",
			"$JS.API.CONSUMER.MSG.NEXT." + s + ".>",
			"$JS.API.CONSUMER.DELETE." + s + ".>",
			"$JS.API.CONSUMER.INFO." + s + ".>",
			"$JS.ACK." + s + ".>",
		}
	}
	out[fed.ID("auditor").String()] = Permission{
		PublishAllow:   append(append([]string{"$JS.API.INFO", "$JS.FC.>"}, readStream(AuditStream)...), readStream(CheckpointStream)...),
		SubscribeAllow: []string{subject.Inbox("auditor") + ".>"},
	}
	return out
}

// Render returns the server configuration text.
func Render(c Config) (string, error) {
	if c.Federation == nil {
		return "", fmt.Errorf("natsconf: no federation")
	}
	if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
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
	w("tls {\n  cert_file: %s\n  key_file: %s\n  ca_file: %s\n  verify_and_map: true\n  timeout: 2\n}\n\n",
		q(c.CertFile), q(c.KeyFile), q(c.CAFile))
	if c.StoreDir != "" {
		w("jetstream {\n  store_dir: %s\n  sync_interval: %s\n}\n\n", q(c.StoreDir), q(c.SyncInterval))
	}
	w("# One user per SPIFFE ID. Permissions are allow-lists: anything not listed is denied.\n")
	w("authorization {\n  # Clients that connect but never authenticate are dropped quickly.\n  timeout: 2\n  users = [\n")
	perms := Permissions(c.Federation)
	ids := make([]string, 0, len(perms))
	for id := range perms {
		ids = append(ids, id)
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
		if p.AllowResponses {
			w("        allow_responses: true\n")
		}
		w("      }\n    }\n")
	}
	w("  ]\n}\n")
	return b.String(), nil
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
