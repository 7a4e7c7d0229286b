package process

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/services/adapter"
	"github.com/jisr-bus/jisr/services/adapter/node"
)

type AdapterOptions struct {
	Member  string
	Listen  string
	Backend string
	HTTP    string
	// NATSConns is how many NATS connections the adapter uses (0:
	// DefaultNATSConns; see adapter.Config.MoreConns).
	NATSConns int
	// EventSink is the backend's EventSink address, when the member
	// receives events (default: the backend's address; "off": none).
	EventSink    string
	EventAckWait time.Duration
	// EventInFlight is how many events it delivers at once, at most one
	// per citizen (0: adapter.DefaultEventInFlight).
	EventInFlight int
	// NATSURL, when set, is the adapter's own way to the bus (default --nats).
	NATSURL string
	// GovernancePub is the governance public key the federation versions
	// the adapter applies without a restart are verified with (default
	// <certs>/governance/governance.pub).
	GovernancePub string
}

// DevPort returns the dev port offset of a member: its position in the
// federation file, from 1 (civil-registry 1, tax 2, cnss 3, health 4).
func DevPort(fed *federation.Federation, member string, base int) string {
	for i, m := range fed.Members {
		if m.Name == member {
			return fmt.Sprintf("127.0.0.1:%d", base+i+1)
		}
	}
	return ""
}

// AdapterNode is a running adapter (services/adapter/node).
type AdapterNode = node.Node

// StartAdapter builds the adapter node's Config from the flags (the dev
// ports by default) and the member's NATS connection and SVID.
func StartAdapter(ctx context.Context, g *Env, o AdapterOptions, extra ...grpc.ServerOption) (*AdapterNode, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	if _, err := fed.Member(o.Member); err != nil {
		return nil, UsageError{fmt.Errorf("--member %q is not in %s", o.Member, g.FederationPath)}
	}
	if o.Listen == "" {
		o.Listen = DevPort(fed, o.Member, 7000)
	}
	if o.Backend == "" {
		// A consumer-only member too: a later federation version may give
		// it a service, and its provider side then starts without a restart.
		o.Backend = DevPort(fed, o.Member, 7100)
	}
	switch {
	case o.EventSink == "off":
		o.EventSink = "" // the adapter starts the delivery when a rule delivers to the member, now or in a later federation version
	case o.EventSink == "" && o.Backend != "":
		o.EventSink = o.Backend
	case o.EventSink == "":
		o.EventSink = DevPort(fed, o.Member, 7100)
	}
	keyer, err := g.Keyer()
	if err != nil {
		return nil, err
	}
	sets, err := g.DescriptorSets()
	if err != nil {
		return nil, err
	}
	pubPath := o.GovernancePub
	if pubPath == "" {
		pubPath = federation.GovernancePubPath(g.CertsDir)
	}
	pub, err := federation.LoadGovernancePub(pubPath)
	if err != nil {
		return nil, fmt.Errorf("the governance public key that verifies federation versions (--governance-pub; jisr certs init writes a dev one): %w", err)
	}
	url := o.NATSURL
	if url == "" {
		url = g.NATSURL
	}
	nc, src, err := g.ConnectURL(ctx, url, o.Member)
	if err != nil {
		return nil, err
	}
	more, err := queryConns(ctx, g, o.Member, o.NATSConns, fed.ID("nats"), src)
	if err != nil {
		nc.Close()
		src.Close()
		return nil, err
	}
	cfg := adapter.Config{Member: o.Member, Federation: fed, DescriptorSets: sets, Keyer: keyer, Conn: nc, MoreConns: more, Log: g.Log, Backend: o.Backend,
		ServerOptions: g.GRPCServerOptions("adapter", o.Member), DialOptions: g.GRPCDialOptions("adapter", o.Member),
		Registerer: g.Registry(), EventSink: o.EventSink, EventAckWait: o.EventAckWait, EventInFlight: o.EventInFlight}
	return node.Start(ctx, node.Config{Adapter: cfg, Source: src, Listen: o.Listen}, node.WithServerOptions(extra...),
		node.WithTracerProvider(g.TracerProviderFor("adapter", o.Member, "")), node.WithFederationWatch(pub))
}

// BackendOf authorizes the member's own workloads (adapter.WorkloadsOf).
var BackendOf = adapter.WorkloadsOf
